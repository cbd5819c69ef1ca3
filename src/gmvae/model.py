"""The GMVAE network: q(y|x), q(z|x,y), p(z|y) and p(x|z), as in the reference project.

Shapes: N examples, D = x_dim features, K = n_clusters, Z = z_dim.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from gmvae.errors import GMVAEError
from gmvae.losses import (
    LIKELIHOODS,
    categorical_kl_uniform,
    gaussian_log_density,
    reconstruction_nll,
)

# Variances come out of a softplus; this floor keeps log(var) and 1/var finite.
MIN_VARIANCE = 1e-6


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network; saved as JSON beside the weights."""

    x_dim: int = 784
    image_shape: tuple[int, int] | None = (28, 28)
    n_clusters: int = field(default=10, metadata={"help": "number of clusters K"})
    z_dim: int = field(default=64, metadata={"help": "size of the Gaussian latent z"})
    hidden_dim: int = field(default=512, metadata={"help": "width of every hidden layer"})
    likelihood: str = field(
        default="bernoulli",
        metadata={"help": "p(x|z): bernoulli (BCE) or gaussian (MSE)", "choices": LIKELIHOODS},
    )

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        values = dict(values)
        if values.get("image_shape") is not None:
            values["image_shape"] = tuple(values["image_shape"])
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        if self.likelihood not in LIKELIHOODS:
            raise GMVAEError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        sizes = {k: getattr(self, k) for k in ("x_dim", "n_clusters", "z_dim", "hidden_dim")}
        if min(sizes.values()) < 1:
            raise GMVAEError(f"sizes must be at least 1: {sizes}")
        shape = self.image_shape
        if shape is not None and (len(shape) != 2 or shape[0] * shape[1] != self.x_dim):
            raise GMVAEError(f"image_shape {shape} does not hold x_dim = {self.x_dim} pixels")


def mlp(*sizes: int) -> nn.Sequential:
    """Linear layers of the given sizes with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class GMVAENet(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        d, h, k, z = config.x_dim, config.hidden_dim, config.n_clusters, config.z_dim
        self.y_encoder = mlp(d, h, h, k)  # x -> logits of q(y|x)
        self.z_encoder = nn.Sequential(mlp(d + k, h, h), nn.ReLU())  # (x, y) -> features
        self.z_mean = nn.Linear(h, z)
        self.z_var = nn.Linear(h, z)
        self.prior_mean = nn.Linear(k, z)  # y -> mean of p(z|y)
        self.prior_var = nn.Linear(k, z)
        self.decoder = mlp(z, h, h, d)  # z -> logits (bernoulli) or mean (gaussian) of p(x|z)

    def cluster_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, K) logits of q(y|x)."""
        return self.y_encoder(x)

    def encode_z(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x,y): x (N, D), y (N, K) one-hot or relaxed -> mean, variance (N, Z)."""
        features = self.z_encoder(torch.cat([x, y], dim=-1))
        return self.z_mean(features), F.softplus(self.z_var(features)) + MIN_VARIANCE

    def prior(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p(z|y): y (N, K) -> mean, variance (N, Z)."""
        return self.prior_mean(y), F.softplus(self.prior_var(y)) + MIN_VARIANCE

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """p(x|z): (N, Z) -> (N, D) logits (bernoulli) or means (gaussian)."""
        return self.decoder(z)

    def mean_image(self, decoded: torch.Tensor) -> torch.Tensor:
        """E[x|z] from the decoder's output."""
        return torch.sigmoid(decoded) if self.config.likelihood == "bernoulli" else decoded

    def forward(
        self, x: torch.Tensor, temperature: float, hard: bool = False
    ) -> dict[str, torch.Tensor]:
        """The training objective's terms per example, each (N,), with y drawn by Gumbel-Softmax.

        rec = -log p(x|z); gauss = log q(z|x,y) - log p(z|y); cat = KL(q(y|x) || uniform).
        """
        logits = self.cluster_logits(x)
        y = F.gumbel_softmax(logits, tau=temperature, hard=hard)
        return {**self._z_terms(x, y), "cat": categorical_kl_uniform(logits)}

    def _z_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        mean, var = self.encode_z(x, y)
        z = mean + var.sqrt() * torch.randn_like(mean)
        prior_mean, prior_var = self.prior(y)
        return {
            "rec": reconstruction_nll(x, self.decode(z), self.config.likelihood),
            "gauss": gaussian_log_density(z, mean, var)
            - gaussian_log_density(z, prior_mean, prior_var),
        }

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        """The evidence lower bound per example, (N, D) -> (N,), exact in y.

        Sums over the K one-hot values of y weighted by q(y|x) (no relaxation) with one
        reparameterised sample of z for each: E_q(y|x)[log p(x|z) + log p(z|y) - log q(z|x,y)]
        - KL(q(y|x) || p(y)), p(y) uniform.
        """
        n, k = x.shape[0], self.config.n_clusters
        logits = self.cluster_logits(x)
        eye = torch.eye(k, device=x.device, dtype=x.dtype)
        # Every example paired with every cluster: row i*K + j is (x_i, y=j).
        terms = self._z_terms(x.repeat_interleave(k, dim=0), eye.repeat(n, 1))
        per_cluster = -(terms["rec"] + terms["gauss"]).view(n, k)
        return (logits.softmax(-1) * per_cluster).sum(-1) - categorical_kl_uniform(logits)
