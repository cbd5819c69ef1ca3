"""Choices among short models, compared on the ELBO of held-out training examples: the number
of clusters K (select_k), and the random start a run goes on from (choose_start, --restarts)."""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from gmvae.data.datasets import Dataset
from gmvae.errors import GMVAEError
from gmvae.model import inference
from gmvae.run import plots
from gmvae.run.assembly import assemble
from gmvae.run.metrics import clustering_scores, usage_entropy
from gmvae.run.settings import ExperimentConfig
from gmvae.storage import atomic_write
from gmvae.train.distributed import broadcast
from gmvae.train.trainer import Trainer

HELD_OUT_SHARE = 0.1


def held_out_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded draw of HELD_OUT_SHARE of n rows (at least one) and the rest, each sorted."""
    order = np.random.default_rng(seed).permutation(n)
    n_held = max(1, int(n * HELD_OUT_SHARE))
    return np.sort(order[:n_held]), np.sort(order[n_held:])


def select_k(data: Dataset, ks: list[int], config: ExperimentConfig, out: Path) -> list[dict]:
    """Train one model per K, as `gmvae train` would with `config` (its preset's objective,
    epochs and seed), on 90% of the training data (a seeded draw) and score each on the other
    10%: held-out ELBO (the choice), a BIC from the training ELBO, and ACC/NMI/ARI on the
    whole set when labels exist (reported, never used to choose). Writes select_k.csv and
    select_k.png into `out`."""
    if out.exists() and any(out.iterdir()):
        raise GMVAEError(f"{out} already exists and is not empty; pick another --out")
    seed = config.train.seed
    held, train = held_out_split(len(data.x_train), seed)
    if len(train) < max(ks):
        raise GMVAEError(f"{len(train)} training examples for up to {max(ks)} clusters")
    x_train, x_held = data.x_train[train], data.x_train[held]
    config = replace(config, train=replace(config.train, checkpoint_every=0, restarts=1))
    rows = []
    for k in ks:
        start = time.perf_counter()
        per_k = replace(config, model=replace(config.model, n_clusters=k))
        trainer = assemble(per_k, x_train, data.image_shape)
        trainer.fit(torch.as_tensor(x_train), progress=False)
        net = trainer.model
        n_params = sum(p.numel() for p in net.parameters())
        train_elbo = float(inference.elbo(net, x_train, seed=seed).sum())
        clusters = inference.cluster_probabilities(net, data.x_train).argmax(1)
        row = {
            "k": k,
            "heldout_elbo": float(inference.elbo(net, x_held, seed=seed).mean()),
            "bic": -2 * train_elbo + n_params * math.log(len(train)),
            "usage_entropy": usage_entropy(clusters, k),
        }
        if data.y_train is not None:
            row.update(clustering_scores(data.y_train, clusters, k))
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        print(
            "  ".join(
                f"{key} {value:.2f}" if isinstance(value, float) else f"{key} {value}"
                for key, value in row.items()
            ),
            flush=True,
        )
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out / "select_k.csv", buffer.getvalue())
    plots.save_png(plots.plot_select_k(rows), out / "select_k.png")
    best = max(rows, key=lambda r: r["heldout_elbo"])
    print(f"best K by held-out ELBO: {best['k']}  (table: {out / 'select_k.csv'})")
    return rows


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
