"""Semi-supervised training's end-of-epoch hook: the clusters are renamed so that cluster k is
class k's.

The labelled cross-entropy alone can fit a lone labelled example into cluster k while its class
gathers in another cluster (seen with one label per class: right clusters, wrong names); the
example's neighbours carry no label to fit, so they show where the class is.
"""

from __future__ import annotations

import numpy as np
import torch

from gmvae.data.batches import BatchSource
from gmvae.data.labels import cluster_order
from gmvae.data.neighbours import NeighbourSearch
from gmvae.model.network import GMVAENet
from gmvae.train.distributed import World, share_buffers

# Each labelled example names its class's cluster through this many of its nearest neighbours
# (on MNIST nearly all of them show the same digit).
NAMING_NEIGHBOURS = 10
NAMING_CHUNK = 4096  # rows per forward pass when naming


@torch.no_grad()
def permute_clusters(model: GMVAENet, optimizer: torch.optim.Adam, order: torch.Tensor) -> None:
    """Renames the clusters: new cluster i is old cluster order[i] (K,), in the parameters and
    in Adam's moments, so training goes on as if the clusters had always had these names."""
    for param, dim, offset in model.cluster_axes():
        state = optimizer.state.get(param, {})
        for values in (param, state.get("exp_avg"), state.get("exp_avg_sq")):
            if values is not None:
                block = values.narrow(dim, offset, len(order))
                block.copy_(block.index_select(dim, order))


class ClusterNaming:
    """After every epoch of a run with labels: cluster k becomes the one where class k's
    labelled examples' neighbours are (labels.cluster_order). Does nothing without labels."""

    def __init__(self) -> None:
        self.neighbours: torch.Tensor | None = None  # (L, n) the labelled rows' neighbours

    @staticmethod
    def neighbours_wanted(source: BatchSource) -> int:
        if source.labels is None:
            return 0
        return min(NAMING_NEIGHBOURS, max(len(source) - 1, 1))

    def prepare(self, source: BatchSource, search: NeighbourSearch) -> None:
        wanted = self.neighbours_wanted(source)
        if wanted:
            self.neighbours = search.nearest(wanted)[source.labelled_rows]

    def after_epoch(
        self,
        model: GMVAENet,
        optimizer: torch.optim.Adam,
        source: BatchSource,
        world: World,
    ) -> dict:
        """Renames the clusters in the parameters and in Adam's moments alike; the epoch's
        record gains how many clusters changed name."""
        if self.neighbours is None:
            return {}
        share_buffers(model, world)  # batch norm's statistics: the same on every process
        model.eval()
        rows = self.neighbours
        with torch.no_grad():
            probabilities = torch.cat([
                model.component_logits(source.read(chunk)).softmax(-1)
                for chunk in rows.flatten().split(NAMING_CHUNK)
            ])  # fmt: skip
        model.train()
        support = probabilities.view(*rows.shape, -1).mean(1)  # (L, K)
        classes = source.labels[source.labelled_rows]
        order = cluster_order(support.cpu().numpy(), classes.cpu().numpy())
        moved = int((order != np.arange(len(order))).sum())
        if moved:
            permute_clusters(model, optimizer, torch.as_tensor(order, device=source.device))
        return {"renamed_clusters": moved}
