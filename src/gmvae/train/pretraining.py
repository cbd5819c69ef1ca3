"""Autoencoder pretraining and a Gaussian-mixture start, as VaDE does (Jiang et al. 2017).

The network first learns to reconstruct x through the mean of q(z|x,y) alone, with y left out;
a K-component diagonal Gaussian mixture is fitted to those codes; the GMVAE then starts from
it: p(z|y=k) is the mixture's k-th component, q(y|x) is taught the mixture's
responsibilities, and q(z|x,y) gives the autoencoder's code whatever y is. Training goes on
from clusters that the codes' geometry suggests instead of from a random q(y|x).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.mixture import GaussianMixture

from gmvae.model.losses import reconstruction_nll
from gmvae.model.network import MIN_VARIANCE, GMVAENet

# The mixture is fitted on at most this many codes (a seeded draw): enough for K diagonal
# Gaussians, and seconds instead of minutes on 60,000 MNIST images.
MIXTURE_ROWS = 20_000
CODE_CHUNK = 4096  # rows per forward pass when computing codes


def pretrain(
    model: GMVAENet,
    n_rows: int,
    read: Callable[[torch.Tensor], torch.Tensor],
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> float:
    """Pretrain `model` in place on the n_rows examples that `read(rows)` returns (a (B, D)
    batch on the model's device for row indices (B,)), then start it from a mixture fitted on
    the codes. Seeded: the same seed gives the same start. Returns the mean -log p(x|z) over
    the last pretraining pass."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    k = model.config.n_clusters
    # Pretraining feeds y = 0, so the weights through which y enters q(z|x,y) get no gradient;
    # zeroed afterwards, they make the code the same for every y.
    no_y = torch.zeros(batch_size, k, device=device)
    autoencoder = [
        *model.z_trunk.parameters(),
        *model.z_encoder.parameters(),
        *model.z_mean.parameters(),
        *model.decoder.parameters(),
    ]
    optimizer = torch.optim.Adam(autoencoder, lr=lr)
    model.train()
    for _ in range(epochs):
        total = torch.zeros((), device=device)
        for rows in torch.randperm(n_rows, generator=generator, device=device).split(batch_size):
            x = read(rows)
            mean, _ = model.encode_z(x, no_y[: len(x)])
            rec = reconstruction_nll(x, model.decode(mean), model.config.likelihood)
            optimizer.zero_grad(set_to_none=True)
            rec.mean().backward()
            optimizer.step()
            total += rec.detach().sum()
    with torch.no_grad():
        model.y_input_weight().zero_()
        codes = torch.cat([
            model.encode_z(read(rows), no_y[:1].expand(len(rows), k))[0]
            for rows in torch.arange(n_rows, device=device).split(CODE_CHUNK)
        ]).cpu().numpy()  # fmt: skip
    responsibilities = start_from_mixture(model, codes, seed)
    teach_clusters(model, n_rows, read, responsibilities.to(device), batch_size, lr, generator)
    return float(total) / n_rows


def start_from_mixture(model: GMVAENet, codes: np.ndarray, seed: int) -> torch.Tensor:
    """Fit a K-component diagonal Gaussian mixture to codes (N, Z) and set p(z|y=k) to its
    k-th component (y one-hot: p(z|y)'s layers' column k is the component, their bias 0).
    Returns the mixture's responsibilities for every code, (N, K)."""
    k = model.config.n_clusters
    rng = np.random.default_rng(seed)
    fitted_on = codes[rng.permutation(len(codes))[:MIXTURE_ROWS]]
    mixture = GaussianMixture(k, covariance_type="diag", reg_covar=1e-4, random_state=seed)
    mixture.fit(fitted_on.astype(np.float64))
    means = torch.as_tensor(mixture.means_.T, dtype=torch.float32)  # (Z, K)
    variances = torch.as_tensor(mixture.covariances_.T, dtype=torch.float32) - MIN_VARIANCE
    variances = variances.clamp_min(MIN_VARIANCE)
    with torch.no_grad():
        model.prior_mean.weight.copy_(means)
        model.prior_var.weight.copy_(variances + torch.log(-torch.expm1(-variances)))  # softplus⁻¹
        model.prior_mean.bias.zero_()
        model.prior_var.bias.zero_()
    return torch.as_tensor(mixture.predict_proba(codes.astype(np.float64)), dtype=torch.float32)


def teach_clusters(
    model: GMVAENet,
    n_rows: int,
    read: Callable[[torch.Tensor], torch.Tensor],
    targets: torch.Tensor,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
) -> None:
    """One pass that fits q(y|x) to `targets` (N, K), the mixture's responsibilities, by
    cross-entropy."""
    optimizer = torch.optim.Adam(model.y_encoder.parameters(), lr=lr)
    order = torch.randperm(n_rows, generator=generator, device=targets.device)
    for rows in order.split(batch_size):
        if len(rows) < 2:  # batch normalisation needs two rows
            continue
        log_q = F.log_softmax(model.cluster_logits(read(rows)), -1)
        loss = -(targets[rows] * log_q).sum(-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
