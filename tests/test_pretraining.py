import sys

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture

from gmvae.data.labels import draw_per_class
from gmvae.errors import GMVAEError
from gmvae.model import inference
from gmvae.model.network import GMVAENet, ModelConfig
from gmvae.run.metrics import cluster_accuracy
from gmvae.train.embedding import fit_embedding
from gmvae.train.pretraining import pretrain, start_from_inputs, start_from_mixture


def digits_model(seed: int = 0) -> GMVAENet:
    torch.manual_seed(seed)
    return GMVAENet(
        ModelConfig(
            x_dim=64,
            image_shape=(8, 8),
            z_dim=8,
            hidden_dim=128,
            likelihood="bernoulli",
            y_batch_norm=True,
        )
    )


def test_each_p_z_given_y_starts_as_one_component_of_a_mixture_fitted_on_the_codes():
    codes = np.random.default_rng(0).normal(size=(600, 8)) * [1, 2, 3, 1, 1, 1, 1, 0.5]
    codes[:300] += 6.0  # two well-separated groups
    model = digits_model()
    responsibilities = start_from_mixture(model, codes.astype(np.float32), seed=5)
    mixture = GaussianMixture(10, covariance_type="diag", reg_covar=1e-4, random_state=5)
    drawn = np.random.default_rng(5).permutation(600)  # all 600, in the seeded draw's order
    mixture.fit(codes[drawn].astype(np.float32).astype(np.float64))
    with torch.no_grad():
        mean, var = model.prior(torch.eye(10))
    np.testing.assert_allclose(mean.numpy(), mixture.means_, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(var.numpy(), mixture.covariances_, rtol=1e-3, atol=1e-5)
    assert responsibilities.shape == (600, 10)
    np.testing.assert_allclose(responsibilities.sum(1).numpy(), 1.0, atol=1e-5)


def test_pretraining_alone_gives_q_y_clusters_of_digits_and_one_code_for_every_y(digits):
    x, y = digits
    rows = torch.as_tensor(x)
    model = digits_model()
    rec = pretrain(model, len(x), lambda r: rows[r], epochs=10, batch_size=64, lr=1e-3, seed=0)
    assert 0 < rec < 25  # nats per 8x8 image: an untrained decoder (logits 0) gives 64 ln 2 = 44
    model.eval()
    clusters = inference.cluster_probabilities(model, x).argmax(1)
    chance = cluster_accuracy(y, np.random.default_rng(0).integers(0, 10, len(y)), 10)
    assert cluster_accuracy(y, clusters, 10) > 2.5 * chance
    with torch.no_grad():
        codes = [model.encode_z(rows[:50], torch.eye(10)[[k] * 50])[0] for k in (0, 3, 9)]
    assert torch.equal(codes[0], codes[1]) and torch.equal(codes[0], codes[2])


def test_pretraining_and_teaching_read_batches_of_equal_size(digits):
    x, _ = digits  # 1,797 rows at 256: eight batches of 224 or 225, not seven of 256 and one of 5
    rows, sizes = torch.as_tensor(x), []

    def read(r: torch.Tensor) -> torch.Tensor:
        sizes.append(len(r))
        return rows[r]

    pretrain(digits_model(), len(x), read, epochs=1, batch_size=256, lr=1e-3, seed=0)
    batches = [size for size in sizes if size <= 256]  # not the code chunks
    assert len(batches) > 8 and set(batches) == {224, 225}


def test_a_table_starts_from_the_mixture_on_its_rows_with_its_proportions():
    rng = np.random.default_rng(0)
    sizes = (450, 150)  # 3:1, with correlated features in each cluster
    covariance = [[1, 0.8], [0.8, 1]]
    rows = [
        rng.multivariate_normal((m, m), covariance, n) for m, n in zip((0, 5), sizes, strict=True)
    ]
    x = torch.as_tensor(np.concatenate(rows), dtype=torch.float32)
    y = np.repeat([0, 1], sizes)
    torch.manual_seed(0)
    model = GMVAENet(ModelConfig(x_dim=2, image_shape=None, n_clusters=2, z_dim=2,
                                 hidden_dim=32, likelihood="gaussian", y_batch_norm=True,
                                 proportions="learned"))  # fmt: skip
    log_likelihood = start_from_inputs(
        model, len(x), lambda r: x[r], 64, 2e-3, seed=0
    ).mixture_log_likelihood
    assert np.isfinite(log_likelihood)
    model.eval()
    assert cluster_accuracy(y, inference.cluster_probabilities(model, x).argmax(1), 2) > 0.99
    np.testing.assert_allclose(sorted(inference.proportions(model)), [0.25, 0.75], atol=0.01)


@pytest.mark.parametrize(
    ("sizes", "learned", "proportions"),
    [((540, 60), True, [0.1, 0.9]), ((330, 270), False, [0.5, 0.5])],
)
def test_auto_proportions_are_learned_only_when_the_start_finds_a_cluster_under_half_its_share(
    sizes, learned, proportions
):
    rng = np.random.default_rng(0)
    rows = [rng.normal(m, 1.0, size=(n, 2)) for m, n in zip((0, 6), sizes, strict=True)]
    x = torch.as_tensor(np.concatenate(rows), dtype=torch.float32)
    torch.manual_seed(0)
    model = GMVAENet(ModelConfig(x_dim=2, image_shape=None, n_clusters=2, z_dim=2,
                                 hidden_dim=32, likelihood="gaussian", y_batch_norm=True,
                                 proportions="auto"))  # fmt: skip
    assert not model.learns_proportions()  # equal until a start decides
    start_from_inputs(model, len(x), lambda r: x[r], 64, 2e-3, seed=0)
    assert model.learns_proportions() is learned
    np.testing.assert_allclose(sorted(inference.proportions(model)), proportions, atol=0.01)


def test_a_table_with_few_rows_per_cluster_for_its_features_starts_from_diagonal_covariances():
    # 20 features, 30 rows per cluster: a full covariance has 210 numbers to fit from 30 rows
    centres = np.random.default_rng(1).normal(scale=4, size=(10, 20))
    x = np.concatenate([c + np.random.default_rng(i).normal(size=(30, 20))
                        for i, c in enumerate(centres)])  # fmt: skip
    rows = torch.as_tensor(x, dtype=torch.float32)
    torch.manual_seed(0)
    config = ModelConfig(x_dim=20, image_shape=None, n_clusters=10, z_dim=2, hidden_dim=32,
                         likelihood="gaussian", y_batch_norm=True)  # fmt: skip
    model = GMVAENet(config)
    log_likelihood = start_from_inputs(
        model, len(x), lambda r: rows[r], 64, 2e-3, seed=0
    ).mixture_log_likelihood
    fitted = rows.numpy().astype(np.float64)
    mixtures = {
        shape: GaussianMixture(10, covariance_type=shape, reg_covar=1e-4, n_init=10,
                               random_state=0).fit(fitted)
        for shape in ("full", "diag")
    }  # fmt: skip
    assert mixtures["diag"].bic(fitted) < mixtures["full"].bic(fitted)
    assert log_likelihood == mixtures["diag"].score(fitted)


def test_with_labels_the_tables_start_names_cluster_k_after_class_k():
    rng = np.random.default_rng(0)
    centres = ((0, 0), (6, 0), (0, 6))
    x = np.concatenate([c + rng.normal(size=(100, 2)) for c in centres])
    classes = np.repeat([2, 0, 1], 100)  # not the blobs' order
    labels = draw_per_class(classes, 3, seed=0)
    rows = torch.as_tensor(x, dtype=torch.float32)
    torch.manual_seed(0)
    model = GMVAENet(ModelConfig(x_dim=2, image_shape=None, n_clusters=3, z_dim=2, hidden_dim=32,
                                 likelihood="gaussian", y_batch_norm=True))  # fmt: skip
    start_from_inputs(model, len(x), lambda r: rows[r], 64, 2e-3, 0, torch.as_tensor(labels))
    model.eval()
    predicted = inference.cluster_probabilities(model, rows).argmax(1)
    assert np.mean(predicted == classes) > 0.98  # the names, not only the partition


def test_digits_start_from_a_mixture_in_their_umap_embedding_closer_to_the_classes(digits):
    # Handwritten digits are curved groups in pixel space, which diagonal Gaussians on the
    # pixels cut across; in the UMAP embedding each digit is one compact group.
    x, y = digits
    rows = torch.as_tensor(x)
    accuracy = {}
    for embedded in (False, True):
        model = digits_model()
        start = start_from_inputs(model, len(x), lambda r: rows[r], 64, 2e-3, 0, embedded=embedded)
        assert start.probabilities.shape == (len(x), 10)
        model.eval()
        clusters = inference.cluster_probabilities(model, x).argmax(1)
        accuracy[embedded] = cluster_accuracy(y, clusters, 10)
    assert accuracy[True] > 0.8
    assert accuracy[True] > accuracy[False] + 0.1


def test_the_embedding_start_without_umap_learn_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # import umap then raises ImportError
    with pytest.raises(GMVAEError, match=r"needs umap-learn: pip install 'gmvae\[umap\]'"):
        fit_embedding(np.zeros((30, 4)), k=3, seed=0)
