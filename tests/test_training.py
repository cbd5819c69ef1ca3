import math

import numpy as np
import pytest
import torch

from gmvae import inference
from gmvae.errors import GMVAEError
from gmvae.metrics import cluster_accuracy
from gmvae.model import GMVAENet, ModelConfig
from gmvae.training import TrainConfig, Trainer, gumbel_temperature, resolve_device


def train_digits(x: np.ndarray, seed: int, epochs: int) -> Trainer:
    torch.manual_seed(seed)
    model = GMVAENet(ModelConfig(x_dim=64, image_shape=(8, 8), z_dim=8, hidden_dim=128))
    trainer = Trainer(
        model, TrainConfig(epochs=epochs, batch_size=64, seed=seed), torch.device("cpu")
    )
    trainer.fit(torch.as_tensor(x), progress=False)
    return trainer


def test_temperature_follows_the_reference_schedule():
    config = TrainConfig()
    assert gumbel_temperature(config, 0) == 1.0
    assert gumbel_temperature(config, 10) == pytest.approx(math.exp(-0.13862944))
    assert gumbel_temperature(config, 49) == pytest.approx(0.50697, abs=1e-5)
    assert gumbel_temperature(config, 80) == 0.5  # floored at tau_min


def test_device_names_resolve_or_fail_clearly():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(GMVAEError, match="unknown device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(GMVAEError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_invalid_settings_are_rejected_before_training():
    model = GMVAENet(ModelConfig(x_dim=4, image_shape=None, hidden_dim=4))
    with pytest.raises(GMVAEError, match="at least 1"):
        Trainer(model, TrainConfig(batch_size=0), torch.device("cpu"))
    with pytest.raises(GMVAEError, match="positive"):
        Trainer(model, TrainConfig(lr=-1.0), torch.device("cpu"))


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
    trainer = Trainer(
        GMVAENet(ModelConfig(x_dim=64, image_shape=(8, 8), hidden_dim=16)),
        TrainConfig(epochs=3),
        torch.device("cpu"),
    )
    seen = []
    trainer.fit(torch.as_tensor(x), monitor=lambda: {"probe": 1.0}, on_epoch=seen.append)
    assert [row["epoch"] for row in seen] == [1, 2, 3]
    assert all(row["probe"] == 1.0 and "eval_seconds" in row for row in seen)
