"""Choosing K: a short model per candidate K, compared on the ELBO of held-out examples."""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from gmvae import inference, plots
from gmvae.checkpoint import atomic_write
from gmvae.data import Dataset
from gmvae.distributed import resolve_device
from gmvae.errors import GMVAEError
from gmvae.metrics import clustering_scores, usage_entropy
from gmvae.model import GMVAENet, ModelConfig
from gmvae.preprocessing import value_range
from gmvae.training import TrainConfig, Trainer

HELD_OUT_SHARE = 0.1


def select_k(
    data: Dataset,
    ks: list[int],
    epochs: int,
    seed: int,
    device: str,
    out: Path,
    model: ModelConfig | None = None,
) -> list[dict]:
    """Train one model per K on 90% of the training data (a seeded draw) and score each on the
    other 10%: held-out ELBO (the choice), a BIC from the training ELBO, and ACC/NMI/ARI on the
    whole set when labels exist (reported, never used to choose). Writes select_k.csv and
    select_k.png into `out`."""
    if out.exists() and any(out.iterdir()):
        raise GMVAEError(f"{out} already exists and is not empty; pick another --out")
    n = len(data.x_train)
    order = np.random.default_rng(seed).permutation(n)
    n_held = max(1, int(n * HELD_OUT_SHARE))
    held, train = np.sort(order[:n_held]), np.sort(order[n_held:])
    if len(train) < max(ks):
        raise GMVAEError(f"{len(train)} training examples for up to {max(ks)} clusters")
    x_train, x_held = data.x_train[train], data.x_train[held]
    low, high = value_range(data.x_train)
    base = (model or ModelConfig()).resolve(
        x_train.shape[1], data.image_shape, unit_range=low >= 0 and high <= 1
    )
    device_ = resolve_device(device)
    rows = []
    for k in ks:
        start = time.perf_counter()
        torch.manual_seed(seed)
        trainer = Trainer(
            GMVAENet(replace(base, n_clusters=k)),
            TrainConfig(epochs=epochs, seed=seed, device=device, checkpoint_every=0),
            device_,
        )
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
