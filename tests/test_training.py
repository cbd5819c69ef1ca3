import dataclasses
import math

import numpy as np
import pytest
import torch

from gmvae.data.batches import BatchSource
from gmvae.data.labels import draw_per_class
from gmvae.errors import GMVAEError
from gmvae.model import inference
from gmvae.model.network import GMVAENet, ModelConfig
from gmvae.run.metrics import cluster_accuracy
from gmvae.train.distributed import resolve_device
from gmvae.train.naming import permute_clusters
from gmvae.train.objective import START_WEIGHT
from gmvae.train.trainer import NonFiniteError, TrainConfig, Trainer, TrainingInterrupted
from tests.trainers import make_trainer


def train_digits(x: np.ndarray, seed: int, epochs: int) -> Trainer:
    torch.manual_seed(seed)
    model = GMVAENet(
        ModelConfig(x_dim=64, image_shape=(8, 8), z_dim=8, hidden_dim=128, likelihood="bernoulli")
    )
    trainer = make_trainer(model, epochs=epochs, batch_size=64, seed=seed)
    trainer.fit(torch.as_tensor(x), progress=False)
    return trainer


def test_device_names_resolve_or_fail_clearly():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(GMVAEError, match="unknown device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(GMVAEError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_invalid_settings_are_rejected_before_training():
    model = GMVAENet(ModelConfig(x_dim=4, image_shape=None, hidden_dim=4, likelihood="gaussian"))
    with pytest.raises(GMVAEError, match="at least 1"):
        make_trainer(model, batch_size=0)
    with pytest.raises(GMVAEError, match="positive"):
        make_trainer(model, lr=-1.0)


def test_training_on_digits_lowers_the_loss_and_clusters_above_chance(digits):
    x, y = digits
    trainer = train_digits(x, seed=0, epochs=15)
    history = trainer.history
    assert [row["epoch"] for row in history] == list(range(1, 16))
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]
    assert {"loss", "rec", "gauss", "cat", "tau", "lr", "seconds"} <= set(history[0])
    clusters = inference.cluster_probabilities(trainer.model, x).argmax(1)
    chance = cluster_accuracy(y, np.random.default_rng(0).integers(0, 10, len(y)), 10)
    assert cluster_accuracy(y, clusters, 10) > 1.5 * chance


def test_same_seed_gives_identical_training_on_cpu(digits):
    x = digits[0][:400]
    first, second = (train_digits(x, seed=3, epochs=2) for _ in range(2))
    assert first.history[-1]["loss"] == second.history[-1]["loss"]
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)
    other = train_digits(x, seed=4, epochs=2)
    assert other.history[-1]["loss"] != first.history[-1]["loss"]


def test_monitor_and_epoch_callbacks_see_every_epoch(digits):
    x = digits[0][:200]
    torch.manual_seed(0)
    trainer = make_trainer(
        GMVAENet(ModelConfig(x_dim=64, image_shape=(8, 8), hidden_dim=16, likelihood="bernoulli")),
        epochs=3,
    )
    seen = []
    trainer.fit(torch.as_tensor(x), monitor=lambda: {"probe": 1.0}, on_epoch=seen.append)
    assert [row["epoch"] for row in seen] == [1, 2, 3]
    assert all(row["probe"] == 1.0 and "eval_seconds" in row for row in seen)


def tiny_trainer(tmp_path, y_batch_norm: bool = False, **config) -> Trainer:
    torch.manual_seed(0)
    model = GMVAENet(
        ModelConfig(
            x_dim=64,
            image_shape=(8, 8),
            z_dim=4,
            hidden_dim=32,
            likelihood="bernoulli",
            y_batch_norm=y_batch_norm,
        )
    )
    settings = {"epochs": 3, "batch_size": 50, **config}
    return make_trainer(model, tmp_path / "ckpt.pt", **settings)


IMSAT_TERMS = dict(
    y_batch_norm=True, elbo_to_clusters=False, w_adversarial=1.0, w_confidence=0.1, w_balance=0.4
)


@pytest.mark.parametrize(
    "objective, per_class, stop_epoch",
    [
        ({}, None, 2),
        (IMSAT_TERMS, None, 2),
        (IMSAT_TERMS, 3, 2),
        # the start's probabilities, which the start term holds q(y|x) to, come back with the
        # checkpoint: without them the resumed run would train without the term
        ({**IMSAT_TERMS, "mixture_start": "inputs", "w_start": 1.0}, 3, 2),
        # stopped in epoch 1, after the pretraining and before the first checkpoint: resuming
        # must not pretrain again (the weights would then differ from the straight run's)
        ({"pretrain_epochs": 1, "kl_warmup": 1}, None, 1),
        ({"lr_schedule": "cosine"}, None, 2),
    ],
    ids=[
        "reference",
        "imsat-terms",
        "semi-supervised",
        "semi-supervised-start-term",
        "pretrained-kl-warmup",
        "cosine-lr",
    ],
)
def test_resuming_from_a_mid_epoch_checkpoint_continues_exactly(
    digits, tmp_path, objective, per_class, stop_epoch
):
    x = torch.as_tensor(digits[0][:500])
    labels = None if per_class is None else draw_per_class(digits[1][:500], per_class, seed=0)
    straight = tiny_trainer(tmp_path / "a", **objective)
    straight.fit(x, progress=False, labels=labels)

    stopped = tiny_trainer(tmp_path / "b", **objective)
    calls = {"n": 0}
    original_forward = stopped.model.forward

    def forward_then_stop(*args, **kwargs):  # ask for a stop at step 4 of stop_epoch
        calls["n"] += 1
        if calls["n"] == 10 * (stop_epoch - 1) + 4:
            stopped.stop_requested = "SIGTERM"
        return original_forward(*args, **kwargs)

    stopped.model.forward = forward_then_stop
    message = f"SIGTERM in epoch {stop_epoch}, after step 4 of 10"
    with pytest.raises(TrainingInterrupted, match=message):
        stopped.fit(x, progress=False, labels=labels)

    resumed = tiny_trainer(tmp_path / "b", **objective)
    resumed.resume()
    assert len(resumed.history) == stop_epoch - 1
    resumed.fit(x, progress=False, labels=labels)
    drop = {"seconds"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed.history] == [
        {k: v for k, v in r.items() if k not in drop} for r in straight.history
    ]
    for a, b in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(a, b)
    if "pretrain_epochs" in objective:
        assert straight.history[0]["pretrain_rec"] > 0
        assert "pretrain_rec" not in straight.history[1]


def test_nonfinite_loss_stops_naming_epoch_and_term_and_keeps_the_good_checkpoint(digits, tmp_path):
    x = torch.as_tensor(digits[0][:500])
    trainer = tiny_trainer(tmp_path, epochs=1)
    trainer.fit(x, progress=False)
    good = (tmp_path / "ckpt.pt").read_bytes()
    trainer.config = TrainConfig(epochs=2, batch_size=50, lr=1e10)  # absurd: the weights blow up
    with pytest.raises(NonFiniteError, match=r"non-finite loss term '\w+' in epoch 2, step \d+"):
        trainer.fit(x, progress=False)
    assert (tmp_path / "ckpt.pt").read_bytes() == good


def test_skip_policy_skips_a_bad_step_and_stops_past_the_limit(digits, tmp_path):
    x = torch.as_tensor(digits[0][:500])
    trainer = tiny_trainer(tmp_path, epochs=1, on_nonfinite="skip", max_skipped_steps=2)
    original_forward = trainer.model.forward
    calls = {"n": 0}

    def forward_with_a_nan(*args, **kwargs):
        calls["n"] += 1
        out = original_forward(*args, **kwargs)
        if calls["n"] in (3, 5, 7):  # three poisoned steps, one more than allowed
            out = dataclasses.replace(out, prior_var=out.prior_var * float("nan"))  # gauss only
        return out

    trainer.model.forward = forward_with_a_nan
    with pytest.raises(NonFiniteError, match="'gauss' in epoch 1, step 7 .*so far: 3"):
        trainer.fit(x, progress=False)

    trainer = tiny_trainer(tmp_path, epochs=1, on_nonfinite="skip", max_skipped_steps=2)
    original_forward, calls["n"] = trainer.model.forward, 0
    trainer.model.forward = forward_with_a_nan
    calls["n"] = 4  # now only two steps are poisoned (calls 5 and 7): within the limit
    history = trainer.fit(x, progress=False)
    assert history[0]["skipped_steps"] == 2 and math.isfinite(history[0]["loss"])
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_constant_feature_columns_train_finitely_with_a_gaussian_likelihood(tmp_path):
    x = torch.randn(200, 6)
    x[:, 2] = 0.0  # a constant column
    x[:, 4] = 5.0
    torch.manual_seed(0)
    model = GMVAENet(ModelConfig(x_dim=6, image_shape=None, likelihood="gaussian", hidden_dim=16))
    history = make_trainer(model, epochs=3).fit(x, progress=False)
    assert all(math.isfinite(row["loss"]) for row in history)


def test_imsat_terms_train_a_batch_normalised_q_y_with_a_last_batch_of_one(digits, tmp_path):
    x = torch.as_tensor(digits[0][:129])  # batches of 64, 64 and 1: the 1 is skipped
    trainer = tiny_trainer(tmp_path, epochs=1, batch_size=64, w_neighbours=1.0, **IMSAT_TERMS)
    trainer.fit(x, progress=False)
    assert math.isfinite(trainer.history[0]["loss"])
    assert trainer.objective.neighbours.shape == (
        129,
        5,
    )  # the neighbour term's 5, from one search of 10
    # 0.25 of the distance to the 10th nearest neighbour: positive, and at least 0.25 of the
    # distance to the nearest other example
    nearest = torch.cdist(x, x).fill_diagonal_(float("inf")).min(1).values
    lengths = trainer.objective.adversarial_length
    assert (lengths > 0).all() and len(lengths) == 129
    assert (lengths >= 0.25 * nearest - 1e-5).all()


def test_q_y_without_the_elbo_needs_a_clustering_term():
    model = GMVAENet(ModelConfig(x_dim=4, image_shape=None, hidden_dim=4, likelihood="gaussian"))
    with pytest.raises(GMVAEError, match="clustering term"):
        make_trainer(model, elbo_to_clusters=False)


def test_three_labels_per_class_make_cluster_k_class_k_on_digits(digits):
    x, y = digits
    labels = draw_per_class(y, 3, seed=0)
    torch.manual_seed(0)
    model = GMVAENet(
        ModelConfig(
            x_dim=64, image_shape=(8, 8), z_dim=8, hidden_dim=128, likelihood="bernoulli",
            y_batch_norm=True,
        )
    )  # fmt: skip
    trainer = make_trainer(model, epochs=10, batch_size=64, labelled_batch_size=16, **{
        k: v for k, v in IMSAT_TERMS.items() if k != "y_batch_norm"
    })  # fmt: skip
    trainer.fit(torch.as_tensor(x), progress=False, labels=labels)
    predicted = inference.cluster_probabilities(trainer.model, x).argmax(1)
    unlabelled = labels < 0
    # Without matching clusters to classes: 30 labels among 1,797 digits set every class.
    accuracy = (predicted[unlabelled] == y[unlabelled]).mean()
    assert accuracy > 0.85
    # Scrambled names (cluster k now holds class k + 1) come back from the labelled examples'
    # neighbours alone.
    permute_clusters(trainer.model, trainer.optimizer, torch.arange(10).roll(-1))
    scrambled = inference.cluster_probabilities(trainer.model, x).argmax(1)
    assert (scrambled == (predicted - 1) % 10).all()
    source = BatchSource(torch.as_tensor(x), torch.device("cpu"), labels)
    named = trainer.naming.after_epoch(trainer.model, trainer.optimizer, source, trainer.world)
    assert named == {"renamed_clusters": 10}
    renamed = inference.cluster_probabilities(trainer.model, x).argmax(1)
    assert (renamed == predicted).all()


def test_labels_join_only_after_the_warmup_epochs(digits, tmp_path, monkeypatch):
    x, y = digits
    trainer = tiny_trainer(tmp_path, epochs=3, batch_size=100, labelled_batch_size=10,
                           label_warmup=2)  # fmt: skip
    sizes = []
    original = BatchSource.read
    monkeypatch.setattr(
        BatchSource, "read", lambda self, rows: (sizes.append(len(rows)), original(self, rows))[1]
    )
    trainer.fit(torch.as_tensor(x[:300]), progress=False, labels=draw_per_class(y[:300], 2, 0))
    naming = len(trainer.naming.neighbours.flatten())  # the end-of-epoch naming reads these
    per_epoch = [100, 100, 100, naming]
    assert sizes == per_epoch * 2 + [110, 110, 110, naming]


def test_kl_warmup_raises_the_kl_weights_linearly_over_its_epochs(digits, tmp_path):
    x = torch.as_tensor(digits[0][:500])
    trainer = tiny_trainer(tmp_path, epochs=3, kl_warmup=2)
    trainer.fit(x, progress=False)
    assert [row["kl_weight"] for row in trainer.history] == [0.5, 1.0, 1.0]
    plain = tiny_trainer(tmp_path / "plain", epochs=1)
    plain.fit(x, progress=False)
    assert "kl_weight" not in plain.history[0]
    # at weight 0 the KL terms are not trained: after an epoch they are larger than with them
    assert trainer.history[0]["gauss"] > plain.history[0]["gauss"]
    with pytest.raises(GMVAEError, match="kl_warmup"):
        tiny_trainer(tmp_path, kl_warmup=-1)


def test_auto_start_is_the_inputs_for_tables_none_for_images_and_images_keep_p_y_equal():
    from gmvae.run.assembly import fit_to_data
    from gmvae.run.settings import ExperimentConfig

    table, images = np.random.default_rng(0).normal(size=(40, 3)), np.random.rand(40, 16)
    config = ExperimentConfig.from_preset("default", {"model": {"n_clusters": 2}})
    assert config.train.mixture_start == "auto"
    assert fit_to_data(config, table, None).train.mixture_start == "inputs"
    assert fit_to_data(config, images, (4, 4)).train.mixture_start == "none"
    pretrained = dataclasses.replace(config, train=TrainConfig(pretrain_epochs=2))
    assert fit_to_data(pretrained, table, None).train.mixture_start == "none"
    # p(y) is left to the start's mixture where there is one, and held equal where none is fitted
    assert fit_to_data(config, table, None).model.proportions == "auto"
    assert fit_to_data(pretrained, table, None).model.proportions == "auto"
    assert fit_to_data(config, images, (4, 4)).model.proportions == "equal"
    with pytest.raises(GMVAEError, match="not both"):
        TrainConfig(pretrain_epochs=2, mixture_start="inputs").validate()


def test_a_table_holds_its_start_mixture_unless_restarts_choose_the_start():
    from gmvae.run.assembly import fit_to_data
    from gmvae.run.settings import ExperimentConfig

    table = np.random.default_rng(0).normal(size=(40, 3))
    config = ExperimentConfig.from_preset("default", {"model": {"n_clusters": 2}})
    assert fit_to_data(config, table, None).objective.w_start == START_WEIGHT["unlabelled"]
    labels = np.array([0, 1] + [-1] * 38)
    assert fit_to_data(config, table, None, labels).objective.w_start == START_WEIGHT["labelled"]
    restarts = dataclasses.replace(config, train=dataclasses.replace(config.train, restarts=3))
    assert fit_to_data(restarts, table, None).objective.w_start == 0.0
    pretrained = dataclasses.replace(config, train=TrainConfig(pretrain_epochs=2))
    assert fit_to_data(pretrained, table, None).objective.w_start == 0.0


def test_the_start_term_is_refused_without_a_start_on_the_inputs():
    from gmvae.run.assembly import fit_to_data
    from gmvae.run.settings import ExperimentConfig

    images = np.random.rand(40, 16)
    config = ExperimentConfig.from_preset(
        "default", {"model": {"n_clusters": 2}, "objective": {"w_start": 1.0}}
    )
    with pytest.raises(GMVAEError, match="--mixture-start inputs"):
        fit_to_data(config, images, (4, 4))
    labelled = fit_to_data(config, images[:, :3], None, np.array([0, 1] + [-1] * 38))
    assert labelled.objective.w_start == 1.0
    restarts = dataclasses.replace(config, train=dataclasses.replace(config.train, restarts=3))
    with pytest.raises(GMVAEError, match="--restarts"):
        fit_to_data(restarts, images[:, :3], None)


def test_the_start_from_the_inputs_mixture_is_recorded_in_the_first_epoch(tmp_path):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (60, 3)), rng.normal(6, 1, (60, 3))]).astype(np.float32)
    torch.manual_seed(0)
    model = GMVAENet(ModelConfig(x_dim=3, image_shape=None, n_clusters=2, z_dim=2,
                                 hidden_dim=16, likelihood="gaussian"))  # fmt: skip
    trainer = make_trainer(model, epochs=2, batch_size=32, mixture_start="inputs")
    history = trainer.fit(torch.as_tensor(x), progress=False)
    assert math.isfinite(history[0]["mixture_log_likelihood"])
    assert "mixture_log_likelihood" not in history[1]
    clusters = inference.cluster_probabilities(model, x).argmax(1)
    assert cluster_accuracy(np.repeat([0, 1], 60), clusters, 2) == 1.0


def test_the_cosine_schedule_starts_at_the_learning_rate_and_falls_to_near_zero(digits, tmp_path):
    trainer = tiny_trainer(tmp_path, lr=1e-3, lr_schedule="cosine")
    assert trainer.learning_rate(0, 30) == 1e-3
    assert trainer.learning_rate(15, 30) == pytest.approx(5e-4)
    trainer.fit(torch.as_tensor(digits[0][:500]), progress=False)
    recorded = [record["lr"] for record in trainer.history]  # each epoch's last step's
    assert recorded[0] > recorded[1] > recorded[2] > 0
    assert recorded[2] < 1e-5
