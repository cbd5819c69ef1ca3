"""A run end to end: data, model, training, evaluation and the run folder.

runs/<name>/
  config.json    every setting, versions, git commit, device
  metrics.csv    a row per epoch (loss terms, temperature, lr, monitoring scores, seconds)
  results.json   test ACC/NMI/ARI, test ELBO, training seconds
  model/         weights.safetensors + config.json
  *.png          figures
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from gmvae.data.datasets import Dataset
from gmvae.data.labels import LABELLED_FILE, read_labelled, write_labelled
from gmvae.data.preprocessing import ScaledRows
from gmvae.errors import GMVAEError
from gmvae.model import inference
from gmvae.model.checkpoint import save_model
from gmvae.model.network import GMVAENet
from gmvae.run import plots
from gmvae.run.assembly import assemble, load_data, settings_used
from gmvae.run.lock import LOCK_FILE, RunLock
from gmvae.run.metrics import clustering_scores, contingency, hungarian_match, usage_entropy
from gmvae.run.report import write_report
from gmvae.run.restarts import choose_start
from gmvae.run.settings import DataConfig, ExperimentConfig
from gmvae.storage import atomic_write, check_writable, read_json, write_json
from gmvae.train.distributed import World, broadcast
from gmvae.train.objective import TERM_NAMES
from gmvae.train.trainer import Trainer
from gmvae.version import __version__

TSNE_POINTS = 2000
CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"
RESTARTS_FILE = "restarts.csv"  # a row per --restarts candidate


@dataclass
class Output:
    """How a run reports itself, never what it computes."""

    log: str = "text"  # text: a line per epoch; json: a JSON object per epoch; quiet: nothing
    tensorboard: bool = False  # also TensorBoard event files in RUN/tensorboard
    progress: bool | None = None  # a bar per epoch; default: on a terminal unless quiet
    latent_map: str = "tsne"  # the latent map's method: tsne, or umap (needs umap-learn)


def git_commit() -> str | None:
    """The commit of the source tree this package runs from, when it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def check_run_folder(out: Path) -> None:
    """Refuse a folder that already holds files (naming the process that trains there, if
    one does): a run is never written over."""
    RunLock(out).check_free()
    if out.exists() and (not out.is_dir() or any(p.name != LOCK_FILE for p in out.iterdir())):
        raise GMVAEError(f"run folder {out} already exists and is not empty; pick another --out")


def create_run_folder(out: Path, bytes_needed: int) -> RunLock:
    """Create `out`, take its lock (which proves it writable), and check it is empty and has
    room for the run, before any training starts. On a refusal nothing is left behind."""
    check_run_folder(out)
    check_writable(out / CONFIG_FILE)
    missing = [p for p in (out, *out.absolute().parents) if not p.exists()]  # out first
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = RunLock(out).acquire()
    except OSError as err:
        raise GMVAEError(f"cannot write to run folder {out}: {err.strerror or err}") from None
    try:
        check_run_folder(out)  # again, now that no other process can start a run here
        free = shutil.disk_usage(out).free
        if free < bytes_needed:
            raise GMVAEError(
                f"only {free / 2**20:.0f} MB free for {out}; this run needs about "
                f"{bytes_needed / 2**20:.0f} MB"
            )
    except GMVAEError:
        lock.release()
        if missing:
            shutil.rmtree(missing[-1], ignore_errors=True)  # only the folders this call made
        raise
    return lock


def run_bytes_needed(model: GMVAENet) -> int:
    """A generous estimate of a run folder's peak size: the checkpoint (weights and two Adam
    moments) twice while it is replaced, the saved weights, and the figures."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return 7 * weights + 20 * 2**20


def write_metrics(path: Path, history: list[dict]) -> None:
    """A CSV of dicts with every key any of them has, in the order they first appear, blank
    where a row lacks one (metrics.csv: a row per epoch, rewritten whole and atomically after
    every epoch: never half a row)."""
    buffer = io.StringIO()
    columns = list(dict.fromkeys(key for row in history for key in row))
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    atomic_write(path, buffer.getvalue())


def restart_summary(path: Path) -> dict:
    """From restarts.csv when the run had --restarts: the candidates' seconds (not in
    train_seconds) and the one training went on from."""
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        "restart_seconds": sum(float(row["seconds"]) for row in rows),
        "restart_chosen": next(int(row["candidate"]) for row in rows if row["chosen"] == "True"),
    }


def label_scores(labels: np.ndarray | None, clusters: np.ndarray, k: int, classes: bool) -> dict:
    """With labels: ACC/NMI/ARI (percent), and with `classes` (semi-supervised: cluster k is
    class k) "accuracy", the percentage of examples whose cluster is their class."""
    if labels is None:
        return {}
    scores = {"accuracy": 100 * float((clusters == labels).mean())} if classes else {}
    return {**scores, **clustering_scores(labels, clusters, k)}


def evaluate(
    model: GMVAENet,
    x: np.ndarray,
    labels: np.ndarray | None,
    seed: int = 0,
    classes: bool = False,
) -> tuple[dict, np.ndarray]:
    """Scores on x: mean ELBO (nats), cluster-usage entropy, and with labels the label_scores;
    and the cluster of each example."""
    clusters = inference.cluster_probabilities(model, x).argmax(1)
    k = model.config.n_clusters
    scores = {
        **label_scores(labels, clusters, k, classes),
        "elbo": float(inference.elbo(model, x, seed=seed).mean()),
        "usage_entropy": usage_entropy(clusters, k),
    }
    return scores, clusters


def format_table(scores: dict, title: str) -> str:
    keys = [k for k in ("accuracy", "acc", "nmi", "ari") if k in scores]
    header = f"{title:<10}" + "".join(f"{k.upper():>8}" for k in keys) + f"{'ELBO':>10}"
    row = f"{'':<10}" + "".join(f"{scores[k]:8.2f}" for k in keys) + f"{scores['elbo']:10.2f}"
    return f"{header}\n{row}"


def run_experiment(
    config: ExperimentConfig,
    out: Path,
    command: list[str] | None = None,
    output: Output | None = None,
    world: World | None = None,
) -> dict | None:
    """Train, evaluate and write the whole run folder. Returns results.json's content (None on
    ranks other than 0, which only train). `command` is saved in config.json."""
    world = world or World()
    if world.size == 1:  # cheap checks first (several ranks leave it all to rank 0, below)
        check_run_folder(out)
    data = load_data(config.data, config.train.seed)
    trainer = assemble(
        config, data.x_train, data.image_shape, data.train_labels, world, out / CHECKPOINT_FILE
    )
    error, lock = None, None
    if world.is_main:
        try:
            lock = create_run_folder(out, run_bytes_needed(trainer.model))
            write_json(out / CONFIG_FILE, run_record(config, trainer, data, command))
            if data.train_labels is not None:
                write_labelled(out / LABELLED_FILE, data.train_labels)
        except GMVAEError as err:
            error = str(err)
    with lock or nullcontext():  # held by rank 0 until the run ends, however it ends
        error = broadcast(error, world)  # every rank stops if rank 0 could not start
        if error is not None:
            raise GMVAEError(error)
        if trainer.config.restarts > 1:
            used = settings_used(config, trainer)
            restarts = choose_start(trainer, used, data.x_train, data.image_shape, data.y_train)
            if world.is_main:
                write_metrics(out / RESTARTS_FILE, restarts)
        return train_and_report(trainer, data, config.data, out, output or Output())


def run_record(
    config: ExperimentConfig, trainer: Trainer, data: Dataset, command: list[str] | None
) -> dict:
    """config.json: every setting as the run uses it, the data's size, versions, commit and
    device."""
    return {
        "command": command,
        **settings_used(config, trainer).to_dict(),
        "n_train": len(data.x_train),
        "n_test": len(data.x_test),
        "device": str(trainer.device),
        "processes": int(os.environ.get("WORLD_SIZE", "1")),
        "gmvae_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "git_commit": git_commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def resume_experiment(
    out: Path,
    device: str | None = None,
    output: Output | None = None,
    world: World | None = None,
) -> dict | None:
    """Continue the run in `out` from its last checkpoint and finish it as if never stopped,
    in one process or several (the checkpoint is the same either way)."""
    world = world or World()
    if not (out / CONFIG_FILE).is_file():
        raise GMVAEError(f"{out} is not a run folder ({CONFIG_FILE} not found)")
    error, lock = None, None
    if world.is_main:  # one process per run folder: refused while another still trains there
        try:
            lock = RunLock(out).acquire()
        except GMVAEError as err:
            error = str(err)
        except OSError as err:
            error = f"cannot lock run folder {out}: {err.strerror or err}"
    with lock or nullcontext():
        error = broadcast(error, world)
        if error is not None:
            raise GMVAEError(error)
        return _resume_locked(out, device, output or Output(), world)


def _resume_locked(out: Path, device: str | None, output: Output, world: World) -> dict | None:
    if (out / "results.json").exists():
        raise GMVAEError(f"run {out} has already finished (results.json exists)")
    try:
        config = ExperimentConfig.from_dict(read_json(out / CONFIG_FILE))
    except GMVAEError as err:
        raise GMVAEError(f"{out / CONFIG_FILE}: {err}") from None
    if device is not None:
        config = replace(config, train=replace(config.train, device=device))
    data = load_data(config.data, config.train.seed)
    if data.train_labels is not None:  # the run's own draw, as it was saved
        data = replace(data, train_labels=read_labelled(out / LABELLED_FILE, len(data.x_train)))
    trainer = assemble(
        config, data.x_train, data.image_shape, data.train_labels, world, out / CHECKPOINT_FILE
    )
    trainer.resume()
    if world.is_main and output.log == "text":
        print(f"resuming {out} after epoch {len(trainer.history)} of {config.train.epochs}")
    return train_and_report(trainer, data, config.data, out, output)


@contextmanager
def stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """While training, SIGINT and SIGTERM ask the trainer to stop after its current step
    (it then checkpoints and raises TrainingInterrupted) instead of killing the process."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def request_stop(signum: int, frame: object) -> None:
        trainer.stop_requested = signal.Signals(signum).name

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def train_and_report(
    trainer: Trainer, data: Dataset, data_config: DataConfig, out: Path, output: Output
) -> dict | None:
    """Train to the end (from wherever the trainer is), then write metrics, model, results,
    figures and report.html into `out`."""
    model, config = trainer.model, trainer.config
    k = model.config.n_clusters
    classes = data.train_labels is not None
    monitor_x = data.x_train[: data_config.monitor_size]
    monitor_y = None if data.y_train is None else data.y_train[: data_config.monitor_size]

    def monitor() -> dict:
        clusters = inference.cluster_probabilities(model, monitor_x).argmax(1)
        return {
            **label_scores(monitor_y, clusters, k, classes),
            "usage_entropy": usage_entropy(clusters, k),
        }

    main = trainer.world.is_main
    board = None
    if main and output.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise GMVAEError(
                "--tensorboard needs tensorboard: pip install 'gmvae[tensorboard]'"
            ) from None
        board = SummaryWriter(str(out / "tensorboard"))

    def on_epoch(row: dict) -> None:
        write_metrics(out / "metrics.csv", trainer.history)
        if board is not None:
            for key, value in row.items():
                board.add_scalar(key, value, row["epoch"])
            board.flush()
        if output.log == "json":
            print(json.dumps(row), flush=True)
        elif output.log == "text":
            keys = ("accuracy", "acc", "nmi", "ari")
            scores = "".join(f"  {k} {row[k]:5.1f}" for k in keys if k in row)
            terms = "".join(f" {k} {row[k]:.3g}" for k in TERM_NAMES if k in row)
            print(
                f"epoch {row['epoch']:>3}/{config.epochs}  loss {row['loss']:9.3f} "
                f"({terms.strip()})  tau {row['tau']:.3f}{scores}  "
                f"usage {row['usage_entropy']:.2f}  {row['seconds']:.1f}s",
                flush=True,
            )

    progress = output.progress
    if progress is None:
        progress = sys.stderr.isatty() and output.log != "quiet"
    with stop_on_signals(trainer):
        x = data.x_train if isinstance(data.x_train, ScaledRows) else torch.as_tensor(data.x_train)
        if main:
            history = trainer.fit(x, monitor, on_epoch, progress, data.train_labels)
        else:  # the other ranks train silently and leave the rest to rank 0
            trainer.fit(x, progress=False, labels=data.train_labels)
            return None
    train_seconds = sum(row["seconds"] for row in history)
    save_model(model, out / "model", data.scaling)

    scores, clusters = evaluate(model, data.x_test, data.y_test, config.seed, classes)
    table = None if data.y_test is None else contingency(clusters, data.y_test, k)
    match = {} if table is None else hungarian_match(table)
    results = {
        "test": scores,
        "train_seconds": train_seconds,
        **restart_summary(out / RESTARTS_FILE),
        "seconds_per_epoch": train_seconds / len(history),
        "epochs": len(history),
        "skipped_steps": trainer.skipped_steps,
        "proportions": inference.proportions(model).tolist(),  # p(y) summed per cluster
        "proportions_learned": model.learns_proportions(),
        "cluster_to_label": {str(c): label for c, label in sorted(match.items())},
        "contingency": None if table is None else table.tolist(),  # [cluster][label] counts
        "device": str(trainer.device),
    }
    if classes:
        results["labelled"] = int((data.train_labels >= 0).sum())
        if data.label_names is not None:
            results["classes"] = data.label_names  # class k's original label
    write_figures(model, data, history, clusters, table, match, out, config.seed, output.latent_map)
    write_json(out / "results.json", results)
    write_report(out, model, data)
    if board is not None:
        board.close()
    if output.log == "json":
        print(json.dumps({"results": results, "run": str(out)}), flush=True)
    elif output.log == "text":
        print(format_table(scores, "test"))
        print(f"run folder: {out}")
    return results


def write_figures(
    model: GMVAENet,
    data: Dataset,
    history: list[dict],
    clusters: np.ndarray,
    table: np.ndarray | None,
    match: dict[int, int],
    out: Path,
    seed: int,
    latent_map: str,
) -> None:
    """The run's PNG figures: scores and contingency only with labels, images only for
    image data; the latent map drawn by `latent_map` ("tsne" or "umap")."""
    k = model.config.n_clusters
    # Clusters in the order of the label they match (cluster for digit 0 first), then the rest.
    order = sorted(range(k), key=lambda c: (match.get(c, k), c))
    plots.save_png(plots.plot_losses(history), out / "losses.png")
    n = min(TSNE_POINTS, len(data.x_test))
    latent = inference.latent_means(model, data.x_test[:n])
    rank = np.argsort(order)  # cluster -> its row in `order`, i.e. its matched label when K = C
    labels = None if data.y_test is None else data.y_test[:n]
    xy = plots.embed_2d(latent, latent_map, seed)
    title = {"tsne": "t-SNE", "umap": "UMAP"}[latent_map]
    figure = plots.plot_latent_map(xy, labels, rank[clusters[:n]], title)
    plots.save_png(figure, out / f"latent_{latent_map}.png")
    if table is not None:
        plots.save_png(plots.plot_scores(history), out / "scores.png")
        plots.save_png(plots.plot_contingency(table, order), out / "contingency.png")
    if data.image_shape is None:
        return
    originals = data.x_test[:16]
    recon = inference.reconstruct(model, originals)
    figure = plots.plot_reconstructions(originals, recon, data.image_shape)
    plots.save_png(figure, out / "reconstructions.png")
    per_row = 10
    generated = inference.sample(model, np.repeat(order, per_row), seed=seed)
    names = [f"cluster {c} → {match[c]}" if c in match else f"cluster {c}" for c in order]
    figure = plots.plot_generated(generated.reshape(k, per_row, -1), names, data.image_shape)
    plots.save_png(figure, out / "generated.png")
