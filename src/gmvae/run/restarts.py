"""--restarts: the random start a run goes on from, chosen among short candidates by the ELBO
of held-out training examples (choose_start), for `gmvae train` and the estimator alike. Imports
no plotting, so the estimator can use it."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from gmvae.model import inference
from gmvae.run.assembly import assemble
from gmvae.run.metrics import clustering_scores
from gmvae.run.settings import ExperimentConfig
from gmvae.train.distributed import broadcast
from gmvae.train.trainer import Trainer

HELD_OUT_SHARE = 0.1


def held_out_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded draw of HELD_OUT_SHARE of n rows (at least one) and the rest, each sorted."""
    order = np.random.default_rng(seed).permutation(n)
    n_held = max(1, int(n * HELD_OUT_SHARE))
    return np.sort(order[:n_held]), np.sort(order[n_held:])


def candidate_seed(seed: int, candidate: int) -> int:
    """The seed of restart candidate `candidate` of a run seeded `seed`: candidate 0 is the run's
    own seed; the others are distinct for every (seed, candidate)."""
    if candidate == 0:
        return seed
    return int(np.random.SeedSequence([seed, candidate]).generate_state(1)[0])


def choose_start(
    trainer: Trainer,
    config: ExperimentConfig,
    x: np.ndarray,
    image_shape: tuple[int, ...] | None,
    labels: np.ndarray | None = None,
) -> list[dict]:
    """--restarts, the phase before `trainer`'s loop: `config.train.restarts` candidates, each
    assembled from `config` (fitted to x, as `trainer` was) with its own seed (candidate 0
    from `trainer`'s own initial weights), trained for `restart_epochs` epochs on 90% of x
    (N, D) and scored by its mean ELBO on the other 10% (held_out_split). The best candidate's
    weights are copied into `trainer.model`, which then trains as usual. `labels` (N,), when
    known, score each candidate on the held-out rows (ACC/NMI/ARI) and never choose.
    Returns a row per candidate (its seed, held-out ELBO, seconds, "chosen")."""
    model, world = trainer.model, trainer.world
    seed0 = config.train.seed
    held, train = held_out_split(len(x), seed0)
    x_train, x_held = x[train], x[held]
    starting_weights = {k: v.clone() for k, v in model.state_dict().items()}
    rows, weights = [], []
    for candidate in range(config.train.restarts):
        start = time.perf_counter()
        seed = candidate_seed(seed0, candidate)
        short = replace(
            config.train, epochs=config.train.restart_epochs, restarts=1, seed=seed,
            checkpoint_every=0,
        )  # fmt: skip
        short_trainer = assemble(replace(config, train=short), x_train, image_shape, None, world)
        network = short_trainer.model
        if candidate == 0:
            network.load_state_dict(starting_weights)
        short_trainer.fit(torch.as_tensor(x_train), progress=False)
        row = {
            "candidate": candidate,
            "seed": seed,
            "heldout_elbo": float(inference.elbo(network, x_held, seed=seed0).mean()),
        }
        if labels is not None:
            clusters = inference.cluster_probabilities(network, x_held).argmax(1)
            row.update(clustering_scores(labels[held], clusters, model.config.n_clusters))
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        weights.append({k: v.cpu() for k, v in network.state_dict().items()})
    # Rank 0's choice on every rank: on a GPU the ranks' ELBOs may differ in the last bits.
    chosen = broadcast(max(rows, key=lambda r: r["heldout_elbo"])["candidate"], world)
    model.load_state_dict(weights[chosen])
    trainer.start_chosen = True  # the candidates made their starts: fit must not redo one
    for row in rows:
        row["chosen"] = row["candidate"] == chosen
    return rows
