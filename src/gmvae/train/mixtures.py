"""Gaussian mixtures fitted to rows, the starts of pretraining.py: without labels (scikit-learn's
GaussianMixture; on a table, the most likely optimum that more than one start reaches), and with
some rows' classes known, component k being class k.

With labels the mixture is fitted by EM in which a labelled row's responsibilities are held at
its class (Nigam et al. 2000's semi-supervised EM): the unlabelled rows shape the components, the
labelled ones name them and pull them to their class. EM finds a local optimum, so it runs from
several starts (the labelled rows' class means, and unsupervised fits whose components are
matched to the classes through the labelled rows) and keeps the most likely.

Shapes: N rows, F features, K components.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import logsumexp
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture

# Added to every covariance's diagonal, as GaussianMixture's reg_covar: keeps a component of
# few rows (or of a constant feature) invertible.
REG_COVAR = 1e-4
# EM stops when the mean log-likelihood per row gains less than this, or after MAX_ITER steps
# (GaussianMixture's defaults).
TOL = 1e-3
MAX_ITER = 100
# Two fits whose partitions agree above this adjusted Rand index found the same optimum.
SAME_PARTITION_ARI = 0.9
# A table's candidate fits see at most this many rows (a seeded draw) and the chosen one is
# refitted on all, so that the 30 fits keep a 10,000-row table within its minute
# (benchmarks/results/table-speed/).
SELECTION_ROWS = 2_000


def fit_mixture(
    k: int, x: np.ndarray, covariance: str, seed: int, n_init: int = 1
) -> GaussianMixture:
    """A k-component Gaussian mixture fitted to rows x (N, F), the most likely of `n_init`
    seeded fits."""
    mixture = GaussianMixture(
        k, covariance_type=covariance, reg_covar=REG_COVAR, n_init=n_init, random_state=seed
    )
    return mixture.fit(np.asarray(x, dtype=np.float64))


def whitening(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean (F,) and the map A (F, F) that take rows x (N, F) to (x - mean) @ A, their
    principal axes scaled to unit variance (a constant direction is left at its scale)."""
    mean = x.mean(0)
    variances, axes = np.linalg.eigh(np.cov(x.T, bias=True).reshape(x.shape[1], x.shape[1]))
    return mean, axes / np.sqrt(np.where(variances > REG_COVAR, variances, 1.0))


def _fit_started_whitened(k: int, x: np.ndarray, seed: int) -> GaussianMixture:
    """A full-covariance mixture of rows x (N, F) whose EM starts from k-means in the whitened
    space: fitted there, mapped back (w = (x - m) A: mean_x = mean_w A^-1 + m, precision_x =
    A precision_w A^T) and refitted on x, so that it is scored as any fit on x is."""
    mean, a = whitening(x)
    on_whitened = fit_mixture(k, (x - mean) @ a, "full", seed)
    means = on_whitened.means_ @ np.linalg.inv(a) + mean
    return _refit(on_whitened, means, a @ on_whitened.precisions_ @ a.T, x)


def _refit(
    start: GaussianMixture, means: np.ndarray, precisions: np.ndarray, x: np.ndarray
) -> GaussianMixture:
    """EM on rows x (N, F) from start's weights and covariance type, with means (K, F) and
    precisions (K, F, F) or (K, F) given in x's space."""
    mixture = GaussianMixture(
        start.n_components,
        covariance_type=start.covariance_type,
        reg_covar=REG_COVAR,
        weights_init=start.weights_,
        means_init=means,
        precisions_init=precisions,
    )
    return mixture.fit(x)


def fit_reproduced_mixture(
    k: int, x: np.ndarray, covariances: tuple[str, ...], seed: int, n_init: int
) -> GaussianMixture:
    """The k-component mixture of rows x (N, F) with the lowest BIC among the seeded fits whose
    partition another fit of the same covariance reproduces; the lowest of all when none is.
    Beyond SELECTION_ROWS rows the fits are made on a seeded draw of them, and the chosen one
    is refitted on all.

    Each covariance ("full", "diag") is fitted from `n_init` seeded k-means starts on x; "full"
    also from `n_init` starts in the whitened space (the same densities, another metric for
    k-means: it finds crabs' species x sex, which starts on x miss). An optimum that one start
    alone reaches is not trusted: on breast cancer such one-off fits are likelier than the
    mixture every start finds and split the diagnosis worse (benchmarks/results/suite/)."""
    x = np.asarray(x, dtype=np.float64)
    rng = np.random.default_rng(seed)
    seeds = [int(s) for s in rng.integers(2**31, size=n_init)]
    drawn = x[np.sort(rng.permutation(len(x))[:SELECTION_ROWS])] if len(x) > SELECTION_ROWS else x
    trusted, every = [], []
    for covariance in covariances:
        fits = [fit_mixture(k, drawn, covariance, s) for s in seeds]
        if covariance == "full":
            fits += [_fit_started_whitened(k, drawn, s) for s in seeds]
        every += fits
        trusted += [fits[i] for i in reproduced([fit.predict(drawn) for fit in fits])]
    chosen = min(trusted or every, key=lambda fit: fit.bic(drawn))  # the first of equals
    return chosen if drawn is x else _refit(chosen, chosen.means_, chosen.precisions_, x)


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


@dataclass
class LabelledMixture:
    """A mixture whose component k is class k. weights_ (K,), means_ (K, F), covariances_
    (K, F, F) for "full" or (K, F) for "diag"; log_likelihood: the total over the rows it was
    fitted to, a labelled row counted under its own class's component."""

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

    def n_parameters(self) -> int:
        k, f = self.means_.shape
        per_component = f * (f + 1) // 2 if self.covariance == "full" else f
        return k - 1 + k * f + k * per_component

    def bic(self, n_rows: int) -> float:
        return -2 * self.log_likelihood + self.n_parameters() * np.log(n_rows)


def responsibilities(mixture: LabelledMixture, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """p(y | x) (N, K) with a labelled row's (labels >= 0) held at its class (one-hot)."""
    known = labels >= 0
    resp = mixture.predict_proba(x)
    resp[known] = np.eye(resp.shape[1])[labels[known]]
    return resp


def _maximise(x: np.ndarray, resp: np.ndarray, covariance: str) -> LabelledMixture:
    """The M step: the mixture that the responsibilities resp (N, K) make of rows x (N, F)."""
    counts = resp.sum(0) + 10 * np.finfo(float).eps
    means = resp.T @ x / counts[:, None]
    covariances = []
    for j, mean in enumerate(means):
        centred = x - mean
        weighted = resp[:, j, None] * centred
        if covariance == "diag":
            covariances.append((weighted * centred).sum(0) / counts[j] + REG_COVAR)
        else:
            cov = weighted.T @ centred / counts[j]
            covariances.append(cov + REG_COVAR * np.eye(x.shape[1]))
    return LabelledMixture(covariance, counts / len(x), means, np.stack(covariances))


def _expectation(x: np.ndarray, labels: np.ndarray, mixture: LabelledMixture) -> np.ndarray:
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
    x: np.ndarray, labels: np.ndarray, start: LabelledMixture
) -> LabelledMixture:
    """EM from `start` with the labelled rows' responsibilities held at their class."""
    mixture = start
    resp = _expectation(x, labels, mixture)
    for _ in range(MAX_ITER):
        fitted = _maximise(x, resp, mixture.covariance)
        resp = _expectation(x, labels, fitted)
        gain = fitted.log_likelihood - mixture.log_likelihood
        mixture = fitted
        if gain < TOL * len(x):
            break
    return mixture


def _matched_to_classes(
    fit: GaussianMixture, x: np.ndarray, labels: np.ndarray, covariance: str
) -> LabelledMixture:
    """An unsupervised fit with its components reordered so that component k is the one the
    labelled rows of class k fall in most (Hungarian matching of their responsibilities)."""
    known = labels >= 0
    k = fit.n_components
    support = np.zeros((k, k))  # (classes, components)
    np.add.at(support, labels[known], fit.predict_proba(x[known]))
    classes, components = linear_sum_assignment(support, maximize=True)
    order = components[np.argsort(classes)]
    return LabelledMixture(
        covariance, fit.weights_[order], fit.means_[order], fit.covariances_[order]
    )


def _class_means_start(
    x: np.ndarray, labels: np.ndarray, k: int, covariance: str
) -> LabelledMixture | None:
    """Components at the labelled rows' class means, each with the covariance of all the rows,
    equal weights; None unless every class has a labelled row."""
    known = labels >= 0
    if len(np.unique(labels[known])) < k:
        return None
    means = np.stack([x[labels == c].mean(0) for c in range(k)])
    cov = np.cov(x.T).reshape(x.shape[1], x.shape[1]) + REG_COVAR * np.eye(x.shape[1])
    spread = np.diag(cov) if covariance == "diag" else cov
    return LabelledMixture(covariance, np.full(k, 1 / k), means, np.stack([spread] * k))


def fit_labelled_mixture(
    k: int, x: np.ndarray, labels: np.ndarray, covariance: str, seed: int, n_init: int
) -> LabelledMixture:
    """A k-component mixture of rows x (N, F) with component k = class k for the labelled rows
    (labels (N,), -1 unknown): semi-supervised EM from the class means and from `n_init` seeded
    unsupervised fits matched to the classes, the most likely kept (the first of equals)."""
    x = np.asarray(x, dtype=np.float64)
    seeds = np.random.default_rng(seed).integers(2**31, size=n_init)
    starts = [_class_means_start(x, labels, k, covariance)]
    starts += [
        _matched_to_classes(fit_mixture(k, x, covariance, int(s)), x, labels, covariance)
        for s in seeds
    ]
    fits = [_expectation_maximisation(x, labels, s) for s in starts if s is not None]
    return max(fits, key=lambda fit: fit.log_likelihood)
