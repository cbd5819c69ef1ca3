"""Clustering metrics against labels (evaluation only): ACC with the Hungarian match, NMI, ARI."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def contingency(clusters: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Counts (n_clusters, n_classes): entry [k, c] = examples in cluster k with label c."""
    n_classes = int(labels.max()) + 1 if len(labels) else 0
    table = np.zeros((n_clusters, n_classes), dtype=np.int64)
    np.add.at(table, (clusters, labels), 1)
    return table


def hungarian_match(table: np.ndarray) -> dict[int, int]:
    """The one-to-one cluster -> label map that maximises agreement, from a contingency table.

    With more clusters than classes, min(K, C) clusters are matched and the rest map nowhere.
    """
    rows, cols = linear_sum_assignment(table, maximize=True)
    return {int(r): int(c) for r, c in zip(rows, cols, strict=True)}


def cluster_accuracy(labels: np.ndarray, clusters: np.ndarray, n_clusters: int) -> float:
    """Fraction of examples whose cluster is matched to their label (one-to-one; examples in
    unmatched clusters count as errors)."""
    table = contingency(clusters, labels, n_clusters)
    match = hungarian_match(table)
    return float(sum(table[k, c] for k, c in match.items()) / len(labels))


def usage_entropy(clusters: np.ndarray, n_clusters: int) -> float:
    """Entropy (nats) of the share of examples per cluster: ln K when balanced, 0 when collapsed."""
    share = np.bincount(clusters, minlength=n_clusters) / len(clusters)
    share = share[share > 0]
    return float((share * np.log(1 / share)).sum())


def clustering_scores(labels: np.ndarray, clusters: np.ndarray, n_clusters: int) -> dict:
    """ACC, NMI and ARI in percent."""
    return {
        "acc": 100 * cluster_accuracy(labels, clusters, n_clusters),
        "nmi": 100 * float(normalized_mutual_info_score(labels, clusters)),
        "ari": 100 * float(adjusted_rand_score(labels, clusters)),
    }
