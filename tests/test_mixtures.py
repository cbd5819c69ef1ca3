import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from gmvae.data.labels import draw_per_class
from gmvae.train import mixtures
from gmvae.train.mixtures import (
    Mixture,
    fit_labelled_mixture,
    fit_labelled_start,
    fit_mixture,
    fit_reproduced_mixture,
    reproduced,
    responsibilities,
)


def three_blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows (300, 2) around three centres, with classes numbered in another order than the
    centres (class 2 is the first blob)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    x = np.concatenate([c + rng.normal(size=(100, 2)) for c in centres])
    return x, np.repeat([2, 0, 1], 100)


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_with_labels_component_k_is_class_k_whatever_order_the_classes_come_in(covariance):
    x, classes = three_blobs()
    labels = draw_per_class(classes, 3, seed=0)
    mixture = fit_labelled_mixture(3, x, labels, covariance, seed=0, n_init=3)
    predicted = mixture.predict_proba(x).argmax(1)
    assert np.mean(predicted[labels < 0] == classes[labels < 0]) > 0.99
    np.testing.assert_allclose(mixture.weights_, [1 / 3] * 3, atol=0.02)
    assert np.isfinite(mixture.bic(len(x)))


def test_a_labelled_row_is_held_at_its_class_even_inside_another_class():
    x, classes = three_blobs()
    labels = draw_per_class(classes, 3, seed=0)
    stray = np.flatnonzero((classes == 2) & (labels < 0))[0]
    labels[stray] = 0  # a row of the first blob labelled as the second blob's class
    mixture = fit_labelled_mixture(3, x, labels, "full", seed=0, n_init=2)
    assert mixture.predict_proba(x[stray : stray + 1]).argmax() == 2  # the mixture's own view
    held = responsibilities(mixture, x, labels)
    np.testing.assert_array_equal(held[stray], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(held.sum(1), 1.0)


def test_a_class_without_labelled_rows_gets_the_component_its_rows_form():
    x, classes = three_blobs(1)
    labels = draw_per_class(classes, 3, seed=0)
    labels[labels == 1] = -1  # class 1 (the third blob) has no labels
    mixture = fit_labelled_mixture(3, x, labels, "full", seed=0, n_init=3)
    assert np.mean(mixture.predict_proba(x).argmax(1) == classes) > 0.99


def test_a_partition_counts_as_reproduced_only_when_another_start_finds_it_whatever_its_names():
    found_twice = np.array([0, 0, 1, 1, 2, 2])
    renamed = np.array([2, 2, 0, 0, 1, 1])
    one_off = np.array([0, 1, 2, 0, 1, 2])
    assert reproduced([found_twice, one_off, renamed]) == [0, 2]
    assert reproduced([one_off]) == []


def test_clusters_that_differ_across_a_dominant_size_axis_are_found_by_the_whitened_starts():
    # Four groups that differ in two features' ratio to a shared size, as crabs' species x sex:
    # k-means on the standardised rows cuts along size, k-means on the whitened rows does not.
    rng = np.random.default_rng(1)
    groups = rng.integers(4, size=400)
    size = rng.normal(0, 3, size=400)
    offsets = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]])[groups] * 0.8
    x = size[:, None] + 0.3 * rng.normal(size=(400, 4))
    x[:, 1:3] += offsets
    x = (x - x.mean(0)) / x.std(0)
    standardised_starts = fit_mixture(4, x, "full", seed=0, n_init=10).predict(x)
    chosen = fit_reproduced_mixture(4, x, ("full", "diag"), seed=0, n_init=10).predict(x)
    assert adjusted_rand_score(groups, standardised_starts) < 0.1
    assert adjusted_rand_score(groups, chosen) > 0.9


def test_a_table_beyond_the_selection_rows_is_chosen_on_a_draw_and_refitted_on_every_row(
    monkeypatch,
):
    monkeypatch.setattr(mixtures, "SELECTION_ROWS", 60)
    x, classes = three_blobs()
    mixture = fit_reproduced_mixture(3, x, ("full", "diag"), seed=0, n_init=10)
    assert adjusted_rand_score(classes, mixture.predict(x)) > 0.95
    # The refit's means are its own rows' means over all 300 rows, not over the 60 drawn.
    partition = mixture.predict(x)
    own_means = np.stack([x[partition == c].mean(0) for c in range(3)])
    np.testing.assert_allclose(mixture.means_, own_means, atol=0.05)


def test_the_quantisation_floor_is_the_rounding_variance_of_a_grid_feature_and_small_otherwise():
    rng = np.random.default_rng(0)
    scores = rng.integers(1, 11, size=200) / 3.0  # a grid of step 1/3
    measured = rng.normal(size=200)
    floor = mixtures.quantisation_floor(np.stack([scores, measured, np.ones(200)], 1))
    np.testing.assert_allclose(floor[0], (1 / 3) ** 2 / 12)
    np.testing.assert_array_equal(floor[1:], mixtures.REG_COVAR)


def scored_table() -> tuple[np.ndarray, np.ndarray]:
    """Standardised rows (450, 4) of 1-10 scores, as biopsy's: 300 of the first class almost all
    1 (3% of their scores 2 or 3), 150 of the second spread around 6; and the classes (450,)."""
    rng = np.random.default_rng(0)
    first = 1 + (rng.random((300, 4)) < 0.03) * rng.integers(1, 3, size=(300, 4))
    second = np.clip(np.round(rng.normal(6, 2.5, size=(150, 4))), 1, 10)
    x = np.concatenate([first, second]).astype(float)
    return (x - x.mean(0)) / x.std(0), np.repeat([0, 1], [300, 150])


def test_without_the_floor_a_component_shrinks_onto_one_score_and_expels_its_class_odd_rows(
    monkeypatch,
):
    x, classes = scored_table()
    with_floor = fit_reproduced_mixture(2, x, ("full", "diag"), seed=0, n_init=10).predict(x)
    monkeypatch.setattr(
        mixtures, "quantisation_floor", lambda x: np.full(x.shape[1], mixtures.REG_COVAR)
    )
    without = fit_reproduced_mixture(2, x, ("full", "diag"), seed=0, n_init=10).predict(x)
    assert adjusted_rand_score(classes, with_floor) > 0.85
    assert adjusted_rand_score(classes, without) < 0.75


def two_groups_and_swapped_records(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows (204, 4) like measured and reported height and weight of two groups: each row's
    reported pair is its measured pair plus a little noise (features nearly collinear), and 4
    rows of the second group have their reported pair swapped (outliers off that line).
    Returns the rows and each row's group."""
    rng = np.random.default_rng(seed)
    groups = np.repeat([0, 1], 102)
    measured = np.where(groups[:, None] == 0, [165.0, 60.0], [178.0, 77.0])
    measured = measured + rng.normal(size=(204, 2)) * [6.0, 7.0]
    reported = measured + rng.normal(size=(204, 2)) * 1.5
    reported[-4:] = reported[-4:, ::-1]
    x = np.hstack([measured, reported])
    return (x - x.mean(0)) / x.std(0), groups


def test_a_start_finds_the_groups_not_a_component_on_a_few_outlying_rows_however_likely():
    x, groups = two_groups_and_swapped_records()
    predicted = fit_reproduced_mixture(2, x, ("full", "diag"), 0, 5).predict(x)
    assert np.bincount(predicted).min() >= 2 * (x.shape[1] + 1)
    assert adjusted_rand_score(groups, predicted) > 0.6


def test_without_the_population_rule_the_outlying_rows_win_a_component(monkeypatch):
    monkeypatch.setattr(mixtures, "ROWS_PER_NONSINGULAR", 0)
    x, groups = two_groups_and_swapped_records()
    predicted = fit_reproduced_mixture(2, x, ("full", "diag"), 0, 5).predict(x)
    assert np.bincount(predicted).min() < 2 * (x.shape[1] + 1)
    assert adjusted_rand_score(groups, predicted) < 0.1


def two_groups_and_two_far_rows(seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Standardised rows (202, 3): two groups of 100 three units apart along the first feature,
    and two rows far out along the other two. Returns the rows and each row's group (the far
    rows counted in the second)."""
    rng = np.random.default_rng(seed)
    groups = np.repeat([0, 1], 100)
    x = rng.normal(size=(200, 3)) + np.where(groups[:, None] == 0, 0.0, [3.0, 0.0, 0.0])
    x = np.vstack([x, [[1.5, 8.0, 8.0], [1.5, 9.0, 7.0]]])
    return (x - x.mean(0)) / x.std(0), np.concatenate([groups, [1, 1]])


def test_a_diagonal_start_finds_the_groups_not_a_component_on_two_far_rows():
    x, groups = two_groups_and_two_far_rows()
    predicted = fit_reproduced_mixture(2, x, ("diag",), 0, 5).predict(x)
    assert np.bincount(predicted).min() >= 2 * 2
    assert adjusted_rand_score(groups, predicted) > 0.6


def test_without_the_population_rule_two_far_rows_win_a_diagonal_component(monkeypatch):
    monkeypatch.setattr(mixtures, "ROWS_PER_NONSINGULAR", 0)
    x, groups = two_groups_and_two_far_rows()
    predicted = fit_reproduced_mixture(2, x, ("diag",), 0, 5).predict(x)
    assert np.bincount(predicted).min() == 2
    assert adjusted_rand_score(groups, predicted) < 0.1


def test_a_labelled_start_drops_a_likelier_full_fit_whose_labelled_rows_fall_in_one_component():
    x, groups = two_groups_and_swapped_records()
    labels = draw_per_class(groups, 5, seed=0)
    full = fit_labelled_mixture(2, x, labels, "full", seed=0, n_init=5)
    diag = fit_labelled_mixture(2, x, labels, "diag", seed=0, n_init=5)
    assert full.bic(len(x)) < diag.bic(len(x))  # BIC alone would keep the spike on 4 rows
    assert mixtures.labelled_agreement(full, x, labels) < mixtures.labelled_agreement(
        diag, x, labels
    )
    start = fit_labelled_start(2, x, labels, ("full", "diag"), seed=0, n_init=5)
    assert start.covariance == "diag"
    assert np.mean(start.predict(x) == groups) > 0.9


def test_a_diagonal_start_chosen_by_bic_is_kept_though_a_full_fit_agrees_more_with_the_labels(
    monkeypatch,
):
    x = np.array([[0.0], [1.0], [4.0], [5.0]])
    labels = np.array([0, 1, 1, -1])
    # The full fit puts every labelled row in its class; the diagonal one puts row 1 in class 0
    # but is far likelier, so BIC keeps it: full covariances are not preferred on that evidence.
    fits = {
        "full": Mixture("full", np.full(2, 0.5), np.array([[0.0], [1.5]]), np.full((2, 1, 1), 0.1)),
        "diag": Mixture("diag", np.full(2, 0.5), np.array([[0.5], [4.5]]), np.ones((2, 1))),
    }
    fits["full"].log_likelihood, fits["diag"].log_likelihood = -100.0, -1.0
    monkeypatch.setattr(
        mixtures, "fit_labelled_mixture", lambda k, x, labels, shape, seed, n_init: fits[shape]
    )
    assert mixtures.labelled_agreement(fits["full"], x, labels) == 1.0
    assert mixtures.labelled_agreement(fits["diag"], x, labels) < 1.0
    start = fit_labelled_start(2, x, labels, ("full", "diag"), seed=0, n_init=1)
    assert start is fits["diag"]
