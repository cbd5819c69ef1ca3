"""Semi-supervised cluster naming: renaming clusters changes nothing but their names."""

import pytest
import torch

from gmvae.model.network import GMVAENet, ModelConfig
from gmvae.train.naming import permute_clusters


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
@pytest.mark.parametrize("y_batch_norm", [False, True])
def test_permuting_clusters_renames_them_and_changes_nothing_else(architecture, y_batch_norm):
    torch.manual_seed(0)
    config = ModelConfig(x_dim=64, image_shape=(8, 8), z_dim=4, hidden_dim=16, n_clusters=5,
                         likelihood="bernoulli", architecture=architecture,
                         y_batch_norm=y_batch_norm)  # fmt: skip
    model = GMVAENet(config)
    optimizer = torch.optim.Adam(model.parameters())
    x = torch.rand(6, 64)
    model(x, temperature=1.0).decoded.sum().backward()
    optimizer.step()  # so that Adam has moments to permute
    model.eval()
    gumbel, normal = torch.randn(6, 5), torch.randn(6, 4)
    before = model(x, temperature=0.7, noise=(gumbel, normal))
    state = optimizer.state[model.y_encoder[-1].weight]
    moment = state["exp_avg"].clone()
    order = torch.tensor([3, 0, 4, 1, 2])
    permute_clusters(model, optimizer, order)
    after = model(x, temperature=0.7, noise=(gumbel[:, order], normal))
    torch.testing.assert_close(after.logits, before.logits[:, order])
    torch.testing.assert_close(after.y, before.y[:, order])
    for name in ("z", "z_mean", "z_var", "prior_mean", "prior_var", "decoded"):
        torch.testing.assert_close(getattr(after, name), getattr(before, name))
    torch.testing.assert_close(state["exp_avg"], moment[order])
