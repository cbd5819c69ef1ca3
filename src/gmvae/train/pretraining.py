"""Starts from a Gaussian mixture: on autoencoder codes, as VaDE does (Jiang et al. 2017), or
on the inputs themselves.

On codes (`pretrain`): the network first learns to reconstruct x through the mean of q(z|x,y)
alone, with y left out; an M-component diagonal Gaussian mixture (M: the model's components, K
or more) is fitted to those codes; the GMVAE then starts from it: p(z|y=k) is the mixture's k-th
component, q(y|x) is taught the mixture's responsibilities, and q(z|x,y) gives the
autoencoder's code whatever y is.

On the inputs (`start_from_inputs`, for tables): an M-component Gaussian mixture is fitted to
the standardised rows (or to a UMAP embedding of them, gmvae.train.embedding) and q(y|x) is
taught its responsibilities. On a table of a few measured
features this is the model a user tries first, and the clusters it finds are the start. In a
semi-supervised run the mixture is fitted with the labelled rows held in their class's component
(mixtures.fit_labelled_start), so the start's cluster k is already class k, or, where the
held-out labelled rows say the classes are not its components, a logistic regression of the
labelled rows is the start (gmvae.train.labelled_start). The objective's start term can hold
q(y|x) to it afterwards (Objective.start_probabilities).

Either way training goes on from clusters that the data's geometry suggests instead of from a
random q(y|x), and learned proportions p(y) start from the mixture's weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.mixture import GaussianMixture

from gmvae.data.batches import epoch_batches
from gmvae.model.losses import reconstruction_nll
from gmvae.model.network import MIN_VARIANCE, UNEQUAL_SHARE, GMVAENet
from gmvae.train.embedding import embed_all_rows, fit_embedding
from gmvae.train.labelled_start import ClassifierStart, fit_semi_supervised_start
from gmvae.train.mixtures import Mixture, fit_mixture, fit_reproduced_mixture, responsibilities

# The mixture is fitted on at most this many codes (a seeded draw): enough for M diagonal
# Gaussians, and seconds instead of minutes on 60,000 MNIST images.
MIXTURE_ROWS = 20_000
CODE_CHUNK = 4096  # rows per forward pass when computing codes
# The mixture on the inputs may have full covariances up to this many features (a table of
# measured quantities, whose correlations differ by cluster); it is diagonal beyond (M D x D
# matrices would be slow and poorly estimated). Up to it, full and diagonal are both fitted and
# the one with the lower BIC is kept: full matrices fitted to too few rows per cluster overfit
# (a 1,000-row table of 50 features around 10 centres), and BIC charges for their parameters.
FULL_COVARIANCE_FEATURES = 50
# The inputs' mixture is chosen among this many seeded fits per covariance, and as many full
# ones started in the whitened space (EM finds a local optimum: one fit split a penguin species
# on some seeds), as KMeans' n_init=10 is (mixtures.fit_reproduced_mixture).
MIXTURE_INITS = 10
# Optimizer steps (whole passes, at least one) that teach q(y|x) the inputs' mixture: one pass
# of a 150-row table is a single step, too few to fit it.
TEACH_STEPS = 200


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
    k = model.config.n_components
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
        order = torch.randperm(n_rows, generator=generator, device=device)
        for rows in epoch_batches(order, batch_size):
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
    targets = start_from_mixture(model, codes, seed)
    teach_clusters(model, n_rows, read, targets.to(device), batch_size, lr, generator)
    return float(total) / n_rows


@dataclass
class InputsStart:
    """What `start_from_inputs` started q(y|x) from: its cluster probabilities (N, M) of every
    row, the labelled mixture's (or the unlabelled one's) mean log-likelihood per fitted row, and
    whether a classifier of the labelled rows was preferred to the mixture."""

    probabilities: torch.Tensor
    mixture_log_likelihood: float
    classifier: bool


def start_from_inputs(
    model: GMVAENet,
    n_rows: int,
    read: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
    lr: float,
    seed: int,
    labels: torch.Tensor | None = None,
    embedded: bool = False,
) -> InputsStart:
    """Fit an M-component Gaussian mixture to (a seeded draw of at most MIXTURE_ROWS of) the
    n_rows inputs that `read(rows)` returns, and teach q(y|x) its responsibilities for at least
    TEACH_STEPS steps. With labels (N,) (-1 unknown), every labelled row is fitted too, component
    k is class k, a labelled row is taught its class, and a logistic regression of the labelled
    rows replaces the mixture where the held-out labelled rows prefer it
    (labelled_start.fit_semi_supervised_start). `embedded`: the mixture (or classifier) is
    fitted to a UMAP embedding of the drawn rows instead, in which every other row is placed
    once (gmvae.train.embedding). Seeded."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    rng = np.random.default_rng(seed)
    fitted = rng.permutation(n_rows)[:MIXTURE_ROWS]
    known = None if labels is None else labels.cpu().numpy()
    if known is not None:
        fitted = np.union1d(fitted, np.flatnonzero(known >= 0))
    fitted = np.sort(fitted)

    def inputs_of(rows: np.ndarray) -> np.ndarray:
        """The rows' inputs (B, D) for their indices (B,)."""
        with torch.no_grad():
            return read(torch.as_tensor(rows, device=device)).cpu().numpy().astype(np.float64)

    features_of = inputs_of  # what the mixture is fitted to: (B,) -> (B, F)
    x = np.concatenate(
        [inputs_of(fitted[i : i + CODE_CHUNK]) for i in range(0, len(fitted), CODE_CHUNK)]
    )
    k = model.config.n_components
    if embedded:
        embedding = fit_embedding(x, k, seed)
        coordinates = embed_all_rows(embedding, fitted, n_rows, inputs_of, CODE_CHUNK)
        x = coordinates[fitted]

        def features_of(rows: np.ndarray) -> np.ndarray:
            return coordinates[rows]

    shapes = ("full", "diag") if x.shape[1] <= FULL_COVARIANCE_FEATURES else ("diag",)
    start: Mixture | ClassifierStart
    if known is None:
        start = fit_reproduced_mixture(k, x, shapes, seed, MIXTURE_INITS)
    else:
        start = fit_semi_supervised_start(k, x, known[fitted], shapes, seed, MIXTURE_INITS)

    def probabilities(rows: torch.Tensor) -> torch.Tensor:
        """The start's p(y|x) (B, M) for the rows (B,), a labelled row's its class."""
        indices = rows.cpu().numpy()
        labels_of_rows = None if known is None else known[indices]
        return torch.as_tensor(responsibilities(start, features_of(indices), labels_of_rows))

    start_proportions(model, start)
    with torch.no_grad():
        targets = torch.cat([
            probabilities(rows) for rows in torch.arange(n_rows, device=device).split(CODE_CHUNK)
        ]).float().to(device)  # fmt: skip
    # A fresh Adam each pass (on a small table, each step): one Adam across the passes
    # clustered breast cancer, iris and penguins worse (the suite's default-teach-one-adam row).
    for _ in range(-(-TEACH_STEPS // -(-n_rows // batch_size))):
        teach_clusters(model, n_rows, read, targets, batch_size, lr, generator)
    return InputsStart(targets, start.log_likelihood / len(x), isinstance(start, ClassifierStart))


def start_proportions(
    model: GMVAENet, mixture: GaussianMixture | Mixture | ClassifierStart
) -> None:
    """Learned proportions p(y) start from the mixture's weights. With proportions "auto" they
    are learned when the mixture gives some component less than UNEQUAL_SHARE of an equal share:
    the balance term would otherwise pull that cluster to at least twice the size its start
    found (on tables whose classes are that unequal it undid the start's partition)."""
    weights = np.asarray(mixture.weights_, dtype=np.float64)
    if model.config.proportions == "auto":
        model.set_learns_proportions(bool(weights.min() < UNEQUAL_SHARE / len(weights)))
    if model.learns_proportions():
        with torch.no_grad():
            start = torch.as_tensor(weights, dtype=torch.float32).clamp_min(1e-6)
            model.proportion_logits.copy_(start.log())


def start_from_mixture(model: GMVAENet, codes: np.ndarray, seed: int) -> torch.Tensor:
    """Fit an M-component diagonal Gaussian mixture to codes (N, Z) and set p(z|y=k) to its
    k-th component (y one-hot: p(z|y)'s layers' column k is the component, their bias 0).
    Returns the mixture's responsibilities for every code, (N, M)."""
    rng = np.random.default_rng(seed)
    fitted_on = codes[rng.permutation(len(codes))[:MIXTURE_ROWS]]
    mixture = fit_mixture(model.config.n_components, fitted_on, "diag", seed)
    start_proportions(model, mixture)
    means = torch.as_tensor(mixture.means_.T, dtype=torch.float32)  # (Z, M)
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
    """One pass, with an Adam of its own, that fits q(y|x) to `targets` (N, M), the mixture's
    responsibilities, by cross-entropy."""
    optimizer = torch.optim.Adam(model.y_encoder.parameters(), lr=lr)
    order = torch.randperm(n_rows, generator=generator, device=targets.device)
    for rows in epoch_batches(order, batch_size):
        if len(rows) < 2:  # batch normalisation needs two rows
            continue
        log_q = F.log_softmax(model.component_logits(read(rows)), -1)
        loss = -(targets[rows] * log_q).sum(-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
