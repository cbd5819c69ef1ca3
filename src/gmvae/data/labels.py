"""Training labels for semi-supervised runs: int64 (N,), a class index per labelled example and
-1 for unlabelled ones (scikit-learn's convention). Cluster k is then class k: the trainer
names the clusters after each epoch by where the labelled examples' neighbours are
(`cluster_order`), and the labelled examples' cross-entropy trains q(y|x) on those names.

Clustering runs use no labels at all; these are the only labels training ever sees.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from gmvae.errors import GMVAEError
from gmvae.storage import atomic_write

UNLABELLED = -1
LABELLED_FILE = "labelled.csv"  # in the run folder: the labelled training rows and their class
# Clusters are renamed only when that raises the labelled examples' mean support by this much,
# so that names do not flip on noise (q(y|x) is near uniform early in training).
RENAME_MARGIN = 0.02


def check_labels(labels: object, n_rows: int, n_clusters: int) -> np.ndarray:
    """`labels` as int64 (n_rows,): integers in [-1, n_clusters), at least one not -1."""
    values = np.asarray(labels)
    if values.ndim != 1 or len(values) != n_rows:
        raise GMVAEError(f"labels have shape {values.shape}; expected ({n_rows},)")
    if values.dtype.kind not in "iuf" or not np.all(np.isfinite(values.astype(float))):
        raise GMVAEError(f"labels must be integers (-1 for unlabelled), got dtype {values.dtype}")
    if values.dtype.kind == "f" and not np.all(values == np.round(values)):
        raise GMVAEError("labels must be integers (-1 for unlabelled); some have a fraction")
    values = values.astype(np.int64)
    if values.min() < UNLABELLED:
        raise GMVAEError(f"label {values.min()} is below -1 (-1 means unlabelled)")
    if values.max() >= n_clusters:
        raise GMVAEError(
            f"label {values.max()} is not a cluster: with {n_clusters} clusters, classes are "
            f"0 to {n_clusters - 1}"
        )
    if values.max() == UNLABELLED:
        raise GMVAEError("every label is -1 (unlabelled): semi-supervised training needs some")
    return values


def draw_per_class(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Keep `per_class` labels of each class, drawn at random with `seed`; the rest become -1."""
    if per_class < 1:
        raise GMVAEError(f"labels_per_class must be at least 1, got {per_class}")
    rng = np.random.default_rng(seed)
    kept = np.full(len(labels), UNLABELLED, dtype=np.int64)
    for c in np.unique(labels[labels >= 0]):
        rows = np.flatnonzero(labels == c)
        if len(rows) < per_class:
            raise GMVAEError(f"class {c} has {len(rows)} examples, fewer than {per_class}")
        chosen = rng.choice(rows, per_class, replace=False)
        kept[chosen] = c
    return kept


def write_labelled(path: Path, labels: np.ndarray) -> None:
    """The labelled rows as CSV: `row,label` per labelled training example."""
    rows = np.flatnonzero(labels >= 0)
    buffer = io.StringIO()
    buffer.write("row,label\n")
    buffer.writelines(f"{r},{labels[r]}\n" for r in rows)
    atomic_write(path, buffer.getvalue())


def read_labelled(path: Path, n_rows: int) -> np.ndarray:
    """What `write_labelled` wrote, back as labels (n_rows,) with -1 for the other rows."""
    labels = np.full(n_rows, UNLABELLED, dtype=np.int64)
    try:
        with open(path, newline="") as f:
            for entry in csv.DictReader(f):
                labels[int(entry["row"])] = int(entry["label"])
    except (OSError, KeyError, ValueError, IndexError) as err:
        raise GMVAEError(f"cannot read {path}: {err}") from None
    return labels


def cluster_order(support: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The renaming that puts each labelled class in the cluster its examples' neighbours are in.

    support (L, K): for each labelled example, q(y|x) averaged over its nearest neighbours;
    classes (L,): their classes. Returns order (K,): new cluster i is old cluster order[i].
    Each class present takes one cluster, matched (Hungarian) to maximise the summed support;
    the clusters no class takes fill the remaining places in their old order. The current
    names are kept (order = 0..K-1) unless the renaming raises the mean support by more than
    RENAME_MARGIN.
    """
    n_clusters = support.shape[1]
    present = np.unique(classes)
    score = np.stack([support[classes == c].sum(0) for c in present])  # (C, K)
    rows, cols = linear_sum_assignment(score, maximize=True)
    order = np.full(n_clusters, -1)
    order[present[rows]] = cols
    order[order < 0] = np.setdiff1d(np.arange(n_clusters), cols)  # both ascending
    gain = score[rows, cols].sum() - score[np.arange(len(present)), present].sum()
    return order if gain / len(classes) > RENAME_MARGIN else np.arange(n_clusters)
