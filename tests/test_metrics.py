import math

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from gmvae.run.metrics import (
    cluster_accuracy,
    clustering_scores,
    contingency,
    hungarian_match,
    usage_entropy,
)


def test_accuracy_is_one_for_any_relabelling_of_the_truth():
    labels = np.array([0, 0, 1, 1, 2, 2, 2])
    for permutation in ([2, 0, 1], [1, 2, 0], [0, 1, 2]):
        clusters = np.array(permutation)[labels]
        assert cluster_accuracy(labels, clusters, 3) == 1.0


def test_accuracy_matches_hand_computed_hungarian_assignment():
    # Contingency: cluster 0 holds labels {1, 1, 2}, cluster 1 {0, 0}, cluster 2 {2}.
    # Best one-to-one match: 1->0 (2), 0->1 (2), 2->2 (1): 5 of 6 right.
    labels = np.array([0, 0, 1, 1, 2, 2])
    clusters = np.array([1, 1, 0, 0, 0, 2])
    assert cluster_accuracy(labels, clusters, 3) == pytest.approx(5 / 6)
    assert hungarian_match(contingency(clusters, labels, 3)) == {0: 1, 1: 0, 2: 2}


def test_accuracy_with_more_clusters_than_classes_counts_unmatched_clusters_as_errors():
    # Three clusters, two classes: cluster 0 -> label 0 (2), cluster 2 -> label 1 (3);
    # cluster 1 matches nothing, so its single example is an error: 5 of 6.
    labels = np.array([0, 0, 0, 1, 1, 1])
    clusters = np.array([0, 0, 1, 2, 2, 2])
    assert cluster_accuracy(labels, clusters, 3) == pytest.approx(5 / 6)
    assert hungarian_match(contingency(clusters, labels, 3)) == {0: 0, 2: 1}


def test_accuracy_counts_empty_clusters_in_the_table():
    labels = np.array([0, 1, 1])
    clusters = np.array([0, 0, 0])  # clusters 1..3 unused
    table = contingency(clusters, labels, 4)
    assert table.shape == (4, 2)
    assert cluster_accuracy(labels, clusters, 4) == pytest.approx(2 / 3)


def test_scores_are_percentages_agreeing_with_scikit_learn_and_permutation_invariant():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 200)
    clusters = np.where(rng.random(200) < 0.7, labels, rng.integers(0, 5, 200))
    scores = clustering_scores(labels, clusters, 5)
    assert scores["nmi"] == pytest.approx(100 * normalized_mutual_info_score(labels, clusters))
    assert scores["ari"] == pytest.approx(100 * adjusted_rand_score(labels, clusters))
    permuted = clustering_scores(labels, np.array([3, 0, 4, 1, 2])[clusters], 5)
    assert permuted == pytest.approx(scores)
    assert 50 < scores["acc"] < 100


def test_usage_entropy_is_log_k_when_balanced_and_zero_when_collapsed():
    assert usage_entropy(np.arange(10).repeat(3), 10) == pytest.approx(math.log(10))
    assert usage_entropy(np.zeros(30, dtype=int), 10) == 0.0
