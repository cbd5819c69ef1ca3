"""Clusters of unequal sizes: MNIST's training images with class c cut to
floor(m * (1 - 0.75 * c / 9)) images (m: the smallest class's count), so digit 0 keeps 4 times as
many as digit 9, clustered by `gmvae train` over seeds (benchmarks.clustering), each run scored on
the same draw, and the proportions p(y) it learned set beside the true ones.

    python -m benchmarks.unequal --out benchmarks/results/unequal/mnist-default --seeds 0-4 \
        [any gmvae train flag, e.g. --proportions learned]

Writes OUT/mnist-unequal.npz (the draw; deleted at the end), the clustering benchmark's files
and OUT/proportions.csv: per seed, ACC and the largest gap between a class's share and the p(y)
of the cluster matched to it (p(y) summed over the cluster's components), and between the share and
the cluster's share of the images (Hungarian matching of the contingency table; labels only
score).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.clustering import write_csv
from gmvae.data.datasets import open_dataset
from gmvae.run.settings import parse_int_range

SPREAD = 4  # the largest class has this many times the smallest's images


def draw(out: Path) -> np.ndarray:
    """Writes the unequal draw to OUT/mnist-unequal.npz; returns its class shares (10,)."""
    data = open_dataset("mnist", None, None, (0, 0, 0), 0)
    x, y = np.asarray(data.x_train), np.asarray(data.y_train)
    smallest = np.bincount(y).min()
    keep = np.sort(np.concatenate([
        np.flatnonzero(y == c)[: int(smallest * (1 - (1 - 1 / SPREAD) * c / 9))]
        for c in range(10)
    ]))  # fmt: skip
    images = np.rint(x[keep] * 255).astype(np.uint8).reshape(-1, 28, 28)
    np.savez(out / "mnist-unequal.npz", x=images, y=y[keep])
    return np.bincount(y[keep]) / len(keep)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", default="0-4")
    args, flags = parser.parse_known_args()
    args.out.mkdir(parents=True, exist_ok=True)
    shares = draw(args.out)
    subprocess.run(
        [sys.executable, "-m", "benchmarks.clustering", "--dataset",
         str(args.out / "mnist-unequal.npz"), "--seeds", args.seeds, "--out", str(args.out),
         *flags],
        check=True,
    )  # fmt: skip
    rows = []
    for seed in parse_int_range(args.seeds, "--seeds"):
        results = json.loads((args.out / f"seed-{seed}" / "results.json").read_text())
        match = {int(c): int(label) for c, label in results["cluster_to_label"].items()}
        table = np.asarray(results["contingency"])  # [cluster][label] counts
        learned, sizes = np.zeros(10), np.zeros(10)
        for cluster, label in match.items():
            learned[label] = results["proportions"][cluster]
            sizes[label] = table[cluster].sum() / table.sum()
        rows.append({
            "seed": seed,
            "acc": results["test"]["acc"],
            "largest_proportion_gap": float(np.abs(learned - shares).max() * 100),
            "largest_size_gap": float(np.abs(sizes - shares).max() * 100),
            "learned": " ".join(f"{p:.3f}" for p in learned),
            "sizes": " ".join(f"{p:.3f}" for p in sizes),
            "true": " ".join(f"{p:.3f}" for p in shares),
        })  # fmt: skip
    write_csv(args.out / "proportions.csv", rows)
    (args.out / "mnist-unequal.npz").unlink()


if __name__ == "__main__":
    main()
