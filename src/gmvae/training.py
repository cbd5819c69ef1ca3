"""The training loop: one place that owns the optimizer, the temperature schedule, batching
and the per-epoch record. Data stays one tensor on the device; batches are index slices of a
seeded permutation; losses accumulate on the device and are read once per epoch."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from gmvae.errors import GMVAEError
from gmvae.losses import weighted_loss
from gmvae.model import GMVAENet

TERMS = ("rec", "gauss", "cat")


@dataclass
class TrainConfig:
    epochs: int = field(default=50, metadata={"help": "passes over the training data"})
    batch_size: int = field(default=64, metadata={"help": "examples per optimizer step"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    tau_start: float = field(default=1.0, metadata={"help": "Gumbel temperature at epoch 0"})
    tau_decay: float = field(
        default=0.013862944,
        metadata={"help": "tau = max(tau_start * exp(-tau_decay * epoch), tau_min)"},
    )
    tau_min: float = field(default=0.5, metadata={"help": "lowest Gumbel-Softmax temperature"})
    gumbel_hard: bool = field(
        default=False, metadata={"help": "straight-through hard one-hot y instead of soft samples"}
    )
    w_rec: float = field(default=1.0, metadata={"help": "weight of the reconstruction term"})
    w_gauss: float = field(default=1.0, metadata={"help": "weight of log q(z|x,y) - log p(z|y)"})
    w_cat: float = field(default=1.0, metadata={"help": "weight of KL(q(y|x) || uniform)"})
    seed: int = field(default=0, metadata={"help": "seeds initialisation, batches and sampling"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise GMVAEError("epochs and batch_size must be at least 1")
        if not (self.lr > 0 and self.tau_start > 0 and self.tau_min > 0):
            raise GMVAEError("lr, tau_start and tau_min must be positive")


def gumbel_temperature(config: TrainConfig, epoch: int) -> float:
    """The reference schedule: tau = max(tau_start * exp(-tau_decay * epoch), tau_min)."""
    return max(config.tau_start * math.exp(-config.tau_decay * epoch), config.tau_min)


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; 'cpu', 'cuda' and 'cuda:N' are taken as asked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GMVAEError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GMVAEError(f"device {name!r} asked for, but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise GMVAEError(f"device {name!r} asked for, but there are only {count} GPUs")
    elif device.type != "cpu":
        raise GMVAEError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


class Trainer:
    """Trains a GMVAENet on a (N, D) float tensor with Adam; `history` holds a dict per epoch."""

    def __init__(self, model: GMVAENet, config: TrainConfig, device: torch.device):
        config.validate()
        self.config = config
        self.device = device
        self.model = model.to(device)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        self.history: list[dict] = []

    def fit(
        self,
        x: torch.Tensor,
        monitor: Callable[[], dict] | None = None,
        on_epoch: Callable[[dict], None] | None = None,
        progress: bool | None = None,
    ) -> list[dict]:
        """Train for the remaining epochs. `monitor()` adds evaluation numbers to each epoch's
        record; `on_epoch(record)` sees the finished record. `progress`: a bar per epoch
        (default: when stderr is a terminal)."""
        x = x.to(self.device, torch.float32)
        if progress is None:
            progress = sys.stderr.isatty()
        generator = torch.Generator(device=self.device).manual_seed(self.config.seed)
        for epoch in range(len(self.history), self.config.epochs):
            start = time.perf_counter()
            record = {"epoch": epoch + 1, **self.train_epoch(x, epoch, generator, progress)}
            record["seconds"] = time.perf_counter() - start
            if monitor is not None:
                start = time.perf_counter()
                record.update(monitor())
                record["eval_seconds"] = time.perf_counter() - start
            self.history.append(record)
            if on_epoch is not None:
                on_epoch(record)
        return self.history

    def train_epoch(
        self, x: torch.Tensor, epoch: int, generator: torch.Generator, progress: bool
    ) -> dict:
        """One pass over x in a seeded random order. Returns the mean of each loss term."""
        cfg = self.config
        tau = gumbel_temperature(cfg, epoch)
        self.model.train()
        order = torch.randperm(len(x), generator=generator, device=self.device)
        sums = torch.zeros(len(TERMS), device=self.device)
        starts = range(0, len(x), cfg.batch_size)
        desc = f"epoch {epoch + 1}/{cfg.epochs}"
        for start in tqdm(starts, desc=desc, leave=False, disable=not progress):
            batch = x[order[start : start + cfg.batch_size]]
            terms = self.model(batch, temperature=tau, hard=cfg.gumbel_hard)
            loss = weighted_loss(terms, cfg.w_rec, cfg.w_gauss, cfg.w_cat)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            with torch.no_grad():  # summed on the device: no host sync per step
                sums += torch.stack([terms[t].sum() for t in TERMS])
        means = dict(zip(TERMS, (sums / len(x)).tolist(), strict=True))
        loss = cfg.w_rec * means["rec"] + cfg.w_gauss * means["gauss"] + cfg.w_cat * means["cat"]
        return {"loss": loss, **means, "tau": tau, "lr": self.optimizer.param_groups[0]["lr"]}
