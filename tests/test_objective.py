"""The objective: every term it optimises, each regulariser's value, and the total it reports."""

import math

import pytest
import torch

from gmvae.data.batches import BatchSource
from gmvae.data.neighbours import NeighbourSearch
from gmvae.errors import GMVAEError
from gmvae.model.network import GMVAENet, ModelConfig
from gmvae.train.objective import (
    REGULARISERS,
    SEMI_SUPERVISED_CONSISTENCY,
    START_WEIGHT,
    Objective,
    ObjectiveConfig,
    Progress,
    StepInputs,
    usage_shortfall,
)

CPU = torch.device("cpu")
EVERY_TERM = {term.weight: 0.5 for term in REGULARISERS}


def objective_for(
    x: torch.Tensor, labels=None, likelihood: str = "bernoulli", **settings
) -> Objective:
    torch.manual_seed(0)
    config = ModelConfig(
        x_dim=16, image_shape=(4, 4), n_clusters=3, z_dim=2, hidden_dim=8, likelihood=likelihood
    )
    objective = Objective(GMVAENet(config), ObjectiveConfig(**settings))
    objective.prepare(BatchSource(x, CPU, labels), NeighbourSearch(x, 0, CPU))
    # what a start on the inputs would hold q(y|x) to (Trainer._phases_before_training)
    objective.start_probabilities = torch.rand(len(x), 3).softmax(-1)
    return objective


def step(objective: Objective, x: torch.Tensor, labels=None, done: int = 1):
    rows = torch.arange(len(x))
    inputs = StepInputs(x=x, rows=rows, mine=rows, labels=labels, world_size=1)
    return objective(inputs, Progress(epoch=0, done=done, steps_per_epoch=10))


@pytest.mark.parametrize("hard", [False, True])
def test_every_term_is_recorded_finite_and_the_total_backpropagates_to_every_parameter(hard):
    x = torch.rand(12, 16)
    labels = torch.tensor([0, 1, 2] + [-1] * 9)
    objective = objective_for(x, labels, gumbel_hard=hard, **EVERY_TERM)
    out = step(objective, x, labels)
    assert set(out.sums) == {"rec", "gauss", "cat", "loss", *(t.name for t in REGULARISERS)}
    assert all(torch.isfinite(v) for v in out.sums.values())
    out.loss.backward()
    assert all(p.grad is not None for p in objective.network.parameters())


def test_the_recorded_loss_is_the_optimised_total_of_every_weighted_term():
    """With no warm-up, loss = mean(w_rec rec + w_gauss gauss + w_cat cat) + sum of w * term."""
    x = torch.rand(12, 16)
    weights = {"w_rec": 2.0, "w_gauss": 0.5, "w_cat": 3.0, **EVERY_TERM, "neighbour_warmup": 0}
    out = step(objective_for(x, **weights), x)
    means = {name: float(value) / len(x) for name, value in out.sums.items()}
    loss = float(out.loss.detach())
    expected = 2 * means["rec"] + 0.5 * means["gauss"] + 3 * means["cat"]
    expected += sum(0.5 * means[t.name] for t in REGULARISERS if t.name != "labelled")
    assert means["loss"] == pytest.approx(loss) == pytest.approx(expected, rel=1e-5)


def test_warm_ups_scale_their_terms_and_are_reported_by_the_schedule():
    x = torch.rand(12, 16)
    objective = objective_for(x, w_neighbours=1.0, neighbour_warmup=4, kl_warmup=2)
    at = Progress(epoch=0, done=2, steps_per_epoch=10)
    assert objective.schedule(at) == {"tau": 1.0, "kl_weight": 0.1, "neighbour_weight": 0.5}
    # At step 0 every warmed-up weight is 0: only the reconstruction is optimised.
    out = step(objective, x, done=0)
    assert float(out.loss.detach()) == pytest.approx(float(out.sums["rec"]) / len(x), rel=1e-6)


def test_neighbour_term_is_minus_log_probability_that_both_fall_in_one_cluster():
    x = torch.rand(12, 16)
    objective = objective_for(x, w_neighbours=1.0, n_neighbours=1, neighbour_warmup=0)
    out = step(objective, x)
    net = objective.network
    q = net.component_logits(x).softmax(-1)
    q_neighbour = net.component_logits(x[objective.neighbours[:, 0]]).softmax(-1)
    expected = -(q * q_neighbour).sum(-1).log().sum()
    torch.testing.assert_close(out.sums["neighbour"], expected)


def test_adversarial_step_changes_q_y_more_than_a_random_step_of_the_same_length():
    x = torch.rand(64, 16)
    objective = objective_for(x, w_adversarial=1.0)
    objective.adversarial_length = torch.full((64,), 0.5)
    adversarial = step(objective, x).sums["adversarial"] / 64
    net = objective.network
    random_step = torch.randn(64, 16)
    random_step = random_step * (0.5 / random_step.norm(dim=1))[:, None]
    target = net.component_logits(x).log_softmax(-1)
    moved = net.component_logits(x + random_step).log_softmax(-1)
    random_change = (target.exp() * (target - moved)).sum(-1)
    assert adversarial > 2 * random_change.mean()


def test_without_elbo_to_clusters_only_the_clustering_terms_train_q_y():
    x = torch.rand(8, 16)
    objective = objective_for(x, elbo_to_clusters=False, w_confidence=0.0, w_balance=1.0)
    objective.config.w_balance = 0.0  # the ELBO alone, past the setting's check
    step(objective, x).loss.backward()
    assert all(p.grad is None for p in objective.network.y_encoder.parameters())
    assert objective.network.decoder[0].weight.grad.abs().sum() > 0


def test_usage_shortfall_is_zero_when_balanced_and_log_k_when_collapsed():
    balanced = torch.eye(4).repeat(2, 1) * 50
    assert abs(float(usage_shortfall(balanced))) < 1e-5
    collapsed = torch.tensor([[50.0, 0, 0, 0]]).repeat(8, 1)
    assert abs(float(usage_shortfall(collapsed)) - math.log(4)) < 1e-5


def test_usage_shortfall_aimed_at_proportions_is_zero_there_and_positive_at_equal_use():
    target = torch.tensor([0.6, 0.3, 0.1]).log()
    at_target = torch.eye(3)[[0] * 6 + [1] * 3 + [2]] * 50
    assert abs(float(usage_shortfall(at_target, target))) < 1e-5
    assert float(usage_shortfall(torch.eye(3).repeat(3, 1) * 50, target)) > 0.1


def test_auto_proportions_held_equal_give_the_numbers_of_equal_proportions():
    x = torch.rand(8, 16)
    sums = []
    for proportions in ("equal", "auto"):
        torch.manual_seed(0)
        config = ModelConfig(x_dim=16, image_shape=(4, 4), n_clusters=3, z_dim=2, hidden_dim=8,
                             likelihood="bernoulli", proportions=proportions)  # fmt: skip
        objective = Objective(GMVAENet(config), ObjectiveConfig(w_balance=1.0))
        objective.prepare(BatchSource(x, CPU), NeighbourSearch(x, 0, CPU))
        torch.manual_seed(1)
        sums.append(step(objective, x).sums)
    assert sums[0].keys() == sums[1].keys()
    assert all(torch.equal(sums[0][name], sums[1][name]) for name in sums[0])


def test_with_learned_proportions_cat_is_kl_to_them_and_only_they_learn_from_it():
    x = torch.rand(8, 16)
    torch.manual_seed(0)
    config = ModelConfig(x_dim=16, image_shape=(4, 4), n_clusters=3, z_dim=2, hidden_dim=8,
                         likelihood="bernoulli", proportions="learned")  # fmt: skip
    objective = Objective(GMVAENet(config), ObjectiveConfig(elbo_to_clusters=False, w_balance=1.0))
    objective.prepare(BatchSource(x, CPU), NeighbourSearch(x, 0, CPU))
    net = objective.network
    with torch.no_grad():
        net.proportion_logits.copy_(torch.tensor([0.6, 0.3, 0.1]).log())
    out = step(objective, x)
    log_q = net.component_logits(x).log_softmax(-1)
    expected = (log_q.exp() * (log_q - torch.tensor([0.6, 0.3, 0.1]).log())).sum(-1)
    assert torch.allclose(out.sums["cat"], expected.sum(), atol=1e-4)
    objective.config.w_balance = 0.0  # the ELBO alone: p(y) learns, q(y|x) does not
    net.zero_grad()
    step(objective, x).loss.backward()
    assert net.proportion_logits.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.y_encoder.parameters())


@pytest.mark.parametrize(
    "settings",
    [{"w_rec": -1.0}, {"w_balance": float("nan")}, {"w_gauss": float("inf")}, {"tau_min": 0.0}],
)
def test_negative_or_non_finite_weights_are_refused(settings):
    with pytest.raises(GMVAEError):
        ObjectiveConfig(**settings).validate()


def test_unset_consistency_is_on_for_labelled_images_only_and_a_set_weight_is_kept():
    unset = ObjectiveConfig()
    assert unset.for_inputs(images=True, labelled=True).w_consistency == SEMI_SUPERVISED_CONSISTENCY
    assert unset.for_inputs(images=True).w_consistency == 0.0
    assert unset.for_inputs(images=False, labelled=True).w_consistency == 0.0
    chosen = ObjectiveConfig(w_consistency=0.5)
    assert chosen.for_inputs(images=True).w_consistency == 0.5
    assert chosen.for_inputs(images=True, labelled=True).w_consistency == 0.5
    assert chosen.for_inputs(images=False).w_consistency == 0.0
    with pytest.raises(GMVAEError):
        ObjectiveConfig(w_consistency=-1.0).validate()


def test_unset_start_weight_holds_a_start_harder_with_labels_and_only_a_tables_without():
    unset = ObjectiveConfig()
    labelled = unset.for_inputs(images=False, labelled=True, holds_start=True)
    unlabelled = unset.for_inputs(images=False, holds_start=True)
    assert labelled.w_start == START_WEIGHT["labelled"] > unlabelled.w_start
    assert unlabelled.w_start == START_WEIGHT["unlabelled"] > 0
    assert unset.for_inputs(images=False, labelled=True).w_start == 0.0
    assert unset.for_inputs(images=True, holds_start=True).w_start == 0.0  # measured on tables
    assert unset.for_inputs(images=True, labelled=True, holds_start=True).w_start > 0
    chosen = ObjectiveConfig(w_start=0.5)
    assert chosen.for_inputs(images=False, holds_start=True).w_start == 0.5


def test_start_term_is_the_cross_entropy_to_the_start_probabilities_and_off_without_them():
    x = torch.rand(6, 16)
    objective = objective_for(x, w_start=2.0)
    start = objective.start_probabilities
    out = step(objective, x)
    log_q = objective.network.component_logits(x).log_softmax(-1)
    torch.testing.assert_close(out.sums["start"], -(start * log_q).sum())
    objective.start_probabilities = None
    assert "start" not in step(objective, x).sums


def test_temperature_follows_the_reference_schedule():
    config = ObjectiveConfig()
    assert config.temperature(0) == 1.0
    assert config.temperature(10) == pytest.approx(math.exp(-0.13862944))
    assert config.temperature(49) == pytest.approx(0.50697, abs=1e-5)
    assert config.temperature(80) == 0.5  # floored at tau_min


def test_labelled_rows_take_their_class_as_y_and_only_they_add_a_cross_entropy():
    x, labels = torch.rand(4, 16), torch.tensor([2, -1, 0, -1])
    objective = objective_for(x, labels)
    net = objective.network
    torch.manual_seed(1)
    out = step(objective, x, labels)
    known = labels >= 0
    nll = torch.nn.functional.cross_entropy(net.component_logits(x)[known], labels[known])
    torch.testing.assert_close(out.sums["labelled"] / len(x), nll)  # the labelled rows' mean
    log_q = net.component_logits(x).log_softmax(-1)
    cat = (log_q.exp() * log_q).sum(-1) + math.log(3)
    expected = 2 * math.log(3) + cat[~known].sum()  # a labelled row's y is one-hot
    torch.testing.assert_close(out.sums["cat"], expected)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_terms_stay_finite_on_all_zero_and_all_one_images(likelihood):
    for x in (torch.zeros(8, 16), torch.ones(8, 16)):
        objective = objective_for(x, likelihood=likelihood, **EVERY_TERM)
        assert all(torch.isfinite(v) for v in step(objective, x).sums.values())
