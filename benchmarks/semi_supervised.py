"""A few labels: the semi-supervised GMVAE against scikit-learn's semi-supervised methods, on
the same labelled draw, once per seed.

    python -m benchmarks.semi_supervised --dataset mnist --labels-per-class 10 --seeds 0-4 \
        --out benchmarks/results/semi-supervised/mnist-10 [any gmvae train flag]

Per seed: `gmvae train --labels-per-class N` (a run folder OUT/seed-N, kept as
benchmarks/clustering.py keeps it), then on the labelled draw that run saved (labelled.csv):
LabelSpreading (kNN kernel) and SelfTrainingClassifier around LogisticRegression, both on PCA-50
of every training image, and LogisticRegression on the labelled images alone. Scored on the
test set by classification accuracy (no matching: the predicted class must be the class), and
by ACC / NMI / ARI. With --labelled-classes (say 0-4), labels of the other classes are dropped
and their clusters are scored apart: "unseen ACC" is the Hungarian-matched accuracy of the
unlabelled classes' test images over the clusters no labelled class claims, and "own clusters"
counts the classes whose main cluster (the one holding most of its test images) is no other
class's main cluster: all K when every unseen class has a cluster of its own and no labelled
class shares one.

Writes OUT/seeds.csv (a row per seed and method), OUT/summary.csv and OUT/summary.md (median,
min and max per method) and OUT/run.json (command, commit, machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.semi_supervised import LabelSpreading, SelfTrainingClassifier

from benchmarks.clustering import run_seed, write_csv
from benchmarks.provenance import benchmark_record, command_line
from gmvae.cli import build_parser
from gmvae.data.labels import read_labelled
from gmvae.run.assembly import load_data
from gmvae.run.metrics import clustering_scores, contingency
from gmvae.run.settings import DataConfig, parse_int_range

COLUMNS = ("accuracy", "acc", "nmi", "ari", "unseen_acc", "own_clusters", "seconds")


def unseen_accuracy(table: np.ndarray, seen: list[int]) -> float:
    """Of the test images of the classes without labels, the percentage in the cluster
    matched to their class, matching only clusters that no labelled class has as its own."""
    unseen = [c for c in range(table.shape[1]) if c not in seen]
    free = [k for k in range(table.shape[0]) if k not in seen]
    part = table[np.ix_(free, unseen)]
    rows, cols = linear_sum_assignment(part, maximize=True)
    return 100 * float(part[rows, cols].sum() / table[:, unseen].sum())


def own_clusters(table: np.ndarray) -> int:
    """How many classes have a main cluster of their own: table (K clusters, C classes) of
    test counts; a class's main cluster holds most of its images, and it is the class's own
    when it is no other class's main cluster."""
    main = table.argmax(0)  # (C,)
    return int(sum((main == m).sum() == 1 for m in main))


def scores(y_test: np.ndarray, predicted: np.ndarray, k: int, seen: list[int]) -> dict:
    table = contingency(predicted, y_test, k)
    row = {"accuracy": 100 * float((predicted == y_test).mean())}
    row.update(clustering_scores(y_test, predicted, k))
    if len(seen) < k:
        row.update(unseen_acc=unseen_accuracy(table, seen), own_clusters=own_clusters(table))
    return row


def baselines(folder: Path, k: int) -> list[dict]:
    """The scikit-learn methods on the data and the labelled draw of the GMVAE run in `folder`."""
    data = load_data(DataConfig(**json.loads((folder / "config.json").read_text())["data"]))
    labels = read_labelled(folder / "labelled.csv", len(data.x_train))
    seen = sorted(set(labels[labels >= 0].tolist()))
    start = time.perf_counter()
    pca = PCA(50, random_state=0).fit(data.x_train)
    features, features_test = pca.transform(data.x_train), pca.transform(data.x_test)
    pca_seconds = time.perf_counter() - start
    labelled = labels >= 0
    methods = {
        "LabelSpreading (kNN, PCA-50)": (
            LabelSpreading(kernel="knn", n_neighbors=10, max_iter=100),
            features,
            labels,
        ),
        "SelfTraining(LogisticRegression) (PCA-50)": (
            SelfTrainingClassifier(LogisticRegression(max_iter=1000)),
            features,
            labels,
        ),
        "LogisticRegression, labelled images only": (
            LogisticRegression(max_iter=1000),
            data.x_train[labelled],
            labels[labelled],
        ),
    }
    rows = []
    for name, (model, x, y) in methods.items():
        start = time.perf_counter()
        model.fit(x, y)
        pca_used = x is features
        predicted = model.predict(features_test if pca_used else data.x_test)
        seconds = time.perf_counter() - start + (pca_seconds if pca_used else 0.0)
        rows.append({"method": name, **scores(data.y_test, predicted, k, seen), "seconds": seconds})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist", help="a named dataset")
    parser.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,3,7")
    parser.add_argument("--out", type=Path, required=True)
    args, settings = parser.parse_known_args()  # the rest are `gmvae train` flags
    args.settings = settings
    args.preset, args.keep_all = "default", False
    parsed = build_parser().parse_args(["train", *settings])  # a wrong flag fails before any run
    if not any(k in vars(parsed) for k in ("data.labels_per_class", "data.labelled_classes")):
        sys.exit("error: give --labels-per-class N (and optionally --labelled-classes)")
    k = vars(parsed).get("model.n_clusters", 10)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in parse_int_range(args.seeds, "--seeds"):
        run_seed(args, seed)
        folder = args.out / f"seed-{seed}"
        results = json.loads((folder / "results.json").read_text())
        n_train = json.loads((folder / "config.json").read_text())["n_train"]
        labels = read_labelled(folder / "labelled.csv", n_train)
        seen = sorted(set(labels[labels >= 0].tolist()))
        test = results["test"]
        gmvae = {"method": "GMVAE (default preset)", **{c: test[c] for c in COLUMNS[:4]}}
        table = np.array(results["contingency"])
        if len(seen) < k:
            gmvae.update(unseen_acc=unseen_accuracy(table, seen), own_clusters=own_clusters(table))
        gmvae["seconds"] = results["wall_seconds"]
        for row in [gmvae, *baselines(folder, k)]:
            rows.append({"seed": seed, **row})
            print(
                f"seed {seed}  {row['method']:<44} accuracy {row['accuracy']:6.2f}  "
                f"ACC {row['acc']:6.2f}  {row['seconds']:6.0f}s",
                flush=True,
            )
    columns = [c for c in COLUMNS if c in rows[0]]
    write_csv(args.out / "seeds.csv", [{c: r.get(c) for c in ("seed", "method", *columns)}
                                       for r in rows])  # fmt: skip
    summary = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        for name, fn in (("median", statistics.median), ("min", min), ("max", max)):
            summary.append(
                {"method": method, "statistic": name,
                 **{c: round(float(fn(r[c] for r in mine)), 2) for c in columns}}
            )  # fmt: skip
    write_csv(args.out / "summary.csv", summary)
    command = command_line("benchmarks.semi_supervised")
    header = " | ".join(c.replace("_", " ") for c in columns)
    lines = [
        f"`{command}`",
        "",
        f"| method | {header} |",
        "|---|" + "---|" * len(columns),
    ]
    for method in dict.fromkeys(r["method"] for r in rows):
        stats = {s["statistic"]: s for s in summary if s["method"] == method}
        cells = [
            f"{stats['median'][c]:.2f} ({stats['min'][c]:.2f}-{stats['max'][c]:.2f})"
            for c in columns
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", f"median (min-max) over seeds {args.seeds}; seconds are wall seconds"]
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    (args.out / "run.json").write_text(json.dumps(benchmark_record(command), indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
