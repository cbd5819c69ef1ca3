"""The GMVAE network: q(y|x), q(z|x,y), p(z|y) and p(x|z), as in the reference project.

Shapes: N examples, D = x_dim features, K = n_clusters, M = n_components (the mixture's
components, y's values: K, or more when over-clustering), Z = z_dim.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from gmvae.errors import GMVAEError
from gmvae.model.losses import (
    LIKELIHOODS,
    categorical_kl,
    categorical_kl_uniform,
    gaussian_kl,
    reconstruction_nll,
)

# Variances come out of a softplus; this floor keeps log(var) and 1/var finite.
MIN_VARIANCE = 1e-6
ARCHITECTURES = ("mlp", "conv")
PROPORTIONS = ("equal", "learned", "auto")
# With proportions "auto", p(y) learns when the start mixture gives some component less than
# this fraction of an equal share (train/pretraining.start_proportions), and stays equal otherwise.
UNEQUAL_SHARE = 0.5


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network; saved as JSON beside the weights."""

    x_dim: int = 784
    image_shape: tuple[int, ...] | None = (28, 28)  # (H, W) or (C, H, W); None for tables
    n_clusters: int = field(default=10, metadata={"help": "number of clusters K"})
    components_per_cluster: int = field(
        default=1,
        metadata={
            "help": "mixture components per cluster: above 1, y takes K times as many values "
            "and after every epoch the components that q(y|x) shares rows between are grouped "
            "into the K clusters (train/merging.py), so a cluster can hold a class of any size "
            "and several styles; unlabelled runs only"
        },
    )
    z_dim: int = field(default=64, metadata={"help": "size of the Gaussian latent z"})
    hidden_dim: int = field(default=512, metadata={"help": "width of every hidden layer"})
    y_hidden_dim: int = field(
        default=0, metadata={"help": "width of q(y|x)'s hidden layers (0: --hidden-dim)"}
    )
    y_batch_norm: bool = field(
        default=False,
        metadata={
            "help": "batch normalisation in q(y|x)'s hidden layers: it starts q(y|x) "
            "away from uniform, so the clustering terms have a gradient to follow"
        },
    )
    proportions: str = field(
        default="equal",
        metadata={
            "help": "the clusters' proportions p(y), the mixture's weights: equal (as the "
            "reference), learned (from the start mixture's weights, for runs that start from "
            "one), or auto: learned when the start mixture gives some cluster less than half an "
            "equal share, else equal",
            "choices": PROPORTIONS,
        },
    )
    likelihood: str = field(
        default="auto",
        metadata={
            "help": "p(x|z): bernoulli (BCE), gaussian (MSE), or auto: bernoulli for data in "
            "[0, 1] (images), gaussian otherwise (standardised tables)",
            "choices": ("auto", *LIKELIHOODS),
        },
    )
    architecture: str = field(
        default="mlp",
        metadata={
            "help": "mlp (the reference), conv (convolutional encoders and decoder, images "
            "only), or auto (mlp: conv clustered MNIST worse and slower, see the README)",
            "choices": ("auto", *ARCHITECTURES),
        },
    )

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        values = dict(values)
        if values.get("image_shape") is not None:
            values["image_shape"] = tuple(values["image_shape"])
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)

    def resolve(
        self, x_dim: int, image_shape: tuple[int, ...] | None, unit_range: bool
    ) -> ModelConfig:
        """This config fitted to data: its size and shape, and "auto" choices made.
        `unit_range`: every value lies in [0, 1]."""
        likelihood = self.likelihood
        if likelihood == "auto":
            likelihood = "bernoulli" if unit_range else "gaussian"
        elif likelihood == "bernoulli" and not unit_range:
            raise GMVAEError("a bernoulli likelihood needs data in [0, 1]; use gaussian or auto")
        architecture = self.architecture
        if architecture == "auto":
            # With the default preset's clustering terms, conv clustered MNIST worse than mlp
            # (median test ACC 88.1 against 98.4, seeds 0-2) at about twice the time an epoch
            # on the CPU (benchmarks/results/clustering/mnist-default-conv/).
            architecture = "mlp"
        return replace(
            self,
            x_dim=x_dim,
            image_shape=image_shape,
            likelihood=likelihood,
            architecture=architecture,
        )

    @property
    def n_components(self) -> int:
        """M, the number of values of y (the mixture's components)."""
        return self.n_clusters * self.components_per_cluster

    def validate(self) -> None:
        if self.likelihood not in LIKELIHOODS:
            raise GMVAEError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.proportions not in PROPORTIONS:
            raise GMVAEError(f"proportions must be one of {PROPORTIONS}, got {self.proportions!r}")
        if self.architecture not in ARCHITECTURES:
            raise GMVAEError(f"architecture must be one of {ARCHITECTURES}")
        if self.architecture == "conv" and self.image_shape is None:
            raise GMVAEError("the conv architecture needs images; use mlp for tables")
        if self.y_hidden_dim < 0:
            raise GMVAEError("y_hidden_dim must be at least 0")
        names = ("x_dim", "n_clusters", "components_per_cluster", "z_dim", "hidden_dim")
        sizes = {k: getattr(self, k) for k in names}
        if min(sizes.values()) < 1:
            raise GMVAEError(f"sizes must be at least 1: {sizes}")
        shape = self.image_shape
        if shape is not None and (len(shape) not in (2, 3) or math.prod(shape) != self.x_dim):
            raise GMVAEError(f"image_shape {shape} does not hold x_dim = {self.x_dim} values")


def mlp(*sizes: int, batch_norm: bool = False) -> nn.Sequential:
    """Linear layers of the given sizes with ReLU between them (none after the last), and
    batch normalisation before each ReLU when asked."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.extend([nn.BatchNorm1d(n_out), nn.ReLU()] if batch_norm else [nn.ReLU()])
    return nn.Sequential(*layers)


def _channels_first(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return (1, *shape) if len(shape) == 2 else shape


class ConvTrunk(nn.Module):
    """Images (N, C*H*W) -> features (N, out): two stride-2 3x3 convolutions, then a linear
    layer, with batch normalisation before each ReLU when asked. Each convolution halves H and
    W, rounding up, so any size works."""

    def __init__(self, image_shape: tuple[int, ...], out: int, batch_norm: bool = False):
        super().__init__()
        self.shape = _channels_first(image_shape)
        c, h, w = self.shape

        def norm(layer: type[nn.Module], n: int) -> list[nn.Module]:
            return [layer(n)] if batch_norm else []

        self.convs = nn.Sequential(
            nn.Conv2d(c, 32, 3, stride=2, padding=1),
            *norm(nn.BatchNorm2d, 32),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            *norm(nn.BatchNorm2d, 64),
            nn.ReLU(),
            nn.Flatten(),
        )
        area = math.ceil(math.ceil(h / 2) / 2) * math.ceil(math.ceil(w / 2) / 2)
        self.linear = nn.Sequential(
            nn.Linear(64 * area, out), *norm(nn.BatchNorm1d, out), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x.view(-1, *self.shape)))


class ConvDecoder(nn.Module):
    """z (N, Z) -> (N, C*H*W): linear layers to a 64-channel map of a quarter of the size, then
    two stride-2 transposed convolutions; the result is cropped to H x W."""

    def __init__(self, image_shape: tuple[int, ...], z_dim: int, hidden: int):
        super().__init__()
        self.shape = _channels_first(image_shape)
        c, h, w = self.shape
        self.grid = (64, math.ceil(math.ceil(h / 2) / 2), math.ceil(math.ceil(w / 2) / 2))
        self.linear = nn.Sequential(
            nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, math.prod(self.grid)), nn.ReLU()
        )
        self.deconvs = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, c, 4, stride=2, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        c, h, w = self.shape
        maps = self.deconvs(self.linear(z).view(-1, *self.grid))
        return maps[:, :, :h, :w].reshape(len(z), c * h * w)


def draw_noise(
    n: int, config: ModelConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gumbel(0, 1) noise (n, M) for y and standard normal noise (n, Z) for z."""
    uniform = torch.rand(n, config.n_components, device=device).clamp_(1e-10, 1 - 1e-7)
    return -(-uniform.log()).log(), torch.randn(n, config.z_dim, device=device)


@dataclass
class NetworkOutput:
    """One pass of the network: logits (N, M) of q(y|x), the sample y (N, M), q(z|x,y)'s
    z_mean and z_var (N, Z) with the sample z (N, Z), p(z|y)'s prior_mean and prior_var
    (N, Z), and `decoded` (N, D): p(x|z)'s logits (bernoulli) or means (gaussian)."""

    logits: torch.Tensor
    y: torch.Tensor
    z_mean: torch.Tensor
    z_var: torch.Tensor
    z: torch.Tensor
    prior_mean: torch.Tensor
    prior_var: torch.Tensor
    decoded: torch.Tensor


def _read_proportions_flag(module: GMVAENet, incompatible_keys: object) -> None:
    """After load_state_dict: the Python flag from the loaded decision."""
    module._learns_proportions = bool(module.learns_proportions_flag)


class GMVAENet(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        d, h, k, z = config.x_dim, config.hidden_dim, config.n_components, config.z_dim
        y_h, y_norm = config.y_hidden_dim or h, config.y_batch_norm
        if config.architecture == "mlp":
            self.y_encoder = mlp(d, y_h, y_h, k, batch_norm=y_norm)  # x -> logits
            self.z_trunk = nn.Identity()  # y joins x at the input, as in the reference
            z_input = d
            self.decoder = mlp(z, h, h, d)  # z -> logits (bernoulli) or mean (gaussian)
        else:
            self.y_encoder = nn.Sequential(
                ConvTrunk(config.image_shape, y_h, y_norm), nn.Linear(y_h, k)
            )
            self.z_trunk = ConvTrunk(config.image_shape, h)  # y joins the image features
            z_input = h
            self.decoder = ConvDecoder(config.image_shape, z, h)
        self.z_encoder = nn.Sequential(mlp(z_input + k, h, h), nn.ReLU())  # (x, y) -> features
        self.z_mean = nn.Linear(h, z)
        self.z_var = nn.Linear(h, z)
        self.prior_mean = nn.Linear(k, z)  # y -> mean of p(z|y)
        self.prior_var = nn.Linear(k, z)
        # p(y) = softmax(proportion_logits) when learned; uniform (no parameter) when equal.
        learnable = config.proportions != "equal"
        self.proportion_logits = nn.Parameter(torch.zeros(k)) if learnable else None
        self._learns_proportions = config.proportions == "learned"
        if config.proportions == "auto":
            # Decided by the start (set_learns_proportions) and saved with the weights; the
            # Python flag mirrors it so that no step reads it back from the device.
            self.register_buffer("learns_proportions_flag", torch.tensor(False))
            self.register_load_state_dict_post_hook(_read_proportions_flag)
        # The cluster of each component (M,): set by train/merging.py when M > K.
        cluster = torch.arange(k) // config.components_per_cluster
        self.register_buffer("component_cluster", cluster)

    def component_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, M) logits of q(y|x)."""
        return self.y_encoder(x)

    def cluster_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, K): q(y|x) summed over each cluster's components."""
        probabilities = self.component_logits(x).softmax(-1)
        clusters = probabilities.new_zeros(len(x), self.config.n_clusters)
        return clusters.index_add_(1, self.component_cluster, probabilities)

    def encode_z(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x,y): x (N, D), y (N, M) one-hot or relaxed -> mean, variance (N, Z)."""
        features = self.z_encoder(torch.cat([self.z_trunk(x), y], dim=-1))
        return self.z_mean(features), F.softplus(self.z_var(features)) + MIN_VARIANCE

    def prior(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p(z|y): y (N, M) -> mean, variance (N, Z)."""
        return self.prior_mean(y), F.softplus(self.prior_var(y)) + MIN_VARIANCE

    def learns_proportions(self) -> bool:
        """Whether p(y) is learned (else uniform)."""
        return self._learns_proportions

    def set_learns_proportions(self, learned: bool) -> None:
        """For proportions "auto": the start's decision."""
        self.learns_proportions_flag.fill_(learned)
        self._learns_proportions = learned

    def log_proportions(self) -> torch.Tensor:
        """log p(y): (M,)."""
        if not self._learns_proportions:
            k = self.config.n_components
            return torch.full((k,), -math.log(k), device=self.prior_mean.weight.device)
        return F.log_softmax(self.proportion_logits, -1)

    def cluster_kl(self, logits: torch.Tensor) -> torch.Tensor:
        """KL(q(y|x) || p(y)) per row: logits (N, M) -> (N,)."""
        if not self._learns_proportions:
            return categorical_kl_uniform(logits)
        return categorical_kl(logits, self.log_proportions())

    def cluster_axes(self) -> list[tuple[nn.Parameter, int, int]]:
        """Where the parameters are indexed by component: (parameter, dim, offset), the M
        components at [offset, offset + M) along dim. Permuting all of them renames the
        components and changes nothing else (every term is symmetric in y once p(y) is permuted
        too). Only runs with labels rename, and they have one component per cluster."""
        logits = self.y_encoder[-1]  # the last Linear of q(y|x), in both architectures
        z_input = self.z_encoder[0][0]
        axes = [
            (logits.weight, 0, 0),
            (logits.bias, 0, 0),
            (z_input.weight, 1, z_input.in_features - self.config.n_components),
            (self.prior_mean.weight, 1, 0),
            (self.prior_var.weight, 1, 0),
        ]
        if self.proportion_logits is not None:
            axes.append((self.proportion_logits, 0, 0))
        return axes

    def y_input_weight(self) -> torch.Tensor:
        """The (H, M) weights through which y enters q(z|x,y) (a view: its first Linear's last
        M input columns)."""
        z_input = self.z_encoder[0][0]
        return z_input.weight[:, z_input.in_features - self.config.n_components :]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """p(x|z): (N, Z) -> (N, D) logits (bernoulli) or means (gaussian)."""
        return self.decoder(z)

    def mean_image(self, decoded: torch.Tensor) -> torch.Tensor:
        """E[x|z] from the decoder's output."""
        return torch.sigmoid(decoded) if self.config.likelihood == "bernoulli" else decoded

    def forward(
        self,
        x: torch.Tensor,
        temperature: float,
        hard: bool = False,
        noise: tuple[torch.Tensor, torch.Tensor] | None = None,
        labels: torch.Tensor | None = None,
        detach_clusters: bool = False,
    ) -> NetworkOutput:
        """Inference and generation for x (N, D): y drawn from q(y|x) by Gumbel-Softmax at
        `temperature` (straight-through one-hot when `hard`), z from q(z|x,y), x decoded.

        noise: (gumbel (N, M), normal (N, Z)) to use instead of fresh draws; training passes
        it so that a batch split across processes sees the noise it would see in one process.
        labels: (N,) class per row, -1 where unknown: a labelled row takes its class as y.
        detach_clusters: y carries no gradient to q(y|x) (the returned logits still do).
        """
        if noise is None:
            noise = draw_noise(len(x), self.config, x.device)
        gumbel, normal = noise
        logits = self.component_logits(x)
        sampled_logits = logits.detach() if detach_clusters else logits
        y = F.softmax((sampled_logits + gumbel) / temperature, dim=-1)
        if hard:  # straight-through: one-hot forward, the soft sample's gradient backward
            y = F.one_hot(y.argmax(-1), y.shape[-1]).to(y.dtype) - y.detach() + y
        if labels is not None:
            one_hot = F.one_hot(labels.clamp_min(0), y.shape[-1]).to(y.dtype)
            y = torch.where((labels >= 0)[:, None], one_hot, y)
        mean, var = self.encode_z(x, y)
        z = mean + var.sqrt() * normal
        prior_mean, prior_var = self.prior(y)
        return NetworkOutput(logits, y, mean, var, z, prior_mean, prior_var, self.decode(z))

    def elbo(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The evidence lower bound per example, (N, D) -> (N,), exact in y.

        Sums over the M one-hot values of y weighted by q(y|x) (no relaxation):
        E_q(y|x)[E_q(z|x,y) log p(x|z) - KL(q(z|x,y) || p(z|y))] - KL(q(y|x) || p(y)). The
        Gaussian KL is exact; log p(x|z) takes one reparameterised z per component,
        z = mean + sd * noise[y], with `noise` (M, Z) standard normal shared by every example,
        so an example's ELBO does not depend on the batch it is in.
        """
        n, k = x.shape[0], self.config.n_components
        logits = self.component_logits(x)
        eye = torch.eye(k, device=x.device, dtype=x.dtype)
        # Every example paired with every component: row i*M + j is (x_i, y=j).
        x_k, y_k = x.repeat_interleave(k, dim=0), eye.repeat(n, 1)
        mean, var = self.encode_z(x_k, y_k)
        z = mean + var.sqrt() * noise.repeat(n, 1)
        rec = reconstruction_nll(x_k, self.decode(z), self.config.likelihood)
        kl = gaussian_kl(mean, var, *self.prior(y_k))
        per_cluster = -(rec + kl).view(n, k)
        return (logits.softmax(-1) * per_cluster).sum(-1) - self.cluster_kl(logits)
