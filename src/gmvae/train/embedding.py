"""The start's clusters found in a UMAP embedding of the rows instead of in the rows themselves,
as N2D does (McConville et al. 2020): UMAP keeps each row's nearest neighbours near it and
pulls apart what its neighbour graph does not connect, so a class spread over a curved or
stretched region of the input space (a digit's styles, a garment's cuts) becomes a compact
group that one Gaussian fits.

`EmbeddedStart` is a start as a Mixture is (pretraining.start_from_inputs): it gives p(y|x) for
rows of the input space, by embedding them with the fitted UMAP first.

Shapes: N rows, F features, E embedding dimensions, K components.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gmvae.errors import GMVAEError
from gmvae.train.labelled_start import ClassifierStart
from gmvae.train.mixtures import Mixture

# N2D's settings: an embedding of as many dimensions as clusters (at least 2), built from each
# row's 20 nearest neighbours, with min_dist 0 so that neighbours may sit on top of each other
# (compact clusters rather than an even spread for a picture).
NEIGHBOURS = 20
MIN_DIST = 0.0


def fit_embedding(x: np.ndarray, k: int, seed: int) -> Any:
    """A UMAP of rows x (N, F) to max(k, 2) dimensions, fitted with `seed` (UMAP is then
    single-threaded and reproducible). Needs umap-learn."""
    try:
        import umap
    except ImportError:
        raise GMVAEError(
            "mixture_start embedding needs umap-learn: pip install 'gmvae[umap]'"
        ) from None
    return umap.UMAP(
        n_components=max(k, 2),
        n_neighbors=min(NEIGHBOURS, len(x) - 1),
        min_dist=MIN_DIST,
        random_state=seed,
        n_jobs=1,  # what a random_state makes it anyway; said, so UMAP does not warn
    ).fit(x)


@dataclass
class EmbeddedStart:
    """A start fitted in a UMAP embedding: `embedding` maps rows (N, F) to (N, E), `start` (a
    Mixture or ClassifierStart) gives p(y|x) there; weights_ (K,) and log_likelihood are the
    start's."""

    embedding: Any
    start: Mixture | ClassifierStart

    @property
    def weights_(self) -> np.ndarray:
        return self.start.weights_

    @property
    def log_likelihood(self) -> float:
        return self.start.log_likelihood

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """p(y|x): (N, F) -> (N, K)."""
        return self.start.predict_proba(self.embedding.transform(x).astype(np.float64))
