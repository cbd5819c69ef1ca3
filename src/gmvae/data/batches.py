"""Where training batches come from: the training rows, a tensor on the device or a
memory-mapped file read a batch at a time, and the classes of the labelled ones."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import torch

from gmvae.data.preprocessing import ScaledRows


class BatchSource:
    """x (N, D): a float tensor, moved to the device whole, or ScaledRows over a memory-mapped
    file. labels (N,): semi-supervised training's class per row, -1 where unknown (checked by
    labels.check_labels), or None."""

    def __init__(
        self,
        x: torch.Tensor | ScaledRows,
        device: torch.device,
        labels: np.ndarray | torch.Tensor | None = None,
    ):
        self.x = x.to(device, torch.float32) if isinstance(x, torch.Tensor) else x
        self.device = device
        self.labels: torch.Tensor | None = None  # (N,)
        self.labelled_rows: torch.Tensor | None = None  # (L,) rows whose class is known
        if labels is not None:
            self.labels = torch.as_tensor(labels, dtype=torch.int64, device=device)
            self.labelled_rows = (self.labels >= 0).nonzero().squeeze(1)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def n_features(self) -> int:
        return self.x.shape[1]

    def read(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows `rows` (B,) of x, in that order, on the device: (B, D)."""
        if isinstance(self.x, torch.Tensor):
            return self.x[rows]
        # Read in sorted order, so a memory-mapped file is read front to back.
        wanted = rows.cpu().numpy()
        order = np.argsort(wanted)
        values = np.empty((len(wanted), self.x.shape[1]), dtype=np.float32)
        values[order] = self.x[wanted[order]]
        return torch.from_numpy(values).to(self.device)


def batch_bounds(n_rows: int, batch_size: int) -> list[int]:
    """Where an epoch's batches of the n_rows start and end: the fewest batches of at most
    batch_size rows, of sizes that differ by one at most (569 rows at 256: 190 / 189 / 190, not
    256 / 256 / 57). A small last batch gives the batch-normalised q(y|x) and the balance term
    the statistics of a few rows, and on breast cancer it was behind the default's worst seeds
    (benchmarks/results/suite/, "Batches of equal size")."""
    steps = math.ceil(n_rows / batch_size)
    return [round(i * n_rows / steps) for i in range(steps + 1)]


def epoch_batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """The rows of an epoch, `order` (N,), cut where batch_bounds cuts them: one (B,) per batch."""
    bounds = batch_bounds(len(order), batch_size)
    return [order[start:end] for start, end in pairwise(bounds)]
