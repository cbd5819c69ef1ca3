"""Over-clustering: components grouped into clusters by the rows q(y|x) shares between them,
and every cluster-level output of a model with more components than clusters."""

import numpy as np
import pytest
import torch

from gmvae import GMVAE
from gmvae.errors import GMVAEError
from gmvae.model import inference
from gmvae.model.checkpoint import load_model, save_model
from gmvae.model.network import GMVAENet, ModelConfig
from gmvae.train.merging import group_components


def shared_rows(groups: list[list[int]], rows_per_group: int = 50, seed: int = 0) -> np.ndarray:
    """q(y|x) (N, M) where each group's rows spread over that group's components only."""
    rng = np.random.default_rng(seed)
    m = sum(len(g) for g in groups)
    blocks = []
    for group in groups:
        block = np.zeros((rows_per_group, m))
        block[:, group] = rng.dirichlet(np.ones(len(group)), rows_per_group)
        blocks.append(block)
    return np.concatenate(blocks)


def test_components_sharing_rows_are_grouped_whatever_their_number():
    probabilities = shared_rows([[0, 3, 5], [1], [2, 4]])
    np.testing.assert_array_equal(group_components(probabilities, 3), [0, 1, 2, 0, 2, 0])


def test_grouping_leaves_exactly_the_asked_clusters_numbered_by_their_first_component():
    probabilities = np.random.default_rng(1).dirichlet(np.ones(8), 200)
    for k in (1, 3, 8):
        cluster = group_components(probabilities, k)
        assert sorted(set(cluster)) == list(range(k))
        firsts = [int(np.flatnonzero(cluster == c)[0]) for c in range(k)]
        assert firsts == sorted(firsts)


def test_components_are_grouped_by_where_moved_copies_of_their_rows_go():
    probabilities = np.eye(4)[np.repeat(np.arange(4), 10)]  # confident: no row is shared
    moved = probabilities[:, [1, 0, 3, 2]] * 0.3 + probabilities * 0.7  # 0 <-> 1, 2 <-> 3
    np.testing.assert_array_equal(group_components(probabilities, 2, moved), [0, 0, 1, 1])


def test_an_empty_component_is_grouped_without_nan():
    probabilities = shared_rows([[0, 1], [2, 3]])
    probabilities = np.insert(probabilities, 4, 0.0, axis=1)  # component 4: no row at all
    cluster = group_components(probabilities, 2)
    assert cluster[0] == cluster[1] != cluster[2] == cluster[3]


def over_clustered_model() -> GMVAENet:
    torch.manual_seed(0)
    config = ModelConfig(
        x_dim=16, image_shape=(4, 4), n_clusters=2, components_per_cluster=2, z_dim=2,
        hidden_dim=8, likelihood="bernoulli",
    )  # fmt: skip
    model = GMVAENet(config)
    model.component_cluster.copy_(torch.tensor([1, 0, 0, 1]))
    return model.eval()


def test_cluster_probabilities_and_proportions_sum_each_clusters_components():
    model = over_clustered_model()
    x = torch.rand(6, 16)
    q = model.component_logits(x).softmax(-1).detach().numpy()
    clusters = inference.cluster_probabilities(model, x)
    np.testing.assert_allclose(clusters[:, 0], q[:, 1] + q[:, 2], rtol=1e-5)
    np.testing.assert_allclose(clusters[:, 1], q[:, 0] + q[:, 3], rtol=1e-5)
    np.testing.assert_allclose(inference.proportions(model), [0.5, 0.5])


def test_samples_of_a_cluster_come_from_its_own_components():
    model = over_clustered_model()
    with torch.no_grad():  # p(z|y): component m's mean is far out along z's first axis
        model.prior_mean.weight.copy_(torch.tensor([[100.0, -100.0, -200.0, 200.0], [0, 0, 0, 0]]))
        model.prior_var.weight.fill_(-20.0)  # variance near 0
        model.prior_var.bias.fill_(-20.0)
        model.prior_mean.bias.zero_()
    decoded_from = {
        c: inference.sample(model, np.full(400, c), seed=1) for c in range(2)
    }  # the decoder maps each component's mean to one image
    images = {
        m: model.mean_image(model.decode(model.prior(torch.eye(4)[m : m + 1])[0])).detach().numpy()
        for m in range(4)
    }

    def component_of(sample: np.ndarray) -> int:
        return int(np.argmin([np.abs(sample - images[m]).max() for m in range(4)]))

    seen = {c: {component_of(s) for s in decoded_from[c]} for c in range(2)}
    assert seen == {0: {1, 2}, 1: {0, 3}}


def test_the_grouping_is_saved_and_loaded_with_the_weights(tmp_path):
    model = over_clustered_model()
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.component_cluster.tolist() == [1, 0, 0, 1]
    x = torch.rand(5, 16)
    np.testing.assert_array_equal(
        inference.cluster_probabilities(loaded, x), inference.cluster_probabilities(model, x)
    )


def test_an_over_clustered_fit_groups_its_components_into_k_clusters(digits):
    x = digits[0][:400].reshape(-1, 8, 8)
    model = GMVAE(
        n_clusters=4, latent_dim=4, hidden_dim=32, epochs=2, batch_size=32, random_state=0,
        settings={"model": {"y_hidden_dim": 64, "components_per_cluster": 2}},
    ).fit(x)  # fmt: skip
    assert model.model_.config.n_components == 8
    assert sorted(set(model.model_.component_cluster.tolist())) == [0, 1, 2, 3]
    proba = model.predict_proba(x)
    assert proba.shape == (400, 4)
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    assert model.weights_.shape == (4,)
    assert "moved_components" in model.history_[-1]  # the hook ran after each epoch


def test_the_default_keeps_one_component_per_cluster_and_labels_refuse_more(digits):
    x, y = digits
    images = GMVAE(n_clusters=3, latent_dim=4, hidden_dim=32, epochs=1, random_state=0)
    assert images.fit(x[:200].reshape(-1, 8, 8)).model_.config.n_components == 3
    labelled = np.where(np.arange(400) % 20 == 0, y[:400], -1)
    semi = GMVAE(
        n_clusters=10, latent_dim=4, hidden_dim=32, epochs=1, random_state=0,
        semi_supervised=True, settings={"model": {"components_per_cluster": 2}},
    )  # fmt: skip
    with pytest.raises(GMVAEError, match="components-per-cluster above 1 is for unlabelled"):
        semi.fit(x[:400].reshape(-1, 8, 8), labelled)
