"""The scikit-learn-style estimator: the API contract, scikit-learn's own checks, and the
inputs it accepts."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from gmvae import GMVAE
from gmvae.data.labels import draw_per_class
from gmvae.errors import GMVAEError
from gmvae.run.metrics import cluster_accuracy

# q(y|x) 64 wide instead of the default preset's 1200: the fits of these tests take a tenth of
# the time.
SMALL = {
    "latent_dim": 4,
    "hidden_dim": 32,
    "epochs": 5,
    "batch_size": 32,
    "random_state": 0,
    "settings": {"model": {"y_hidden_dim": 64}},
}


# 10 epochs, not SMALL's 5: check_clustering adds 5 uniform noise rows to 50 and wants every
# cluster used; the inputs' mixture gives one noise row a component of its own, and on an AMD
# EPYC 5 epochs left that cluster empty where 8 or more (and the default 15) refill it.
@parametrize_with_checks([GMVAE(n_clusters=3, **{**SMALL, "epochs": 10})])
def test_passes_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_init_only_stores_and_fitted_attributes_appear_after_fit(digits):
    model = GMVAE(n_clusters=10, **SMALL)
    assert not hasattr(model, "labels_") and not hasattr(model, "model_")
    assert model.fit(digits[0]) is model
    assert model.labels_.shape == (1797,) and model.n_features_in_ == 64
    assert model.likelihood_ == "gaussian"  # flat 2-D data is a table: standardised


def test_fit_predict_equals_fit_then_predict_and_probabilities_are_normalised(digits):
    x = digits[0][:400]
    first = GMVAE(n_clusters=5, **SMALL).fit_predict(x)
    model = GMVAE(n_clusters=5, **SMALL).fit(x)
    np.testing.assert_array_equal(first, model.predict(x))
    proba = model.predict_proba(x)
    assert proba.shape == (400, 5)
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    np.testing.assert_array_equal(proba.argmax(1), model.predict(x))


def test_transform_score_sample_and_reconstruct_have_the_promised_shapes(digits):
    x = digits[0][:300]
    model = GMVAE(n_clusters=4, **SMALL).fit(x)
    assert model.transform(x).shape == (300, 4)
    scores = model.score_samples(x)
    assert scores.shape == (300,) and model.score(x) == pytest.approx(scores.mean())
    samples, clusters = model.sample(12)
    assert samples.shape == (12, 64) and clusters.shape == (12,)
    samples, clusters = model.sample(5, cluster=2)
    assert (clusters == 2).all()
    assert model.reconstruct(x[:7]).shape == (7, 64)
    with pytest.raises(GMVAEError, match="cluster must be in"):
        model.sample(3, cluster=4)


def test_images_as_nhw_nchw_or_flat_with_a_shape_give_the_same_model(digits):
    x = digits[0][:300]
    flat = GMVAE(n_clusters=4, image_shape=(8, 8), architecture="mlp", **SMALL).fit(x)
    nhw = GMVAE(n_clusters=4, architecture="mlp", **SMALL).fit(x.reshape(-1, 8, 8))
    nchw = GMVAE(n_clusters=4, architecture="mlp", **SMALL).fit(x.reshape(-1, 1, 8, 8))
    assert flat.image_shape_ == nhw.image_shape_ == nchw.image_shape_ == (8, 8)
    np.testing.assert_array_equal(flat.labels_, nhw.labels_)
    np.testing.assert_array_equal(nhw.labels_, nchw.labels_)
    assert nhw.sample(2)[0].shape == (2, 8, 8)


def test_uint8_images_are_scaled_and_the_conv_architecture_trains_on_them(digits):
    pixels = (digits[0][:200].reshape(-1, 8, 8) * 255).astype(np.uint8)
    model = GMVAE(n_clusters=3, architecture="conv", **SMALL).fit(pixels)
    assert model.architecture_ == "conv" and model.likelihood_ == "bernoulli"
    assert model.scaling_.scale.tolist() == [255.0]
    assert model.reconstruct(pixels[:2]).max() <= 255


def test_tables_are_standardised_with_a_gaussian_likelihood_and_dataframes_work():
    pandas = pytest.importorskip("pandas")
    from sklearn.datasets import load_wine

    x, y = load_wine(return_X_y=True)
    frame = pandas.DataFrame(x, columns=[f"f{i}" for i in range(13)])
    model = GMVAE(n_clusters=3, **{**SMALL, "epochs": 30}).fit(frame)
    assert model.likelihood_ == "gaussian" and model.architecture_ == "mlp"
    assert list(model.feature_names_in_) == [f"f{i}" for i in range(13)]
    np.testing.assert_allclose(model.scaling_.offset, x.mean(0))
    assert cluster_accuracy(y, model.labels_, 3) > 0.6  # chance is about 0.4
    assert model.sample(4)[0].shape == (4, 13)


def test_torch_tensors_are_accepted(digits):
    x = torch.as_tensor(digits[0][:200])
    model = GMVAE(n_clusters=3, **SMALL).fit(x)
    assert model.predict(x).shape == (200,)


def fitted_attributes(estimator: GMVAE) -> dict:
    return {k: v for k, v in vars(estimator).items() if k.endswith("_") and k != "model_"}


def same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    if hasattr(a, "to_dict"):  # a Scaling
        return same(a.offset, b.offset) and same(a.scale, b.scale)
    return a == b


@pytest.mark.parametrize(
    "kind",
    ["table", "images as arrays", "flat rows with image_shape"],
)
def test_save_and_load_round_trip_every_fitted_attribute(digits, tmp_path, kind):
    x = digits[0][:300]
    if kind == "table":
        model, data = GMVAE(n_clusters=4, **SMALL), x * 16 + 3.0  # standardised on the way in
    elif kind == "images as arrays":
        model, data = GMVAE(n_clusters=4, **SMALL), x.reshape(-1, 8, 8)
    else:
        model, data = GMVAE(n_clusters=4, image_shape=(8, 8), **SMALL), x
    model.fit(data)
    model.save(tmp_path / "m")
    loaded = GMVAE.load(tmp_path / "m")
    assert loaded.get_params() == model.get_params()
    before, after = fitted_attributes(model), fitted_attributes(loaded)
    assert set(before) == set(after)
    assert all(same(before[k], after[k]) for k in before), [
        k for k in before if not same(before[k], after[k])
    ]
    np.testing.assert_array_equal(loaded.predict_proba(data), model.predict_proba(data))
    np.testing.assert_array_equal(loaded.transform(data), model.transform(data))


def test_save_refuses_to_replace_a_model_unless_asked_and_replaces_it_whole(digits, tmp_path):
    x = digits[0][:300]
    first = GMVAE(n_clusters=4, **SMALL).fit(x)
    first.save(tmp_path / "m")
    second = GMVAE(n_clusters=3, **SMALL).fit(x)
    with pytest.raises(GMVAEError, match="already exists; save"):
        second.save(tmp_path / "m")
    assert GMVAE.load(tmp_path / "m").n_clusters == 4
    second.save(tmp_path / "m", overwrite=True)
    assert GMVAE.load(tmp_path / "m").n_clusters == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no staging folder left
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(GMVAEError, match="not a saved GMVAE"):
        second.save(tmp_path / "other", overwrite=True)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("params.n_clusters", 7, "n_clusters"),
        ("params.preset", "mine", "preset"),
        ("params.latent_dim", 9, "latent_dim"),
        ("input_shape", [65], "input_shape"),
        ("n_features_in", 3, "n_features_in"),
        ("labels", [99, 0], "labels"),
        ("params", "x", "not a saved GMVAE"),
        ("input_shape", "x", "not a saved GMVAE"),
    ],
)
def test_an_estimator_json_that_does_not_fit_its_model_is_refused(
    digits, tmp_path, field, value, message
):
    import json

    GMVAE(n_clusters=4, **SMALL).fit(digits[0][:200]).save(tmp_path / "m")
    path = tmp_path / "m" / "estimator.json"
    state = json.loads(path.read_text())
    *parents, leaf = field.split(".")
    target = state
    for key in parents:
        target = target[key]
    target[leaf] = value
    path.write_text(json.dumps(state))
    with pytest.raises(GMVAEError, match=message):
        GMVAE.load(tmp_path / "m")


def test_works_in_pipeline_clone_and_grid_search(digits):
    x = digits[0][:300]
    pipeline = Pipeline([("scale", FunctionTransformer()), ("gmvae", GMVAE(n_clusters=4, **SMALL))])
    assert pipeline.fit_predict(x).shape == (300,)
    copy = clone(pipeline.named_steps["gmvae"])
    assert copy.get_params() == pipeline.named_steps["gmvae"].get_params()
    assert not hasattr(copy, "model_")
    search = GridSearchCV(GMVAE(**SMALL), {"n_clusters": [3, 5]}, cv=2).fit(x)
    assert search.best_params_["n_clusters"] in (3, 5)  # chosen by held-out ELBO, no labels
    assert np.isfinite(search.best_score_)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.full((20, 3), np.nan), "NaN"),
        (np.array([[1.0, np.inf]] * 20), "infinity"),
        (np.zeros((0, 4)), "0 sample"),
        (np.zeros((2, 4)), "2 samples for 3 clusters"),
        (np.array([["a", "b"]] * 20), "could not convert|numeric"),
    ],
)
def test_bad_input_is_a_clear_value_error(x, message):
    with pytest.raises(ValueError, match=message):
        GMVAE(n_clusters=3, **SMALL).fit(x)


def test_bernoulli_on_data_outside_unit_range_and_wrong_feature_counts_are_refused(digits):
    with pytest.raises(GMVAEError, match="bernoulli likelihood needs data in \\[0, 1\\]"):
        GMVAE(n_clusters=3, likelihood="bernoulli", **SMALL).fit(np.random.randn(50, 4) * 3)
    model = GMVAE(n_clusters=3, **SMALL).fit(digits[0][:100])
    with pytest.raises(ValueError, match="features"):
        model.predict(digits[0][:5, :10])


def test_semi_supervised_predict_returns_classes_from_five_labels_per_class(digits):
    x, y = digits
    y_partial = draw_per_class(y, 5, seed=0)
    model = GMVAE(n_clusters=10, semi_supervised=True, **{**SMALL, "hidden_dim": 128})
    model.fit(x.reshape(-1, 8, 8), y_partial)
    unlabelled = y_partial == -1
    assert (model.predict(x.reshape(-1, 8, 8))[unlabelled] == y[unlabelled]).mean() > 0.8


def test_y_is_ignored_unless_semi_supervised(digits):
    x, y = digits[0][:300], digits[1][:300]
    with_y = GMVAE(n_clusters=4, **SMALL).fit(x, y).labels_
    np.testing.assert_array_equal(with_y, GMVAE(n_clusters=4, **SMALL).fit(x).labels_)


@pytest.mark.parametrize(
    ("y", "message"),
    [
        (None, "needs y"),
        (np.full(60, -1), "every label is -1"),
        (np.arange(60) % 4, "label 3 is not a cluster"),
        (np.full(60, 0.5), "fraction"),
        (np.array(["cat"] * 60), "must be integers"),
        (np.zeros(59), r"expected \(60,\)"),
    ],
)
def test_bad_semi_supervised_labels_are_one_clear_error_each(digits, y, message):
    with pytest.raises(GMVAEError, match=message):
        GMVAE(n_clusters=3, semi_supervised=True, **SMALL).fit(digits[0][:60], y)


def test_settings_change_the_presets_objective_and_bad_ones_are_refused(digits):
    x = digits[0][:200]
    settings = {**SMALL["settings"], "objective": {"w_balance": 0.0}}
    model = GMVAE(n_clusters=4, **{**SMALL, "settings": settings}).fit(x)
    assert "balance" not in model.history_[0] and "adversarial" in model.history_[0]
    with pytest.raises(GMVAEError, match="w_nope"):
        GMVAE(n_clusters=4, **{**SMALL, "settings": {"objective": {"w_nope": 1.0}}}).fit(x)
    with pytest.raises(GMVAEError, match="sections"):
        GMVAE(n_clusters=4, **{**SMALL, "settings": {"loss": {}}}).fit(x)


def test_the_default_learns_the_proportions_of_a_table_with_a_small_cluster_and_samples_them():
    rng = np.random.default_rng(0)
    sizes = (480, 240, 80)  # 6:3:1: the smallest under half an equal share (1/6)
    centres = ((0, 0, 0, 0), (5, 0, 5, 0), (0, 5, 0, 5))
    x = np.concatenate([rng.normal(c, 1, (n, 4)) for c, n in zip(centres, sizes, strict=True)])
    y = np.repeat([0, 1, 2], sizes)
    model = GMVAE(n_clusters=3, random_state=0).fit(x)
    assert cluster_accuracy(y, model.labels_, 3) > 0.97
    truth = np.array(sizes) / sum(sizes)
    learned = model.weights_[[np.bincount(model.labels_[y == c]).argmax() for c in range(3)]]
    np.testing.assert_allclose(learned, truth, atol=0.02)
    _, drawn = model.sample(4000)
    np.testing.assert_allclose(np.bincount(drawn, minlength=3) / 4000, model.weights_, atol=0.03)
    equal = GMVAE(n_clusters=3, random_state=0, settings={"model": {"proportions": "equal"}})
    np.testing.assert_allclose(equal.fit(x).weights_, 1 / 3, atol=1e-6)
