"""Densities and divergences the objective (gmvae.train.objective) and the ELBO are built from, each
per example, shape (N,)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LIKELIHOODS = ("bernoulli", "gaussian")


def reconstruction_nll(x: torch.Tensor, decoded: torch.Tensor, likelihood: str) -> torch.Tensor:
    """-log p(x|z) summed over features. x, decoded: (N, D) -> (N,).

    bernoulli: `decoded` are logits; BCE from logits never takes log(0).
    gaussian: `decoded` is the mean of a Gaussian of variance 1/2, so that the negative
    log-likelihood is the squared error plus a constant (the reference's MSE, made a density).
    """
    if likelihood == "bernoulli":
        return F.binary_cross_entropy_with_logits(decoded, x, reduction="none").sum(-1)
    squared = (x - decoded).pow(2).sum(-1)
    return squared + 0.5 * x.shape[-1] * math.log(math.pi)


def gaussian_log_density(z: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, diag(var)) summed over the last dimension. (N, Z) -> (N,)."""
    return -0.5 * (math.log(2 * math.pi) + var.log() + (z - mean).pow(2) / var).sum(-1)


def gaussian_kl(
    mean: torch.Tensor, var: torch.Tensor, prior_mean: torch.Tensor, prior_var: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean, var) || N(prior_mean, prior_var)), diagonal, summed over the last dim -> (N,)."""
    ratio = var / prior_var
    return 0.5 * (ratio - 1 - ratio.log() + (mean - prior_mean).pow(2) / prior_var).sum(-1)


def categorical_kl_uniform(logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(logits) || uniform over K) = sum q log q + log K. (N, K) -> (N,)."""
    log_q = F.log_softmax(logits, dim=-1)
    return (log_q.exp() * log_q).sum(-1) + math.log(logits.shape[-1])


def categorical_kl(logits: torch.Tensor, log_prior: torch.Tensor) -> torch.Tensor:
    """KL(softmax(logits) || prior) = sum q (log q - log prior). logits (N, K), log_prior (K,)
    -> (N,)."""
    log_q = F.log_softmax(logits, dim=-1)
    return (log_q.exp() * (log_q - log_prior)).sum(-1)


def weighted_loss(
    terms: dict[str, torch.Tensor], w_rec: float, w_gauss: float, w_cat: float
) -> torch.Tensor:
    """w_rec * rec + w_gauss * gauss + w_cat * cat, averaged over the batch: a scalar."""
    return (w_rec * terms["rec"] + w_gauss * terms["gauss"] + w_cat * terms["cat"]).mean()
