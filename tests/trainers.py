"""Trainers for tests that build their own small network."""

from dataclasses import fields
from pathlib import Path

import torch

from gmvae.model.network import GMVAENet
from gmvae.train.distributed import World
from gmvae.train.objective import Objective, ObjectiveConfig
from gmvae.train.trainer import TrainConfig, Trainer

CPU = torch.device("cpu")
OBJECTIVE_FIELDS = {f.name for f in fields(ObjectiveConfig)}


def make_trainer(
    model: GMVAENet,
    checkpoint_path: Path | None = None,
    world: World | None = None,
    device: torch.device = CPU,
    **settings,
) -> Trainer:
    """A Trainer of `model`; `settings` are ObjectiveConfig's and TrainConfig's fields alike."""
    objective = ObjectiveConfig(**{k: v for k, v in settings.items() if k in OBJECTIVE_FIELDS})
    train = TrainConfig(**{k: v for k, v in settings.items() if k not in OBJECTIVE_FIELDS})
    return Trainer(Objective(model, objective), train, device, checkpoint_path, world)
