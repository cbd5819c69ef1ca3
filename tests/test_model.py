import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from gmvae.losses import (
    categorical_kl_uniform,
    gaussian_log_density,
    reconstruction_nll,
    weighted_loss,
)
from gmvae.model import GMVAENet, ModelConfig
from gmvae.training import TERMS


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


@pytest.mark.parametrize("hard", [False, True])
def test_forward_returns_a_finite_term_per_example_that_backpropagates(hard):
    model = small_model()
    terms = model(torch.rand(7, 16), temperature=0.7, hard=hard)
    assert set(terms) == {"rec", "gauss", "cat", "logits"} and terms["logits"].shape == (7, 3)
    assert all(terms[t].shape == (7,) and torch.isfinite(terms[t]).all() for t in TERMS)
    weighted_loss(terms, 1, 1, 1).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_terms_stay_finite_on_all_zero_and_all_one_images(likelihood):
    model = small_model(likelihood=likelihood)
    for x in (torch.zeros(4, 16), torch.ones(4, 16)):
        assert all(torch.isfinite(t).all() for t in model(x, temperature=0.5).values())  # noqa
        assert torch.isfinite(model.elbo(x, torch.randn(3, 2))).all()


def test_elbo_weights_each_one_hot_cluster_by_q_y_given_x():
    """Against a plain loop over clusters and torch.distributions, with the noise at zero."""
    model = small_model().eval()
    x = torch.rand(5, 16)
    with torch.no_grad():
        q = model.cluster_logits(x).softmax(-1)
        expected = -categorical_kl_uniform(model.cluster_logits(x))
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


def test_neighbour_term_is_minus_log_probability_that_both_fall_in_one_cluster():
    model = small_model()
    x, neighbour = torch.rand(5, 16), torch.rand(5, 16)
    terms = model(x, temperature=0.5, neighbour=neighbour)
    q, q_neighbour = (model.cluster_logits(v).softmax(-1) for v in (x, neighbour))
    torch.testing.assert_close(terms["neighbour"], -(q * q_neighbour).sum(-1).log())
    terms["neighbour"].sum().backward()  # both sides of the pair are trained
    assert model.y_encoder[0].weight.grad.abs().sum() > 0


def test_adversarial_step_changes_q_y_more_than_a_random_step_of_the_same_length():
    model = small_model()
    x = torch.rand(64, 16)
    length = torch.full((64,), 0.5)
    logits = model.cluster_logits(x).detach()
    adversarial = model.adversarial_change(x, logits, torch.randn(64, 16), length)
    random_step = torch.randn(64, 16)
    random_step = random_step * (length / random_step.norm(dim=1))[:, None]
    target = logits.log_softmax(-1)
    moved = model.cluster_logits(x + random_step).log_softmax(-1)
    random_change = (target.exp() * (target - moved)).sum(-1)
    assert (adversarial >= 0).all()
    assert adversarial.mean() > 2 * random_change.mean()


def test_without_elbo_to_clusters_only_the_clustering_terms_train_q_y():
    model = small_model(y_batch_norm=True)
    x = torch.rand(8, 16)
    terms = model(x, temperature=0.5, elbo_to_clusters=False)
    (terms["rec"] + terms["gauss"] + terms["cat"]).sum().backward()
    assert all(p.grad is None for p in model.y_encoder.parameters())
    assert model.decoder[0].weight.grad.abs().sum() > 0
    terms["logits"].sum().backward()
    assert model.y_encoder[0].weight.grad.abs().sum() > 0


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
