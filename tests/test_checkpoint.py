import json

import pytest
import torch

from gmvae.errors import GMVAEError
from gmvae.model import inference
from gmvae.model.checkpoint import load_model, save_model
from gmvae.model.network import GMVAENet, ModelConfig
from gmvae.storage import atomic_write


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = GMVAENet(
        ModelConfig(
            x_dim=16,
            image_shape=(4, 4),
            n_clusters=3,
            z_dim=2,
            hidden_dim=8,
            likelihood="bernoulli",
        )
    )
    save_model(model, tmp_path / "model")
    return model, tmp_path / "model"


def test_saved_model_reloads_with_identical_predictions(saved):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "weights.safetensors"]
    loaded = load_model(folder)
    assert loaded.config == model.config
    x = torch.rand(10, 16)
    assert (
        inference.cluster_probabilities(loaded, x) == inference.cluster_probabilities(model, x)
    ).all()


def test_model_from_another_format_version_is_refused(saved):
    _, folder = saved
    meta = json.loads((folder / "config.json").read_text())
    meta["format_version"] = 99
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(GMVAEError, match="version 99"):
        load_model(folder)


def test_config_that_does_not_fit_the_weights_is_refused(saved):
    _, folder = saved
    meta = json.loads((folder / "config.json").read_text())
    meta["model"]["z_dim"] = 5
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(GMVAEError, match="does not fit its config"):
        load_model(folder)


def test_corrupt_weights_or_config_are_clear_errors(saved):
    _, folder = saved
    (folder / "weights.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(GMVAEError, match="cannot read .*weights.safetensors"):
        load_model(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(GMVAEError, match="not readable JSON"):
        load_model(folder)


def test_atomic_write_replaces_the_whole_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write(target, "old")
    atomic_write(target, "new contents")
    assert target.read_text() == "new contents"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


@pytest.mark.parametrize("learned", [True, False])
def test_the_starts_decision_on_learning_proportions_is_saved_with_the_model(tmp_path, learned):
    config = ModelConfig(x_dim=16, image_shape=(4, 4), n_clusters=3, z_dim=2, hidden_dim=8,
                         likelihood="bernoulli", proportions="auto")  # fmt: skip
    model = GMVAENet(config)
    model.set_learns_proportions(learned)
    with torch.no_grad():
        model.proportion_logits.copy_(torch.tensor([0.6, 0.3, 0.1]).log())
    save_model(model, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    assert loaded.learns_proportions() is learned
    expected = [0.6, 0.3, 0.1] if learned else [1 / 3] * 3
    assert torch.allclose(loaded.log_proportions().exp(), torch.tensor(expected))
