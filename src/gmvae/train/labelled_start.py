"""The start of a semi-supervised table: the labelled Gaussian mixture, or a logistic regression
on the labelled rows where the labelled rows say that their classes are not its components.

The labelled mixture (mixtures.fit_labelled_start) is the start where each class is a cluster
(wine's cultivars, iris' species): it learns from every unlabelled row, and a classifier of five
rows per class cannot match it. Where a class is not a cluster (a car's origin, a person's sex
from a few measurements), the mixture's components follow the data's own groups, the start puts
many rows in the wrong class, and training goes on from there, below a logistic regression fitted
to the labelled rows alone. The labelled rows are the one evidence of which case a table is: each
is hidden in turn (folds of one labelled row per class with five labels per class, every
fifth otherwise), both starts are fitted to the others, and the one whose probabilities for the
hidden rows have the lower Brier score (the squared distance to the row's one-hot class, summed)
is used; the mixture on a tie. The Brier score, not the count of hidden rows given their class:
with 10-15 hidden rows the counts tie or differ by one row (cars' seed 1: 9 against 8), and a
start sure of a wrong class costs more than one unsure of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

from gmvae.train.mixtures import Mixture, fit_labelled_start

# At most this many folds: a held-out row of each class per fold with five labels per class.
MAX_FOLDS = 5


@dataclass
class ClassifierStart:
    """A logistic regression on the labelled rows as the start: `predict_proba` (N, F) -> (N, K)
    as a mixture's, weights_ (K,) its mean probabilities over the rows it was started on, and the
    log_likelihood of the labelled mixture it was preferred to."""

    classifier: LogisticRegression
    weights_: np.ndarray
    log_likelihood: float

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.classifier.predict_proba(x)


def labelled_folds(labels: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """Folds of the labelled rows (labels (N,), -1 unknown): fold i holds every `n_folds`-th of
    each class's labelled rows in a seeded order, from the i-th. n_folds is MAX_FOLDS or the
    fewest labelled rows of a class; no folds unless there are two classes or more and each has
    two labelled rows (a fold must leave every class a labelled row)."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(k)]
    n_folds = min(MAX_FOLDS, *(len(rows) for rows in per_class))
    if k < 2 or n_folds < 2:
        return []
    return [np.concatenate([rows[i::n_folds] for rows in per_class]) for i in range(n_folds)]


def _classifier(x: np.ndarray, labels: np.ndarray) -> LogisticRegression:
    """A logistic regression (scikit-learn's defaults, iterations up to 1,000) on the labelled
    rows of x (N, F)."""
    known = labels >= 0
    return LogisticRegression(max_iter=1000).fit(x[known], labels[known])


def brier_score(probabilities: np.ndarray, classes: np.ndarray) -> float:
    """The squared distance between probabilities (N, K) and the rows' one-hot classes (N,),
    summed over the rows."""
    one_hot = np.eye(probabilities.shape[1])[classes]
    return float(np.sum((probabilities - one_hot) ** 2))


def fit_semi_supervised_start(
    k: int, x: np.ndarray, labels: np.ndarray, covariances: tuple[str, ...], seed: int, n_init: int
) -> Mixture | ClassifierStart:
    """The start for rows x (N, F) with labels (N,) (-1 unknown): the labelled mixture
    (`fit_labelled_start`) unless a logistic regression's probabilities for the held-out labelled
    rows have a lower Brier score (`brier_score`) over `labelled_folds`."""
    mixture = fit_labelled_start(k, x, labels, covariances, seed, n_init)
    mixture_brier = classifier_brier = 0.0
    for fold in labelled_folds(labels, k, seed):
        rest = labels.copy()
        rest[fold] = -1
        held_out = labels[fold]
        fold_mixture = fit_labelled_start(k, x, rest, covariances, seed, n_init)
        mixture_brier += brier_score(fold_mixture.predict_proba(x[fold]), held_out)
        classifier_brier += brier_score(_classifier(x, rest).predict_proba(x[fold]), held_out)
    if classifier_brier >= mixture_brier:
        return mixture
    classifier = _classifier(x, labels)
    weights = classifier.predict_proba(x).mean(0)
    return ClassifierStart(classifier, weights, mixture.log_likelihood)
