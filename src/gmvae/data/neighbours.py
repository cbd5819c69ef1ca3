"""Each training example's nearest neighbours, found once before training.

Nearby examples (in the space of the data's first principal components) almost always belong
to the same group: on scikit-learn's digits more than 90% of the 5 nearest neighbours show the
same digit (tests/test_neighbours.py). Asking q(y|x) to agree on neighbours is a signal that
needs no labels and works for tables as well as images. The search is exact and chunked:
O(N * P * dims) multiply-adds for P = min(N, MAX_POOL) candidates, about 24 s for 60,000
examples on 2 CPU cores (benchmarks/speed.py); past MAX_POOL rows, neighbours are sought among
a seeded sample of MAX_POOL candidates, so the cost grows linearly with N.
"""

from __future__ import annotations

import numpy as np
import torch

from gmvae.data.preprocessing import ScaledRows
from gmvae.errors import GMVAEError

PCA_DIMS = 50
PCA_SAMPLE = 10_000  # rows that fit the principal components
CHUNK = 1024  # query rows per distance block: CHUNK x P floats at a time
MAX_POOL = 65_536  # candidate neighbours; MNIST's 60,000 training images are all candidates


def principal_features(
    x: torch.Tensor | ScaledRows, dims: int, generator: torch.Generator
) -> torch.Tensor:
    """x (N, D) projected on its first `dims` principal components, (N, min(dims, D)), fitted
    on a seeded sample of rows. Deterministic and free of the global RNG, so a resumed run
    finds the same neighbours without disturbing its own random draws."""
    n = len(x)
    sample = torch.randperm(n, generator=generator)[: min(n, PCA_SAMPLE)].sort().values
    fit = read_rows(x, sample).double()
    mean = fit.mean(0)
    # Right singular vectors of the centred sample are the principal axes.
    _, _, axes = torch.linalg.svd(fit - mean, full_matrices=False)
    axes = axes[:dims].T.float()
    return torch.cat(
        [
            (read_rows(x, torch.arange(i, min(i + CHUNK, n))) - mean.float()) @ axes
            for i in range(0, n, CHUNK)
        ]
    )


def read_rows(x: torch.Tensor | ScaledRows, index: torch.Tensor) -> torch.Tensor:
    """Rows `index` of x as a float tensor on the CPU (a memory-mapped file reads fastest
    when `index` is sorted)."""
    if isinstance(x, ScaledRows):
        return torch.from_numpy(np.ascontiguousarray(x[index.numpy()]))
    return x[index.to(x.device)].float().cpu()


def nearest_neighbours(
    x: torch.Tensor | ScaledRows, k: int, seed: int, device: torch.device
) -> torch.Tensor:
    """The k nearest other rows of each row of x (N, D) by Euclidean distance in PCA space,
    among every row or, past MAX_POOL rows, a seeded sample of MAX_POOL candidates: (N, k) row
    indices on `device`, nearest first."""
    n = len(x)
    if n <= k:
        raise GMVAEError(f"{n} examples cannot each have {k} neighbours")
    generator = torch.Generator().manual_seed(seed)
    features = principal_features(x, PCA_DIMS, generator).to(device)
    pool = torch.arange(n) if n <= MAX_POOL else torch.randperm(n, generator=generator)[:MAX_POOL]
    pool = pool.to(device)
    candidates = features[pool]
    place = torch.full((n,), -1, device=device)  # each row's position among the candidates
    place[pool] = torch.arange(len(pool), device=device)
    squared = (candidates * candidates).sum(1)
    found = []
    for start in range(0, n, CHUNK):
        block = features[start : start + CHUNK]
        # |a - b|^2 = |a|^2 - 2 a.b + |b|^2; |a|^2 is the same along a row, so it is left out.
        distances = squared[None] - 2 * block @ candidates.T
        own = place[start : start + CHUNK]
        inside = (own >= 0).nonzero().squeeze(1)
        distances[inside, own[inside]] = float("inf")  # a row is not its own neighbour
        found.append(pool[distances.topk(k, largest=False).indices])
    return torch.cat(found)


class NeighbourSearch:
    """The nearest neighbours of every row of x (N, D), searched when first asked for and kept:
    `nearest(k)` for a smaller k is the first k columns of the search already made."""

    def __init__(self, x: torch.Tensor | ScaledRows, seed: int, device: torch.device):
        self.x, self.seed, self.device = x, seed, device
        self._found: torch.Tensor | None = None  # (N, k) row indices, nearest first

    def nearest(self, k: int) -> torch.Tensor:
        """(N, k) row indices on the device, nearest first."""
        if self._found is None or self._found.shape[1] < k:
            self._found = nearest_neighbours(self.x, k, self.seed, self.device)
        return self._found[:, :k]
