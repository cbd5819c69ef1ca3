"""A few labels on tables: the semi-supervised GMVAE estimator against scikit-learn's methods on
the same labelled draw, on the suite's tables, once per seed.

    python -m benchmarks.semi_supervised_tables --out benchmarks/results/semi-supervised/tables-5 \
        [--labels-per-class 5] [--seeds 0-4] [--datasets wine,iris] \
        [--settings '{"objective": {"w_labelled": 5}}']

--datasets also takes a table of your own as FILE:COLUMN, as benchmarks.suite does.

Per seed: N labels per class drawn with the seed (gmvae.data.labels.draw_per_class), the rest
unlabelled; `GMVAE(n_clusters=K, semi_supervised=True, random_state=seed).fit(X, y)` on the table
as given (--settings: the estimator's `settings`, for measuring a remedy), and on its
StandardScaler'd features LogisticRegression on the labelled rows alone,
LabelSpreading (kNN kernel, 7 neighbours) and SelfTrainingClassifier around LogisticRegression.
Scored by accuracy on the unlabelled rows (the predicted class must be the class). Writes
rows.csv (a row per data set, seed and method, with whether the GMVAE is below any method on that
seed and, on the GMVAE's row, whether it started from the labelled mixture or the classifier),
summary.csv / summary.md (median, min and max) and run.json (command, commit, machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.semi_supervised import LabelSpreading, SelfTrainingClassifier

from benchmarks.clustering import write_csv
from benchmarks.provenance import benchmark_record, command_line
from benchmarks.suite import DATASETS, NEEDS, LabelledData, load
from gmvae import GMVAE
from gmvae.data.labels import draw_per_class
from gmvae.errors import GMVAEError
from gmvae.run.settings import parse_int_range

TABLES = ("wine", "breast-cancer", "iris", "penguins", "crabs", "cars")


def run_seed(
    data: LabelledData, per_class: int, seed: int, settings: dict | None = None
) -> list[dict]:
    """Every method on one labelled draw: a row each, accuracy on the unlabelled rows."""
    partial = draw_per_class(data.y, per_class, seed)
    labelled, unlabelled = partial >= 0, partial < 0
    features = StandardScaler().fit_transform(data.x)

    def logistic() -> LogisticRegression:
        return LogisticRegression(max_iter=1000)

    gmvae = GMVAE(n_clusters=data.k, random_state=seed, semi_supervised=True, settings=settings)
    predictions = {
        "GMVAE": lambda: gmvae.fit(data.x, partial).predict(data.x),
        "LogisticRegression (labelled rows)": lambda: (
            logistic().fit(features[labelled], data.y[labelled]).predict(features)
        ),
        "LabelSpreading": lambda: (
            LabelSpreading(kernel="knn", n_neighbors=7).fit(features, partial).predict(features)
        ),
        "SelfTraining (LogisticRegression)": lambda: (
            SelfTrainingClassifier(logistic()).fit(features, partial).predict(features)
        ),
    }
    accuracy = {
        name: float(100 * np.mean(predict()[unlabelled] == data.y[unlabelled]))
        for name, predict in predictions.items()
    }
    below = any(accuracy["GMVAE"] < value for value in accuracy.values())
    # which start the GMVAE trained from (gmvae.train.labelled_start)
    classifier_start = gmvae.history_[0].get("classifier_start")
    start = {1.0: "classifier", 0.0: "mixture"}.get(classifier_start, "")
    return [
        {
            "dataset": data.name,
            "seed": seed,
            "method": name,
            "accuracy": value,
            "gmvae_below_a_method": below,
            "start": start if name == "GMVAE" else "",
        }  # fmt: skip
        for name, value in accuracy.items()
    ]


def summarise(rows: list[dict]) -> list[dict]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["method"]), []).append(row)
    return [
        {
            "dataset": dataset,
            "method": method,
            "seeds": len(group),
            "median": statistics.median(r["accuracy"] for r in group),
            "min": min(r["accuracy"] for r in group),
            "max": max(r["accuracy"] for r in group),
            "seeds_gmvae_below": sum(r["gmvae_below_a_method"] for r in group),
        }  # fmt: skip
        for (dataset, method), group in groups.items()
    ]


def markdown(summary: list[dict]) -> str:
    lines = ["| data set | method | accuracy median (min-max) | seeds with the GMVAE below |",
             "| --- | --- | --- | --- |"]  # fmt: skip
    for s in summary:
        below = str(s["seeds_gmvae_below"]) if s["method"] == "GMVAE" else ""
        lines.append(f"| {s['dataset']} | {s['method']} | {s['median']:.1f} ({s['min']:.1f}-"
                     f"{s['max']:.1f}) | {below} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--labels-per-class", type=int, default=5)
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--datasets", default=",".join(TABLES))
    parser.add_argument("--settings", type=json.loads, help="JSON: the GMVAE's settings")
    args = parser.parse_args()
    names = args.datasets.split(",")
    not_tables = sorted(set(names) & set(DATASETS) - set(TABLES))
    if not_tables:
        raise SystemExit(f"{not_tables} are not tables; the suite's tables: {', '.join(TABLES)}")
    try:
        tables = [load(name) for name in names]
    except ImportError as err:
        raise SystemExit(f"{err}: the suite's data sets need {NEEDS}") from None
    except GMVAEError as err:
        raise SystemExit(str(err)) from None
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for data in tables:
        for seed in parse_int_range(args.seeds, "--seeds"):
            rows += run_seed(data, args.labels_per_class, seed, args.settings)
            write_csv(args.out / "rows.csv", rows)  # after every seed: nothing lost
    summary = summarise(rows)
    write_csv(args.out / "summary.csv", summary)
    (args.out / "summary.md").write_text(markdown(summary))
    record = benchmark_record(command_line("benchmarks.semi_supervised_tables"))
    (args.out / "run.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
