"""Run by torchrun in tests/test_distributed.py: trains on scikit-learn's digits in however many
processes torchrun started and saves, per rank, the final parameters and the rows it saw."""

import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

from gmvae import distributed
from gmvae.model import GMVAENet, ModelConfig
from gmvae.training import TrainConfig, Trainer

SETTINGS = TrainConfig(epochs=2, batch_size=40, seed=3, checkpoint_every=0)


def digits() -> torch.Tensor:
    x = load_digits().data[:400] / 16.0
    return torch.as_tensor(x, dtype=torch.float32)


def train(world: distributed.World, device: torch.device) -> Trainer:
    torch.manual_seed(SETTINGS.seed)
    config = ModelConfig(
        x_dim=64, image_shape=(8, 8), z_dim=4, hidden_dim=32, likelihood="bernoulli"
    )
    trainer = Trainer(GMVAENet(config), SETTINGS, device, world=world)
    seen = []
    original = trainer._batch
    trainer._batch = lambda x, rows: (seen.append(rows.tolist()), original(x, rows))[1]
    trainer.fit(digits(), progress=False)
    trainer.rows_seen = seen
    return trainer


if __name__ == "__main__":
    out = Path(sys.argv[1])
    world, device = distributed.setup("cpu")
    trainer = train(world, device)
    torch.save(
        {
            "params": {k: v.clone() for k, v in trainer.model.state_dict().items()},
            "rows": trainer.rows_seen,
            "loss": [row["loss"] for row in trainer.history],
        },
        out / f"rank{world.rank}.pt",
    )
    distributed.teardown()
    np.save(out / f"done{world.rank}.npy", np.ones(1))
