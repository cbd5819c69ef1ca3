import numpy as np
import pytest

from gmvae.data.labels import (
    check_labels,
    cluster_order,
    draw_per_class,
    read_labelled,
    write_labelled,
)
from gmvae.errors import GMVAEError


@pytest.mark.parametrize(
    "labels, message",
    [
        ([0.5, 1, -1], "have a fraction"),
        (["a", "b", "-1"], "must be integers"),
        ([0, np.nan, 1], "must be integers"),
        ([0, -2, 1], "below -1"),
        ([0, 3, 1], "label 3 is not a cluster"),
        ([-1, -1, -1], "every label is -1"),
        ([0, 1], r"shape \(2,\); expected \(3,\)"),
    ],
)
def test_bad_labels_are_one_clear_error_each(labels, message):
    with pytest.raises(GMVAEError, match=message):
        check_labels(labels, n_rows=3, n_clusters=3)


def test_integer_valued_floats_and_minus_one_are_accepted():
    assert check_labels(np.array([2.0, -1.0, 0.0]), 3, 3).tolist() == [2, -1, 0]


def test_the_draw_keeps_n_per_class_from_the_seed_and_differs_across_seeds():
    labels = np.repeat(np.arange(4), 50)
    drawn = draw_per_class(labels, 3, seed=0)
    assert np.bincount(drawn[drawn >= 0]).tolist() == [3, 3, 3, 3]
    assert (drawn[drawn >= 0] == labels[drawn >= 0]).all()
    assert np.array_equal(drawn, draw_per_class(labels, 3, seed=0))
    assert not np.array_equal(drawn, draw_per_class(labels, 3, seed=1))
    with pytest.raises(GMVAEError, match="class 0 has 50 examples, fewer than 51"):
        draw_per_class(labels, 51, seed=0)


def test_the_saved_draw_reads_back_unchanged(tmp_path):
    labels = draw_per_class(np.repeat(np.arange(3), 10), 2, seed=4)
    write_labelled(tmp_path / "labelled.csv", labels)
    assert np.array_equal(read_labelled(tmp_path / "labelled.csv", 30), labels)


def test_each_class_is_named_after_the_cluster_its_neighbours_are_in():
    # Two labelled examples per class; class c's neighbours sit in cluster (c + 1) % 4.
    classes = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    support = np.full((8, 4), 0.02)
    support[np.arange(8), (classes + 1) % 4] = 0.94
    order = cluster_order(support, classes)
    assert order.tolist() == [1, 2, 3, 0]  # new cluster c is old cluster c + 1


def test_clusters_no_class_claims_keep_their_order_after_the_named_ones():
    # Labels for classes 0 and 1 only, K = 5: they are in clusters 3 and 1.
    support = np.array([[0.0, 0.1, 0.0, 0.9, 0.0], [0.0, 0.8, 0.1, 0.1, 0.0]])
    assert cluster_order(support, np.array([0, 1])).tolist() == [3, 1, 0, 2, 4]


def test_names_are_kept_when_renaming_gains_less_than_the_margin():
    # Near-uniform q(y|x), as early in training: a better matching exists, but barely.
    classes = np.array([0, 1, 2])
    support = np.full((3, 3), 1 / 3)
    support[0] += [-0.005, 0.005, 0.0]
    support[1] += [0.005, -0.005, 0.0]
    assert cluster_order(support, classes).tolist() == [0, 1, 2]
