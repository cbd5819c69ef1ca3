"""Gaussian mixtures fitted to rows, the starts of pretraining.py: without labels (on a table,
the most likely optimum that more than one start reaches), and with some rows' classes known,
component k being class k.

Both are fitted by one EM (`_expectation_maximisation`). With labels, a labelled row's
responsibilities are held at its class (Nigam et al. 2000's semi-supervised EM): the unlabelled
rows shape the components, the labelled ones name them and pull them to their class. EM finds a
local optimum, so it runs from several starts (k-means partitions; with labels also the labelled
rows' class means, and the unlabelled fits matched to the classes) and one is kept.

Every component's variances are held above each feature's quantisation floor: a feature recorded
on a grid of step h (integer scores, counts, flags) has at least the variance of rounding to it,
h^2 / 12 (Sheppard's correction). Without the floor, a component can shrink onto the rows that
share one grid value and win the likelihood without separating anything (tests/test_mixtures.py:
a table of 1-10 scores).

Shapes: N rows, F features, K components.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import logsumexp
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture

# Added to every covariance's diagonal, as GaussianMixture's reg_covar, and the least floor:
# keeps a component of few rows (or of a constant feature) invertible.
REG_COVAR = 1e-4
# EM stops when the mean log-likelihood per row gains less than this, or after MAX_ITER steps
# (GaussianMixture's defaults).
TOL = 1e-3
MAX_ITER = 100
# Two fits whose partitions agree above this adjusted Rand index found the same optimum.
SAME_PARTITION_ARI = 0.9
# A component estimated from fewer than this many times the rows that make its covariance
# nonsingular (F + 1 for a full one, 2 for a diagonal one) fits a few outlying rows, not a
# cluster: its covariance is near singular and its density a spike that wins the likelihood and
# BIC. A fit with one is not a candidate for a table's start while any fit without one is.
ROWS_PER_NONSINGULAR = 2
# A table's candidate fits see at most this many rows (a seeded draw) and the chosen one is
# refitted on all, so that the 30 fits keep a 10,000-row table within its minute
# (benchmarks/results/table-speed/).
SELECTION_ROWS = 2_000


@dataclass
class Mixture:
    """A fitted Gaussian mixture: weights_ (K,), means_ (K, F), covariances_ (K, F, F) for
    "full" or (K, F) for "diag"; log_likelihood: the total over the rows it was fitted to, a
    labelled row counted under its own class's component."""

    covariance: str
    weights_: np.ndarray
    means_: np.ndarray
    covariances_: np.ndarray
    log_likelihood: float = -np.inf

    def log_joint(self, x: np.ndarray) -> np.ndarray:
        """log p(y = k) + log N(x; mean_k, cov_k): (N, F) -> (N, K)."""
        columns = []
        for mean, cov in zip(self.means_, self.covariances_, strict=True):
            centred = x - mean
            if self.covariance == "diag":
                mahalanobis = (centred**2 / cov).sum(1)
                log_det = np.log(cov).sum()
            else:
                chol = np.linalg.cholesky(cov)
                mahalanobis = (np.linalg.solve(chol, centred.T) ** 2).sum(0)
                log_det = 2 * np.log(np.diag(chol)).sum()
            columns.append(-0.5 * (mahalanobis + log_det + x.shape[1] * np.log(2 * np.pi)))
        return np.log(self.weights_) + np.stack(columns, 1)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """p(y | x): (N, F) -> (N, K)."""
        joint = self.log_joint(x)
        return np.exp(joint - logsumexp(joint, 1, keepdims=True))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The most probable component of each row: (N, F) -> (N,)."""
        return self.log_joint(x).argmax(1)

    def n_parameters(self) -> int:
        k, f = self.means_.shape
        per_component = f * (f + 1) // 2 if self.covariance == "full" else f
        return k - 1 + k * f + k * per_component

    def bic(self, n_rows: int) -> float:
        return -2 * self.log_likelihood + self.n_parameters() * np.log(n_rows)


def fit_mixture(
    k: int, x: np.ndarray, covariance: str, seed: int, n_init: int = 1
) -> GaussianMixture:
    """A k-component Gaussian mixture fitted to rows x (N, F) by scikit-learn, the most likely
    of `n_init` seeded fits (autoencoder codes: continuous, no floor needed)."""
    mixture = GaussianMixture(
        k, covariance_type=covariance, reg_covar=REG_COVAR, n_init=n_init, random_state=seed
    )
    return mixture.fit(np.asarray(x, dtype=np.float64))


def quantisation_floor(x: np.ndarray) -> np.ndarray:
    """Each feature's least variance (F,): h^2 / 12 for h the smallest gap between its distinct
    values in rows x (N, F), at least REG_COVAR (a continuous feature's h is tiny)."""
    floors = []
    for column in x.T:
        values = np.unique(column)
        gap = np.diff(values).min() if len(values) > 1 else 0.0
        floors.append(gap**2 / 12)
    return np.maximum(np.array(floors), REG_COVAR)


def whitening(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean (F,) and the map A (F, F) that take rows x (N, F) to (x - mean) @ A, their
    principal axes scaled to unit variance (a constant direction is left at its scale)."""
    mean = x.mean(0)
    variances, axes = np.linalg.eigh(np.cov(x.T, bias=True).reshape(x.shape[1], x.shape[1]))
    return mean, axes / np.sqrt(np.where(variances > REG_COVAR, variances, 1.0))


def _kmeans_partition(k: int, x: np.ndarray, seed: int) -> np.ndarray:
    """One seeded k-means run's partition of rows x (N, F) as responsibilities (N, K), the start
    GaussianMixture's init_params="kmeans" makes."""
    return np.eye(k)[KMeans(k, n_init=1, random_state=seed).fit_predict(x)]


def _fit_from_partition(
    x: np.ndarray, resp: np.ndarray, covariance: str, floor: np.ndarray
) -> Mixture:
    """Unlabelled EM on rows x (N, F) from the mixture that responsibilities resp (N, K) make."""
    unlabelled = np.full(len(x), -1)
    return _expectation_maximisation(x, unlabelled, _maximise(x, resp, covariance, floor), floor)


def fit_reproduced_mixture(
    k: int, x: np.ndarray, covariances: tuple[str, ...], seed: int, n_init: int
) -> Mixture:
    """The k-component mixture of rows x (N, F) with the lowest BIC among the seeded fits whose
    partition another fit of the same covariance reproduces and whose components are all well
    populated (`well_populated`); failing that, among the well-populated fits; failing that, of
    all.
    Beyond SELECTION_ROWS rows the fits are made on a seeded draw of them, and the chosen one
    is refitted on all.

    Each covariance ("full", "diag") is fitted from `n_init` seeded k-means starts on x; "full"
    also from `n_init` k-means starts in the whitened space (the same densities, another metric
    for k-means: it finds crabs' species x sex, which starts on x miss). An optimum that one
    start alone reaches is not trusted: on breast cancer such one-off fits are likelier than the
    mixture every start finds and split the diagnosis worse (benchmarks/results/suite/)."""
    x = np.asarray(x, dtype=np.float64)
    floor = quantisation_floor(x)
    rng = np.random.default_rng(seed)
    seeds = [int(s) for s in rng.integers(2**31, size=n_init)]
    drawn = x[np.sort(rng.permutation(len(x))[:SELECTION_ROWS])] if len(x) > SELECTION_ROWS else x
    mean, a = whitening(drawn)
    trusted, populated, every = [], [], []
    for covariance in covariances:
        starts = [_kmeans_partition(k, drawn, s) for s in seeds]
        if covariance == "full":
            starts += [_kmeans_partition(k, (drawn - mean) @ a, s) for s in seeds]
        fits = [_fit_from_partition(drawn, resp, covariance, floor) for resp in starts]
        every += fits
        partitions = [fit.predict(drawn) for fit in fits]
        kept = [i for i, part in enumerate(partitions) if well_populated(fits[i], part, drawn)]
        populated += [fits[i] for i in kept]
        trusted += [fits[kept[j]] for j in reproduced([partitions[i] for i in kept])]
    candidates = trusted or populated or every
    chosen = min(candidates, key=lambda fit: fit.bic(len(drawn)))  # the first of equals
    if drawn is x:
        return chosen
    return _expectation_maximisation(x, np.full(len(x), -1), chosen, floor)


def well_populated(fit: Mixture, partition: np.ndarray, x: np.ndarray) -> bool:
    """Whether every component of the fit is the most probable one (`partition` (N,), its
    predict(x)) for at least ROWS_PER_NONSINGULAR times the rows x (N, F) that make its
    covariance nonsingular: F + 1 for a full one, 2 for a diagonal one."""
    nonsingular = x.shape[1] + 1 if fit.covariance == "full" else 2
    sizes = np.bincount(partition, minlength=len(fit.weights_))
    return int(sizes.min()) >= ROWS_PER_NONSINGULAR * nonsingular


def reproduced(partitions: list[np.ndarray]) -> list[int]:
    """The indices of the partitions (each (N,)) that another one of them matches (adjusted Rand
    index above SAME_PARTITION_ARI)."""
    return [
        i
        for i, partition in enumerate(partitions)
        if any(
            adjusted_rand_score(partition, other) > SAME_PARTITION_ARI
            for j, other in enumerate(partitions)
            if j != i
        )
    ]


class GivesProbabilities(Protocol):
    """A start that gives p(y | x): a Mixture, or labelled_start.ClassifierStart."""

    def predict_proba(self, x: np.ndarray) -> np.ndarray: ...


def responsibilities(
    start: GivesProbabilities, x: np.ndarray, labels: np.ndarray | None
) -> np.ndarray:
    """The start's p(y | x) (N, K) for rows x (N, F), a labelled row's (labels >= 0) held at
    its class (one-hot)."""
    resp = start.predict_proba(x)
    if labels is not None:
        known = labels >= 0
        resp[known] = np.eye(resp.shape[1])[labels[known]]
    return resp


def _maximise(x: np.ndarray, resp: np.ndarray, covariance: str, floor: np.ndarray) -> Mixture:
    """The M step: the mixture that the responsibilities resp (N, K) make of rows x (N, F), each
    feature's variance raised by its floor (F,)."""
    counts = resp.sum(0) + 10 * np.finfo(float).eps
    means = resp.T @ x / counts[:, None]
    covariances = []
    for j, mean in enumerate(means):
        centred = x - mean
        weighted = resp[:, j, None] * centred
        if covariance == "diag":
            covariances.append((weighted * centred).sum(0) / counts[j] + floor)
        else:
            covariances.append(weighted.T @ centred / counts[j] + np.diag(floor))
    return Mixture(covariance, counts / len(x), means, np.stack(covariances))


def _expectation(x: np.ndarray, labels: np.ndarray, mixture: Mixture) -> np.ndarray:
    """The E step: the responsibilities (N, K), a labelled row's held at its class; sets the
    mixture's log_likelihood, a labelled row's under its class's component."""
    known = labels >= 0
    joint = mixture.log_joint(x)
    per_row = logsumexp(joint, 1, keepdims=True)
    resp = np.exp(joint - per_row)
    resp[known] = np.eye(joint.shape[1])[labels[known]]
    per_row = per_row[:, 0]
    per_row[known] = joint[known, labels[known]]
    mixture.log_likelihood = float(per_row.sum())
    return resp


def _expectation_maximisation(
    x: np.ndarray, labels: np.ndarray, start: Mixture, floor: np.ndarray
) -> Mixture:
    """EM on rows x (N, F) from `start`, the labelled rows' (labels (N,) >= 0) responsibilities
    held at their class."""
    mixture = start
    resp = _expectation(x, labels, mixture)
    for _ in range(MAX_ITER):
        fitted = _maximise(x, resp, mixture.covariance, floor)
        resp = _expectation(x, labels, fitted)
        gain = fitted.log_likelihood - mixture.log_likelihood
        mixture = fitted
        if gain < TOL * len(x):
            break
    return mixture


def _matched_to_classes(fit: Mixture, x: np.ndarray, labels: np.ndarray) -> Mixture:
    """An unsupervised fit with its components reordered so that component k is the one the
    labelled rows of class k fall in most (Hungarian matching of their responsibilities)."""
    known = labels >= 0
    k = len(fit.weights_)
    support = np.zeros((k, k))  # (classes, components)
    np.add.at(support, labels[known], fit.predict_proba(x[known]))
    classes, components = linear_sum_assignment(support, maximize=True)
    order = components[np.argsort(classes)]
    return Mixture(fit.covariance, fit.weights_[order], fit.means_[order], fit.covariances_[order])


def _class_means_start(
    x: np.ndarray, labels: np.ndarray, k: int, covariance: str, floor: np.ndarray
) -> Mixture | None:
    """Components at the labelled rows' class means, each with the covariance of all the rows,
    equal weights; None unless every class has a labelled row."""
    known = labels >= 0
    if len(np.unique(labels[known])) < k:
        return None
    means = np.stack([x[labels == c].mean(0) for c in range(k)])
    cov = np.cov(x.T).reshape(x.shape[1], x.shape[1]) + np.diag(floor)
    spread = np.diag(cov) if covariance == "diag" else cov
    return Mixture(covariance, np.full(k, 1 / k), means, np.stack([spread] * k))


def fit_labelled_mixture(
    k: int, x: np.ndarray, labels: np.ndarray, covariance: str, seed: int, n_init: int
) -> Mixture:
    """A k-component mixture of rows x (N, F) with component k = class k for the labelled rows
    (labels (N,), -1 unknown): semi-supervised EM from the class means and from `n_init` seeded
    unsupervised fits matched to the classes, the most likely kept (the first of equals)."""
    x = np.asarray(x, dtype=np.float64)
    floor = quantisation_floor(x)
    seeds = np.random.default_rng(seed).integers(2**31, size=n_init)
    starts = [_class_means_start(x, labels, k, covariance, floor)]
    starts += [
        _matched_to_classes(
            _fit_from_partition(x, _kmeans_partition(k, x, int(s)), covariance, floor), x, labels
        )
        for s in seeds
    ]
    fits = [_expectation_maximisation(x, labels, s, floor) for s in starts if s is not None]
    return max(fits, key=lambda fit: fit.log_likelihood)


def fit_labelled_start(
    k: int, x: np.ndarray, labels: np.ndarray, covariances: tuple[str, ...], seed: int, n_init: int
) -> Mixture:
    """The start of a semi-supervised table: for each covariance a `fit_labelled_mixture` of rows
    x (N, F) with labels (N,) (-1 unknown), the one with the lowest BIC kept; but a full fit is
    dropped for a diagonal one that gives more labelled rows their own class when their labels
    are hidden (`labelled_agreement`).

    BIC can prefer a full fit that spends a component on a few outlying rows while that class's
    labelled rows fall in another (a row whose pair of measurements was swapped); the labelled
    rows are the one evidence of what the classes are. Only a full fit is overruled: its extra
    freedom fits the labelled rows it was fitted with, so their agreement flatters it."""
    fits = [fit_labelled_mixture(k, x, labels, shape, seed, n_init) for shape in covariances]
    chosen = min(fits, key=lambda fit: fit.bic(len(x)))
    if chosen.covariance != "full":
        return chosen
    diagonal = next((fit for fit in fits if fit.covariance == "diag"), None)
    if diagonal is None:
        return chosen
    agrees_more = labelled_agreement(diagonal, x, labels) > labelled_agreement(chosen, x, labels)
    return diagonal if agrees_more else chosen


def labelled_agreement(fit: Mixture, x: np.ndarray, labels: np.ndarray) -> float:
    """The share of the labelled rows of x (N, F) (labels (N,), -1 unknown) whose most probable
    component, their label unseen, is their class."""
    known = labels >= 0
    return float(np.mean(fit.predict(x[known]) == labels[known]))
