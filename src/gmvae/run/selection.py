"""Choosing the number of clusters K among short models compared on the ELBO of held-out
training examples (select_k, `gmvae select-k`); the held-out draw is run/restarts.py's."""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import replace
from pathlib import Path

import torch

from gmvae.data.datasets import Dataset
from gmvae.errors import GMVAEError
from gmvae.model import inference
from gmvae.run import plots
from gmvae.run.assembly import assemble
from gmvae.run.metrics import clustering_scores, usage_entropy
from gmvae.run.restarts import held_out_split
from gmvae.run.settings import ExperimentConfig
from gmvae.storage import atomic_write


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
