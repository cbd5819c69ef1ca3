"""Batched, gradient-free uses of a trained GMVAENet: cluster probabilities, latent means,
ELBO, reconstructions and samples. Inputs are float32 (N, D) arrays or tensors; outputs NumPy."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from gmvae.data.preprocessing import ScaledRows
from gmvae.model.network import GMVAENet

EVAL_BATCH = 2048
ArrayLike = np.ndarray | torch.Tensor | ScaledRows


def _device(model: GMVAENet) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def _batched(
    model: GMVAENet, x: ArrayLike, fn: Callable[[torch.Tensor], torch.Tensor]
) -> np.ndarray:
    """Apply `fn` to slices of x on the model's device and concatenate the results."""
    model.eval()
    device = _device(model)
    outputs = []
    for start in range(0, len(x), EVAL_BATCH):
        batch = torch.as_tensor(np.asarray(x[start : start + EVAL_BATCH]), dtype=torch.float32)
        # (x may be an array, a tensor or ScaledRows over a memory-mapped file)
        outputs.append(fn(batch.to(device)).float().cpu())
    return torch.cat(outputs).numpy()


@torch.inference_mode()
def proportions(model: GMVAENet) -> np.ndarray:
    """The clusters' proportions: p(y), learned or equal, summed over each cluster's
    components: (K,)."""
    weights = model.log_proportions().exp()
    clusters = weights.new_zeros(model.config.n_clusters)
    return clusters.index_add_(0, model.component_cluster, weights).cpu().numpy()


def cluster_probabilities(model: GMVAENet, x: ArrayLike) -> np.ndarray:
    """q(cluster|x), q(y|x) summed over each cluster's components: (N, D) -> (N, K)."""
    return _batched(model, x, model.cluster_probabilities)


def latent_means(model: GMVAENet, x: ArrayLike) -> np.ndarray:
    """E[z|x] under q(z|x, y = most probable component): (N, D) -> (N, Z)."""

    def fn(b: torch.Tensor) -> torch.Tensor:
        return model.encode_z(b, _most_probable(model, b))[0]

    return _batched(model, x, fn)


def reconstruct(model: GMVAENet, x: ArrayLike) -> np.ndarray:
    """E[x|z] at z = E[z|x]: (N, D) -> (N, D)."""

    def fn(b: torch.Tensor) -> torch.Tensor:
        mean, _ = model.encode_z(b, _most_probable(model, b))
        return model.mean_image(model.decode(mean))

    return _batched(model, x, fn)


def elbo(model: GMVAENet, x: ArrayLike, seed: int = 0) -> np.ndarray:
    """Per-example ELBO in nats, (N, D) -> (N,). `seed` draws the (M, Z) noise behind the z
    samples, shared by all examples: the result does not depend on order or batching."""
    shape = (model.config.n_components, model.config.z_dim)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    noise = noise.to(_device(model))
    return _batched(model, x, lambda b: model.elbo(b, noise))


@torch.inference_mode()
def sample(model: GMVAENet, clusters: np.ndarray, seed: int = 0) -> np.ndarray:
    """For each cluster index k in `clusters` (S,): a component y of cluster k drawn by p(y),
    z ~ p(z|y), decoded: -> (S, D) means."""
    model.eval()
    device = _device(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    clusters = torch.as_tensor(clusters, device=device)
    in_cluster = model.component_cluster[None, :] == clusters[:, None]  # (S, M)
    weights = model.log_proportions().exp() * in_cluster
    components = torch.multinomial(weights, 1, generator=generator)[:, 0]
    y = F.one_hot(components, model.config.n_components).float()
    mean, var = model.prior(y)
    z = mean + var.sqrt() * torch.randn(mean.shape, generator=generator, device=device)
    return model.mean_image(model.decode(z)).cpu().numpy()


def _most_probable(model: GMVAENet, x: torch.Tensor) -> torch.Tensor:
    """One-hot of argmax q(y|x): (N, D) -> (N, M)."""
    logits = model.component_logits(x)
    return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(x.dtype)


@torch.inference_mode()
def interpolate(model: GMVAENet, pairs: list[tuple[int, int]], steps: int = 10) -> np.ndarray:
    """For each pair of clusters (a, b): z moving in `steps` from the mean of p(z|y) for a's
    most probable component to that for b's, decoded. -> (len(pairs), steps, D)."""
    model.eval()
    device = _device(model)
    eye = torch.eye(model.config.n_components, device=device)
    means = model.prior(eye)[0][_main_components(model)]  # (K, Z)
    t = torch.linspace(0, 1, steps, device=device)[:, None]
    walks = [(1 - t) * means[a] + t * means[b] for a, b in pairs]
    z = torch.cat(walks)
    return model.mean_image(model.decode(z)).view(len(pairs), steps, -1).cpu().numpy()


def _main_components(model: GMVAENet) -> torch.Tensor:
    """Each cluster's component of highest p(y) (the first of equals): (K,)."""
    weights, cluster = model.log_proportions().exp(), model.component_cluster
    mine = cluster[None, :] == torch.arange(model.config.n_clusters, device=cluster.device)[:, None]
    return torch.where(mine, weights, -1.0).argmax(1)
