import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from gmvae.model.losses import (
    categorical_kl_uniform,
    gaussian_log_density,
    reconstruction_nll,
    weighted_loss,
)
from gmvae.model.network import GMVAENet, ModelConfig


def small_model(**kwargs) -> GMVAENet:
    kwargs.setdefault("likelihood", "bernoulli")
    torch.manual_seed(0)
    return GMVAENet(
        ModelConfig(x_dim=16, image_shape=(4, 4), n_clusters=3, z_dim=2, hidden_dim=8, **kwargs)
    )


def test_gaussian_log_density_is_the_diagonal_normal_log_pdf():
    z, mean, var = torch.randn(5, 3), torch.randn(5, 3), torch.rand(5, 3) + 0.1
    expected = Normal(mean, var.sqrt()).log_prob(z).sum(-1)
    torch.testing.assert_close(gaussian_log_density(z, mean, var), expected)


def test_reconstruction_terms_are_negative_log_likelihoods():
    x, out = torch.randint(0, 2, (4, 6)).float(), torch.randn(4, 6)
    torch.testing.assert_close(
        reconstruction_nll(x, out, "bernoulli"), -Bernoulli(logits=out).log_prob(x).sum(-1)
    )
    torch.testing.assert_close(
        reconstruction_nll(x, out, "gaussian"),
        -Normal(out, math.sqrt(0.5)).log_prob(x).sum(-1),
    )


def test_categorical_kl_is_zero_for_uniform_and_log_k_for_one_hot():
    assert categorical_kl_uniform(torch.zeros(2, 4)).abs().max() < 1e-6
    peaked = torch.tensor([[1000.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(categorical_kl_uniform(peaked), torch.tensor([math.log(4)]))


def test_weighted_loss_averages_weighted_terms_over_the_batch():
    terms = {
        "rec": torch.tensor([1.0, 3.0]),
        "gauss": torch.tensor([2.0, 2.0]),
        "cat": torch.ones(2),
    }
    assert weighted_loss(terms, 1.0, 0.5, 2.0).item() == pytest.approx(2 + 1 + 2)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_the_exact_elbo_stays_finite_on_all_zero_and_all_one_images(likelihood):
    model = small_model(likelihood=likelihood)
    for x in (torch.zeros(4, 16), torch.ones(4, 16)):
        assert torch.isfinite(model.elbo(x, torch.randn(3, 2))).all()


def test_forward_gives_every_distribution_parameter_and_a_labelled_row_its_class_as_y():
    model = small_model()
    out = model(torch.rand(7, 16), temperature=0.7, labels=torch.tensor([2, -1, 0, -1, -1, 1, -1]))
    assert out.logits.shape == out.y.shape == (7, 3) and out.decoded.shape == (7, 16)
    assert all(v.shape == (7, 2) for v in (out.z, out.z_mean, out.z_var, out.prior_var))
    torch.testing.assert_close(out.y[[0, 2, 5]], torch.eye(3)[[2, 0, 1]])
    assert (out.y[1] < 1).all() and (out.z_var > 0).all()


def test_elbo_weights_each_one_hot_cluster_by_q_y_given_x():
    """Against a plain loop over clusters and torch.distributions, with the noise at zero."""
    model = small_model().eval()
    x = torch.rand(5, 16)
    with torch.no_grad():
        q = model.component_logits(x).softmax(-1)
        expected = -categorical_kl_uniform(model.component_logits(x))
        for k in range(3):
            y = torch.nn.functional.one_hot(torch.full((5,), k), 3).float()
            mean, var = model.encode_z(x, y)
            prior_mean, prior_var = model.prior(y)
            kl = kl_divergence(Normal(mean, var.sqrt()), Normal(prior_mean, prior_var.sqrt()))
            per_x = -reconstruction_nll(x, model.decode(mean), "bernoulli") - kl.sum(-1)
            expected += q[:, k] * per_x
        torch.testing.assert_close(model.elbo(x, torch.zeros(3, 2)), expected)


def test_elbo_of_an_example_does_not_depend_on_its_batch():
    model = small_model().eval()
    x = torch.rand(6, 16)
    noise = torch.randn(3, 2)
    with torch.no_grad():
        whole = model.elbo(x, noise)
        torch.testing.assert_close(model.elbo(x.flip(0), noise), whole.flip(0))
        torch.testing.assert_close(model.elbo(x[2:4], noise), whole[2:4])


def test_unknown_likelihood_is_rejected():
    with pytest.raises(ValueError, match="likelihood"):
        small_model(likelihood="poisson")


def test_config_round_trips_through_a_dict():
    config = ModelConfig(x_dim=16, image_shape=(4, 4), n_clusters=3)
    assert ModelConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_q_y_takes_its_own_width_and_batch_normalisation_in_both_architectures(architecture):
    config = ModelConfig(x_dim=64, image_shape=(8, 8), hidden_dim=16, y_hidden_dim=24,
                         y_batch_norm=True, architecture=architecture,
                         likelihood="bernoulli")  # fmt: skip
    q_y = GMVAENet(config).y_encoder
    norms = [m for m in q_y.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(norms) in (2, 3)  # after each hidden layer: mlp 2 linear, conv 2 conv + linear
    assert q_y[-1].in_features == 24 and q_y[-1].out_features == 10
    assert q_y(torch.rand(5, 64)).shape == (5, 10)
