"""GMVAE against scikit-learn's KMeans and GaussianMixture (raw features and PCA-50) on the
same data with the same K. Labels only score the clusterings.

    python -m benchmarks.baselines --out benchmarks/results/baselines [--fashion-epochs 10]

Writes results.csv, results.md and run.json (command, commit, machine) into --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from benchmarks.provenance import benchmark_record, command_line
from gmvae import GMVAE
from gmvae.data.datasets import FASHION_MNIST, load_idx_dataset
from gmvae.run.metrics import clustering_scores


def datasets(fashion: bool) -> list[dict]:
    """Each: name, K, train/test arrays (tables raw; images (N, H, W) in [0, 1])."""
    out = []
    x, y = load_digits(return_X_y=True)
    out.append({"name": "digits", "k": 10, "x": (x / 16).reshape(-1, 8, 8), "y": y})
    x, y = load_wine(return_X_y=True)
    out.append({"name": "wine", "k": 3, "x": x, "y": y})
    x, y = load_breast_cancer(return_X_y=True)
    out.append({"name": "breast-cancer", "k": 2, "x": x, "y": y})
    if fashion:
        data = load_idx_dataset(FASHION_MNIST)
        out.append({
            "name": "fashion-mnist", "k": 10,
            "x": data.x_train.reshape(-1, 28, 28), "y": data.y_train,
            "x_test": data.x_test.reshape(-1, 28, 28), "y_test": data.y_test,
        })  # fmt: skip
    return out


def baseline_features(x: np.ndarray, x_test: np.ndarray, pca: bool):
    """Flatten; standardise tables (images keep [0, 1]); optionally PCA-50."""
    flat, flat_test = x.reshape(len(x), -1), x_test.reshape(len(x_test), -1)
    if x.ndim == 2:
        scaler = StandardScaler().fit(flat)
        flat, flat_test = scaler.transform(flat), scaler.transform(flat_test)
    if pca and flat.shape[1] > 50:
        reducer = PCA(50, random_state=0).fit(flat)
        flat, flat_test = reducer.transform(flat), reducer.transform(flat_test)
    return flat, flat_test


def run(args: argparse.Namespace) -> list[dict]:
    rows = []
    for data in datasets(args.fashion_epochs > 0):
        x, y, k = data["x"], data["y"], data["k"]
        x_test, y_test = data.get("x_test", x), data.get("y_test", y)
        epochs = args.fashion_epochs if data["name"] == "fashion-mnist" else args.epochs
        methods = {}
        for pca in (False, True):
            suffix = " (PCA-50)" if pca else " (raw)"
            if pca and x.reshape(len(x), -1).shape[1] <= 50:
                continue
            diag = x.reshape(len(x), -1).shape[1] > 100 and not pca
            methods["KMeans" + suffix] = (pca, KMeans(k, n_init=10, random_state=0))
            methods["GaussianMixture" + suffix] = (pca, GaussianMixture(
                k, covariance_type="diag" if diag else "full", random_state=0, reg_covar=1e-4
            ))  # fmt: skip
        methods[f"GMVAE ({epochs} epochs)"] = (None, GMVAE(k, epochs=epochs, random_state=0))
        for name, (pca, model) in methods.items():
            start = time.perf_counter()
            if pca is None:
                model.fit(x)
                clusters = model.predict(x_test)
            else:
                features, features_test = baseline_features(x, x_test, pca)
                model.fit(features)
                clusters = model.predict(features_test)
            seconds = time.perf_counter() - start
            scores = clustering_scores(y_test, clusters, k)
            row = {"dataset": data["name"], "k": k, "method": name, **scores, "seconds": seconds}
            rows.append(row)
            print(
                f"{data['name']:<14} {name:<28} ACC {scores['acc']:5.1f}  NMI "
                f"{scores['nmi']:5.1f}  ARI {scores['ari']:5.1f}  {seconds:7.1f}s",
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=50, help="GMVAE epochs on small data")
    parser.add_argument("--fashion-epochs", type=int, default=10, help="0 skips Fashion-MNIST")
    args = parser.parse_args()
    rows = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "| dataset | K | method | ACC | NMI | ARI | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['dataset']} | {r['k']} | {r['method']} | {r['acc']:.1f} | {r['nmi']:.1f} | "
        f"{r['ari']:.1f} | {r['seconds']:.1f} |"
        for r in rows
    ]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    record = benchmark_record(command_line("benchmarks.baselines"))
    (args.out / "run.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
