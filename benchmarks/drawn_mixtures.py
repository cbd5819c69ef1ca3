"""Tables drawn from Gaussian mixtures whose clusters are unequal and overlap, by a fixed rule:
data whose clusters are known to be what a Gaussian mixture fits, to check that a default keeps
clusters of unequal size where the data has them (issue 22's "at home with unequal clusters").

`mixture-K-D` (K clusters, draw D) is ROWS rows of FEATURES features. The cluster sizes fall
geometrically from the largest to the smallest, SPREAD times smaller (K = 2: 480 / 120; K = 3:
343 / 171 / 86; K = 4: 263 / 166 / 105 / 66). Each cluster is Gaussian with covariance A A^T for
A = I + 0.3 N(0, 1); the centres are standard normal, scaled so that the two closest are
SEPARATION apart (the clusters overlap: a few rows of each pair are nearer the other's centre).
Each feature is then multiplied by a scale drawn from 0.5 to 5 and shifted, as measured
quantities in different units are, so that the features' scales say nothing about the clusters.
"""

from __future__ import annotations

import re

import numpy as np

ROWS = 600
FEATURES = 5
SPREAD = 4.0
SEPARATION = 3.0
NAME = re.compile(r"mixture-(\d+)-(\d+)")


def draw(k: int, draw_index: int) -> tuple[np.ndarray, np.ndarray]:
    """The table of `mixture-k-draw_index`: rows (ROWS, FEATURES) and their clusters (ROWS,),
    cluster 0 the largest."""
    rng = np.random.default_rng([k, draw_index])
    shares = SPREAD ** -np.linspace(0.0, 1.0, k)
    sizes = np.round(ROWS * shares / shares.sum()).astype(int)
    sizes[0] += ROWS - sizes.sum()
    centres = rng.standard_normal((k, FEATURES))
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    centres *= SEPARATION / gaps[np.triu_indices(k, 1)].min()
    blocks = []
    for c in range(k):
        a = np.eye(FEATURES) + 0.3 * rng.standard_normal((FEATURES, FEATURES))
        blocks.append(centres[c] + rng.standard_normal((sizes[c], FEATURES)) @ a.T)
    x = np.concatenate(blocks) * rng.uniform(0.5, 5.0, FEATURES) + rng.uniform(-10, 10, FEATURES)
    y = np.repeat(np.arange(k), sizes)
    order = rng.permutation(ROWS)
    return x[order], y[order]
