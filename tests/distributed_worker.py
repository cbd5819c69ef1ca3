"""Run by torchrun in tests/test_distributed.py: trains on scikit-learn's digits in however many
processes torchrun started and saves, per rank, the final parameters and the rows it saw."""

import sys
from pathlib import Path

import torch
from sklearn.datasets import load_digits

from gmvae import GMVAE
from gmvae.data.batches import BatchSource
from gmvae.data.labels import draw_per_class
from gmvae.model.network import GMVAENet, ModelConfig
from gmvae.train import distributed
from gmvae.train.trainer import Trainer
from tests.trainers import make_trainer

# The per-example clustering terms are on, so the test covers them; the balance term and batch
# normalisation are not: they see each rank's part of the batch, so N processes differ from one
# by design.
SETTINGS = dict(
    epochs=2,
    batch_size=40,
    seed=3,
    checkpoint_every=0,
    w_consistency=1.0,
    w_neighbours=1.0,
    w_adversarial=1.0,
    w_confidence=0.1,
)


def digits() -> torch.Tensor:
    x = load_digits().data[:400] / 16.0
    return torch.as_tensor(x, dtype=torch.float32)


def train(world: distributed.World, device: torch.device, labels=None) -> Trainer:
    """Train on 400 digits; `labels`: semi-supervised, a class per row or -1."""
    torch.manual_seed(SETTINGS["seed"])
    config = ModelConfig(
        x_dim=64, image_shape=(8, 8), z_dim=4, hidden_dim=32, likelihood="bernoulli"
    )
    trainer = make_trainer(GMVAENet(config), world=world, device=device, **SETTINGS)
    seen = []
    original = BatchSource.read
    BatchSource.read = lambda self, rows: (seen.append(rows.tolist()), original(self, rows))[1]
    try:
        trainer.fit(digits(), progress=False, labels=labels)
    finally:
        BatchSource.read = original
    trainer.rows_seen = seen[::2]  # each step reads its batch, then that batch's neighbours
    return trainer


def few_labels():
    """Three labels per class of the 400 digits, -1 for the rest."""
    return draw_per_class(load_digits().target[:400], 3, seed=0)


def world_size() -> int:
    """How many processes are in the group the estimator trained in."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_initialized() else 1


if __name__ == "__main__":
    out = Path(sys.argv[1])
    world, device = distributed.setup("cpu")
    trainer = train(world, device)
    semi = train(world, device, labels=few_labels())
    # The estimator joins the same process group when started by torchrun.
    estimator = GMVAE(5, latent_dim=4, hidden_dim=32, epochs=2, random_state=0, device="cpu")
    labels = estimator.fit(digits().numpy().reshape(-1, 8, 8)).labels_
    # As a table it starts from a mixture, whose weights here leave p(y) held equal ("auto").
    table = GMVAE(5, latent_dim=4, hidden_dim=32, epochs=2, random_state=0, device="cpu")
    table_labels = table.fit(digits().numpy()).labels_
    torch.save(
        {
            "params": {k: v.clone() for k, v in trainer.model.state_dict().items()},
            "rows": trainer.rows_seen,
            "loss": [row["loss"] for row in trainer.history],
            "semi_params": {k: v.clone() for k, v in semi.model.state_dict().items()},
            "estimator_labels": torch.as_tensor(labels),
            "estimator_world": world_size(),
            "table_labels": torch.as_tensor(table_labels),
            "table_learns_proportions": table.model_.learns_proportions(),
        },
        out / f"rank{world.rank}.pt",
    )
    distributed.teardown()
