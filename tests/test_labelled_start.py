import numpy as np

from gmvae import GMVAE
from gmvae.data.labels import draw_per_class
from gmvae.train.labelled_start import (
    ClassifierStart,
    brier_score,
    fit_semi_supervised_start,
    labelled_folds,
)
from gmvae.train.mixtures import Mixture


def test_each_fold_holds_out_one_labelled_row_per_class_and_the_folds_cover_every_label():
    labels = draw_per_class(np.repeat([0, 1, 2], 40), 5, seed=3)
    folds = labelled_folds(labels, 3, seed=0)
    assert len(folds) == 5
    for fold in folds:
        assert sorted(labels[fold]) == [0, 1, 2]
    held_out = np.concatenate(folds)
    assert len(np.unique(held_out)) == len(held_out)
    assert set(held_out) == set(np.flatnonzero(labels >= 0))


def test_no_folds_when_a_class_has_a_single_label_or_none():
    labels = np.full(50, -1)
    labels[[0, 1, 2]] = [0, 0, 1]
    assert labelled_folds(labels, 2, seed=0) == []
    labels[3] = 1
    assert labelled_folds(labels, 3, seed=0) == []  # class 2 has no label at all
    assert len(labelled_folds(labels, 2, seed=0)) == 2
    assert labelled_folds(np.where(labels == 0, 0, -1), 1, seed=0) == []  # one class only


def classes_across_two_clusters(seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Two tight, far-apart clusters along feature 0; the class is the sign of feature 1, spread
    evenly within each cluster on either side of a narrow gap: the classes are not the
    clusters."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([
        np.repeat([-4.0, 4.0], 150) + 0.3 * rng.normal(size=300),
        rng.choice([-1, 1], size=300) * rng.uniform(0.2, 2, size=300),
    ])  # fmt: skip
    return x, (x[:, 1] > 0).astype(int)


def test_brier_score_charges_a_start_sure_of_a_wrong_class_more_than_an_unsure_one():
    classes = np.array([0, 1])
    assert brier_score(np.array([[1.0, 0.0], [0.0, 1.0]]), classes) == 0.0
    # Both give one of the two rows its class; the sure one is charged 2 for its miss.
    sure = brier_score(np.array([[1.0, 0.0], [1.0, 0.0]]), classes)
    unsure = brier_score(np.array([[0.6, 0.4], [0.6, 0.4]]), classes)
    assert sure == 2.0 and np.isclose(unsure, 2 * 0.16 + 2 * 0.36)


def test_a_classifier_starts_a_table_whose_classes_are_not_its_clusters():
    x, classes = classes_across_two_clusters()
    labels = draw_per_class(classes, 5, seed=0)
    start = fit_semi_supervised_start(2, x, labels, ("full", "diag"), seed=0, n_init=3)
    assert isinstance(start, ClassifierStart)
    assert np.mean(start.predict_proba(x).argmax(1) == classes) > 0.9
    assert np.isclose(start.weights_.sum(), 1.0)


def test_the_mixture_starts_a_table_whose_classes_are_its_clusters():
    rng = np.random.default_rng(1)
    # Two elongated classes side by side: a mixture of every row separates them, and a
    # classifier of five labelled rows each sometimes tilts the boundary through them.
    x = np.concatenate([rng.normal(size=(150, 2)) * [0.5, 4] + [c, 0] for c in (-1.5, 1.5)])
    classes = np.repeat([0, 1], 150)
    labels = draw_per_class(classes, 5, seed=0)
    start = fit_semi_supervised_start(2, x, labels, ("full", "diag"), seed=0, n_init=3)
    assert isinstance(start, Mixture)
    assert np.mean(start.predict(x) == classes) > 0.95


def test_a_semi_supervised_table_trains_from_the_classifier_start_where_it_was_preferred():
    x, classes = classes_across_two_clusters()
    labels = draw_per_class(classes, 5, seed=0)
    model = GMVAE(n_clusters=2, semi_supervised=True, random_state=0).fit(x, labels)
    assert model.history_[0]["classifier_start"] == 1.0
    unlabelled = labels < 0
    assert np.mean(model.predict(x)[unlabelled] == classes[unlabelled]) > 0.9
