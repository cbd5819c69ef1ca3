"""The start's clusters found in a UMAP embedding of the rows instead of in the rows themselves,
as N2D does (McConville et al. 2020): UMAP keeps each row's nearest neighbours near it and
pulls apart what its neighbour graph does not connect, so a class spread over a curved or
stretched region of the input space (a digit's styles, a garment's cuts) becomes a compact
group that one Gaussian fits.

pretraining.start_from_inputs fits its mixture to the embedding of the rows it drew and gives
every other row its place in the embedding (`embed_all_rows`) before asking the mixture.

Shapes: N rows, F features, E embedding dimensions, K components.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from gmvae.errors import GMVAEError

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


def embed_all_rows(
    embedding: Any,
    fitted: np.ndarray,
    n_rows: int,
    inputs_of: Callable[[np.ndarray], np.ndarray],
    chunk: int,
) -> np.ndarray:
    """The embedding (N, E) of all n_rows rows: the `fitted` rows (the indices, in the order
    UMAP was fitted on them) keep their fitted coordinates; the others, read `chunk` at a time by
    `inputs_of(indices)` -> (B, F), are placed by UMAP's transform."""
    coordinates = np.empty((n_rows, embedding.embedding_.shape[1]))
    coordinates[fitted] = embedding.embedding_
    rest = np.setdiff1d(np.arange(n_rows), fitted)
    for start in range(0, len(rest), chunk):
        rows = rest[start : start + chunk]
        coordinates[rows] = embedding.transform(inputs_of(rows))
    return coordinates
