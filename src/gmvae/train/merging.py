"""Over-clustering's end-of-epoch hook: the mixture's M components are grouped into the K
clusters that the model reports.

With one component per cluster, the balance term's pull towards equal sizes and q(y|x)'s view
of a class's styles (slanted and upright 1s are not neighbours) cut a large class in two and
put two small ones together. With more components than clusters, a class's styles take
components of their own; where q(y|x) gives more rows to both of two components of one class
than to components of different classes, grouping the components that share rows puts each
class back together, whatever its size. q(y|x) is confident, so few rows are shared: on MNIST the
4s and 9s shared more than the two halves of the 1s on some seeds. For images the rows' slightly
moved copies are asked too (a rotation turns a slanted 1 into an upright one): components are
similar by where q(y|x) sends the moved copies of each other's rows
(benchmarks/results/unequal/).
"""

from __future__ import annotations

import numpy as np
import torch

from gmvae.data.augment import random_affine_params, transform
from gmvae.data.batches import BatchSource
from gmvae.model.network import GMVAENet
from gmvae.train.distributed import World, share_buffers

MERGE_ROWS = 10_000  # training rows (a seeded sample) whose q(y|x) decides the grouping
MERGE_CHUNK = 4096  # rows per forward pass
MOVES = 4  # moved copies of each sampled image (data/augment.py's small affine transforms)
TIE_BREAK = 1e-6  # weight of the joined groups' mass against their similarity (in [0, 1])


def group_components(
    probabilities: np.ndarray, n_clusters: int, moved: np.ndarray | None = None
) -> np.ndarray:
    """Average-linkage grouping of components by how much of the same rows q(y|x) gives them.

    probabilities (N, M): q(y|x) over the M components; moved (N, M): q(y|x) of a moved copy of
    each row (None: the rows themselves). The similarity of components i and j is their
    co-assignment c_ij / sqrt(c_ii c_jj), c = p^T m + m^T p (m: moved, or p); the two
    groups with the highest mean similarity between their members are joined until n_clusters
    are left, the pair with less of q(y|x)'s mass first among equals (so a component no row
    uses joins a group before two groups that share nothing are joined). Returns (M,) the
    cluster of each component, clusters numbered in the order of their lowest component.
    """
    p = probabilities.astype(np.float64)
    m = p if moved is None else moved.astype(np.float64)
    co = p.T @ m + m.T @ p  # (M, M)
    scale = np.sqrt(np.clip(np.diag(co), 1e-12, None))
    similarity = co / scale[:, None] / scale[None, :]
    mass = p.sum(0) / max(p.sum(), 1e-12)  # (M,) each component's share of q(y|x)
    members = [[i] for i in range(len(co))]
    # between[a, b]: the similarities summed over the members of groups a and b
    between = similarity.copy()
    np.fill_diagonal(between, -np.inf)
    while len(members) > n_clusters:
        sizes = np.array([len(g) for g in members], dtype=np.float64)
        shares = np.array([mass[g].sum() for g in members])
        score = between / np.outer(sizes, sizes) - TIE_BREAK * (shares[:, None] + shares)
        a, b = np.unravel_index(np.argmax(score), score.shape)
        a, b = min(a, b), max(a, b)
        members[a] += members.pop(b)
        between[a] += between[b]
        between[:, a] += between[:, b]
        between[a, a] = -np.inf
        between = np.delete(np.delete(between, b, 0), b, 1)
    cluster = np.empty(len(co), dtype=np.int64)
    for k, group in enumerate(sorted(members, key=min)):
        cluster[group] = k
    return cluster


class ComponentMerging:
    """After every epoch of a model with more components than clusters: the grouping of its
    components into clusters (GMVAENet.component_cluster) is made again from q(y|x) on a fixed
    seeded sample of the training rows (and, for images, on seeded moved copies of them). Does
    nothing with one component per cluster."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rows: torch.Tensor | None = None  # the sampled training rows

    def prepare(self, model: GMVAENet, source: BatchSource) -> None:
        if model.config.components_per_cluster == 1:
            return
        generator = torch.Generator().manual_seed(self.seed)
        rows = torch.randperm(len(source), generator=generator)[:MERGE_ROWS]
        self.rows = rows.sort().values.to(source.device)

    @staticmethod
    def _moves(n: int, device: torch.device) -> torch.Tensor:
        """(n, 2, 3) affine moves drawn on the CPU (the forked generator), then moved."""
        return random_affine_params(n, torch.device("cpu")).to(device)

    def after_epoch(self, model: GMVAENet, source: BatchSource, world: World) -> dict:
        """Groups the components again; the epoch's record gains how many changed cluster."""
        if self.rows is None:
            return {}
        share_buffers(model, world)  # batch norm's statistics: the same on every process
        model.eval()
        shape = model.config.image_shape
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)  # the same moves every epoch; training's RNG untouched
            rows = [source.read(chunk) for chunk in self.rows.split(MERGE_CHUNK)]
            probabilities = torch.cat([model.component_logits(x).softmax(-1) for x in rows])
            moved = None
            if shape is not None:
                moved = sum(
                    torch.cat([
                        model.component_logits(transform(x, shape, self._moves(len(x), x.device)))
                        .softmax(-1) for x in rows
                    ]) for _ in range(MOVES)
                ).cpu().numpy() / MOVES  # fmt: skip
        model.train()
        cluster = group_components(probabilities.cpu().numpy(), model.config.n_clusters, moved)
        new = torch.as_tensor(cluster, device=model.component_cluster.device)
        changed = int((new != model.component_cluster).sum())
        model.component_cluster.copy_(new)
        return {"moved_components": changed}
