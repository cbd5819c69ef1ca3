"""Speed on MNIST, in one process: our trainer beside a re-implementation of the reference
project's loop on the same model, the matrix-product floor, time to the reference's published
accuracy, predict throughput, peak memory, and how an epoch's cost grows with N.

    python -m benchmarks.speed --out benchmarks/results/speed [--parts floor,loops,...]

Parts: floor, loops, time-to-acc, predict, memory, growth (default: all). Writes results.json,
results.md and run.json (command, commit, machine) into --out. Nothing else should run on the
machine meanwhile: every number is a wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from benchmarks.provenance import benchmark_record, command_line
from gmvae.data.batches import BatchSource
from gmvae.data.datasets import load_mnist
from gmvae.model import inference
from gmvae.model.losses import (
    categorical_kl_uniform,
    gaussian_log_density,
    reconstruction_nll,
    weighted_loss,
)
from gmvae.model.network import GMVAENet
from gmvae.run.assembly import assemble
from gmvae.run.metrics import clustering_scores
from gmvae.run.settings import ExperimentConfig, parse_int_range
from gmvae.train.trainer import Trainer

PARTS = ("floor", "loops", "time-to-acc", "predict", "memory", "growth")
PUBLISHED_ACC = 78.28  # the reference project's README, 50 epochs
REFERENCE_EPOCHS = 50
CPU = torch.device("cpu")


def mnist() -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    data = load_mnist()
    x_train = torch.as_tensor(np.asarray(data.x_train), dtype=torch.float32)
    x_test = torch.as_tensor(np.asarray(data.x_test), dtype=torch.float32)
    return x_train, x_test, np.asarray(data.y_test)


def preset_trainer(x_train: torch.Tensor, preset: str = "reference", **train) -> Trainer:
    """A preset's trainer for MNIST, for one epoch per `fit` (`train` overrides)."""
    train = {"epochs": 1, "checkpoint_every": 0, "device": "cpu", **train}
    config = ExperimentConfig.from_preset(preset, {"train": train})
    return assemble(config, x_train.numpy(), (28, 28))


def preset_model(preset: str = "reference", seed: int = 0) -> GMVAENet:
    """A preset's network for MNIST, initialised from `seed`."""
    torch.manual_seed(seed)
    config = ExperimentConfig.from_preset(preset).model
    return GMVAENet(config.resolve(784, (28, 28), unit_range=True))


# --- the floor: the model's matrix products alone ---------------------------------------------


def matmul_floor(batch: int, n: int = 60_000) -> float:
    """Seconds for one epoch's worth of the reference model's matrix products at `batch`:
    per linear layer, the forward product and the two backward ones (input and weight
    gradients; none for the input of the first layer of q(y|x), which is data)."""
    model = preset_model()
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    first = model.y_encoder[0]
    work = []
    for layer in layers:
        out_f, in_f = layer.weight.shape
        x, w, g = torch.randn(batch, in_f), torch.randn(out_f, in_f), torch.randn(batch, out_f)
        work.append((x, w, g, layer is not first))
    steps = math.ceil(n / batch)

    def epoch() -> None:
        for _ in range(steps):
            for x, w, g, input_grad in work:
                torch.mm(x, w.T)
                torch.mm(g.T, x)
                if input_grad:
                    torch.mm(g, w)

    epoch()  # warm-up
    start = time.perf_counter()
    epoch()
    return time.perf_counter() - start


def bare_loop(x_train: torch.Tensor, batch: int) -> Callable[[], dict]:
    """The bare loop: the model's forward, loss, backward and Adam step on contiguous slices of
    the data, nothing else (no shuffling, no bookkeeping, no checks), with the fastest Adam
    (fused). The floor the speed issue names (about 14.7 s at batch 64 and 6.3 s at 256 there).
    Returns a function that runs one epoch and returns its seconds."""
    model = preset_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)

    def epoch() -> dict:
        start = time.perf_counter()
        for first in range(0, len(x_train), batch):
            terms = model(x_train[first : first + batch], temperature=1.0)
            loss = weighted_loss(terms, 1.0, 1.0, 1.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return {"train_seconds": time.perf_counter() - start}

    return epoch


# --- the reference project's loop, re-implemented -----------------------------------------------


class ImageDataset(TorchDataset):
    """Per-sample access as torchvision's MNIST + ToTensor gives it: uint8 -> float in [0, 1]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i].float().div(255).view(1, 28, 28), self.labels[i]


def reference_loop(x_train, x_test, y_test) -> Callable[[], dict]:
    """The reference's training structure: a DataLoader (batch 64, shuffled) over a per-sample
    Dataset, a .item() per loss term per step, predictions collected per step, and a test pass
    through a DataLoader every epoch; PyTorch's default Adam, as the reference uses. Same model
    and loss as ours. Returns a function that runs the next epoch."""
    model = preset_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    as_bytes = (x_train * 255).round().to(torch.uint8)
    test_bytes = (x_test * 255).round().to(torch.uint8)
    train_loader = DataLoader(
        ImageDataset(as_bytes, torch.zeros(len(as_bytes), dtype=torch.long)),
        batch_size=64,
        shuffle=True,
    )
    test_loader = DataLoader(ImageDataset(test_bytes, torch.as_tensor(y_test)), batch_size=64)
    config = ExperimentConfig.from_preset("reference").objective
    epochs_done = 0

    def epoch() -> dict:
        nonlocal epochs_done
        start = time.perf_counter()
        model.train()
        totals = {"rec": 0.0, "gauss": 0.0, "cat": 0.0}
        for images, _ in train_loader:
            x = images.view(len(images), -1)
            out = model(x, temperature=config.temperature(epochs_done))
            terms = {
                "rec": reconstruction_nll(x, out.decoded, "bernoulli"),
                "gauss": gaussian_log_density(out.z, out.z_mean, out.z_var)
                - gaussian_log_density(out.z, out.prior_mean, out.prior_var),
                "cat": categorical_kl_uniform(out.logits),
            }
            loss = weighted_loss(terms, 1.0, 1.0, 1.0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            for key in totals:
                totals[key] += terms[key].mean().item()
            out.logits.argmax(-1).numpy()
        train_seconds = time.perf_counter() - start
        model.eval()
        predicted = []
        with torch.no_grad():
            for images, _ in test_loader:
                predicted.append(
                    model.cluster_probabilities(images.view(len(images), -1)).argmax(-1)
                )
        acc = clustering_scores(y_test, torch.cat(predicted).numpy(), 10)["acc"]
        epochs_done += 1
        return {"train_seconds": train_seconds, "seconds": time.perf_counter() - start,
                "test_acc": acc}  # fmt: skip

    return epoch


def our_loop(x_train, x_test, y_test, preset: str, **train) -> Callable[[], dict]:
    """Our Trainer with a preset's settings (and `train` overrides) and a test pass after each
    epoch. Returns a function that runs the next epoch (the first also finds the neighbours).
    Labels only score."""
    trainer = preset_trainer(x_train, preset, **train)
    model = trainer.model

    def epoch() -> dict:
        trainer.config.epochs = len(trainer.history) + 1
        start = time.perf_counter()
        trainer.fit(x_train, progress=False)
        train_seconds = time.perf_counter() - start
        clusters = inference.cluster_probabilities(model, x_test).argmax(1)
        acc = clustering_scores(y_test, clusters, 10)["acc"]
        return {"train_seconds": train_seconds, "seconds": time.perf_counter() - start,
                "test_acc": acc}  # fmt: skip

    return epoch


def loops(x_train, x_test, y_test, rounds: int) -> dict[str, list[dict]]:
    """Each loop's epochs, one warm-up epoch then `rounds` timed ones. The loops take turns,
    one epoch each per round, so that the machine's drift (10-15% on this VM) touches them
    alike: compare them round by round."""
    epochs = {
        "bare_b64": bare_loop(x_train, 64),
        "reference_loop_b64": reference_loop(x_train, x_test, y_test),
        "ours_reference_b64": our_loop(x_train, x_test, y_test, "reference"),
        "bare_b256": bare_loop(x_train, 256),
        "ours_reference_b256": our_loop(x_train, x_test, y_test, "reference", batch_size=256),
    }
    for epoch in epochs.values():
        epoch()
    timed: dict[str, list[dict]] = {name: [] for name in epochs}
    for r in range(rounds):
        for name, epoch in epochs.items():
            timed[name].append(epoch())
        print(f"  round {r + 1}: " + ", ".join(
            f"{name} {rows[-1]['train_seconds']:.1f}s" for name, rows in timed.items()
        ), flush=True)  # fmt: skip
    return timed


def median_ratio(loops: dict[str, list[dict]], name: str, floor: str) -> float:
    """The median over rounds of `name`'s training seconds over `floor`'s in the same round."""
    pairs = zip(loops[name], loops[floor], strict=True)
    return float(np.median([a["train_seconds"] / b["train_seconds"] for a, b in pairs]))


def time_to_accuracy(x_train, x_test, y_test, seed: int, max_epochs: int) -> dict:
    """Training seconds (the neighbour search included, test passes not) until the default
    preset's test ACC first reaches the reference's published one."""
    epoch = our_loop(x_train, x_test, y_test, "default", seed=seed)
    rows = [epoch()]
    while rows[-1]["test_acc"] < PUBLISHED_ACC and len(rows) < max_epochs:
        rows.append(epoch())
    return {
        "seed": seed, "reached": rows[-1]["test_acc"] >= PUBLISHED_ACC,
        "seconds": sum(r["train_seconds"] for r in rows), "epochs": len(rows), "history": rows,
    }  # fmt: skip


def predict_throughput(x_train, x_test) -> dict:
    """Images per second of q(y|x) on the 10,000 test images (a model trained one epoch)."""
    trainer = preset_trainer(x_train, batch_size=256)
    trainer.fit(x_train)
    model = trainer.model
    inference.cluster_probabilities(model, x_test)  # warm-up
    times = []
    for _ in range(5):
        start = time.perf_counter()
        inference.cluster_probabilities(model, x_test)
        times.append(time.perf_counter() - start)
    best = min(times)
    return {"images": len(x_test), "seconds": best, "images_per_second": len(x_test) / best}


def peak_rss(what: str) -> dict:
    """Peak resident memory (MiB) of a fresh process that trains the default preset for one
    epoch on the 60,000 images, or that predicts the 10,000 test images."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.speed", "--rss-child", what],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_mib() -> float:
    """This process's peak resident memory in MiB: Linux's VmHWM, which starts afresh at exec.
    (getrusage's ru_maxrss does not: a child started from a large parent reports the
    parent's size.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status: peak memory is measured on Linux only")


def rss_child(what: str) -> None:
    x_train, x_test, _ = mnist()
    loaded = peak_mib()
    if what == "train":
        preset_trainer(x_train, "default").fit(x_train)
    else:
        inference.cluster_probabilities(preset_model("default"), x_test)
    peak = peak_mib()
    print(json.dumps({"peak_mib": peak, "after_loading_data_mib": loaded}))


def growth(x_train) -> list[dict]:
    """One epoch of the default preset at N = 7.5k ... 120k (120k repeats the data), and the
    one-off neighbour search, timed apart."""
    rows = []
    for n in (7_500, 15_000, 30_000, 60_000, 120_000):
        x = torch.cat([x_train, x_train])[:n]
        trainer = preset_trainer(x, "default")
        start = time.perf_counter()
        trainer.prepare(BatchSource(x, CPU))  # the one-off search; fit then reuses it
        search = time.perf_counter() - start
        start = time.perf_counter()
        trainer.fit(x, progress=False)
        epoch = time.perf_counter() - start
        rows.append({"n": n, "epoch_seconds": epoch, "neighbour_search_seconds": search,
                     "epoch_microseconds_per_example": 1e6 * epoch / n})  # fmt: skip
        print(f"  N {n:>7}: epoch {epoch:6.1f}s  neighbour search {search:6.1f}s", flush=True)
    return rows


def markdown(results: dict) -> str:
    lines = []
    if "floor" in results:
        f = results["floor"]
        lines.append(f"The model's matrix products alone, per epoch: batch 64 "
                     f"{f['matmul_b64']:.1f} s, batch 256 {f['matmul_b256']:.1f} s")  # fmt: skip
    if "loops" in results:
        timed = results["loops"]
        rounds = len(timed["bare_b64"])
        lines += ["", f"Median over {rounds} rounds (the loops take turns, one epoch each per "
                  "round); the ratio is the median of the rounds' ratios to the bare loop.", "",
                  "| loop | batch | train s/epoch | with test pass | vs bare loop (floor) |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for name, rows in timed.items():
            batch = 256 if name.endswith("256") else 64
            train = np.median([r["train_seconds"] for r in rows])
            with_test = np.median([r.get("seconds", r["train_seconds"]) for r in rows])
            ratio = median_ratio(timed, name, f"bare_b{batch}")
            lines.append(f"| {name} | {batch} | {train:.1f} | {with_test:.1f} | {ratio:.2f}x |")
        ref = np.median([r["seconds"] for r in timed["reference_loop_b64"]])
        ours = np.median([r["seconds"] for r in timed["ours_reference_b64"]])
        lines.append(f"\nReference loop / ours at batch 64 (with test pass): {ref / ours:.2f}x")
    if "time_to_acc" in results:
        lines += [
            "",
            f"Default preset until test ACC >= {PUBLISHED_ACC} (at most the preset's epochs):",
            "",
            "| seed | reached | epochs | training s |",
            "|---|---|---|---|",
        ]
        for t in results["time_to_acc"]:
            lines.append(f"| {t['seed']} | {'yes' if t['reached'] else 'no'} | {t['epochs']} | "
                         f"{t['seconds']:.0f} |")  # fmt: skip
        if "loops" in results:
            per_epoch = np.median([r["seconds"] for r in results["loops"]["reference_loop_b64"]])
            ref = per_epoch * REFERENCE_EPOCHS
            lines.append(f"\nThe reference loop's {REFERENCE_EPOCHS} epochs at its measured "
                         f"speed: {ref:.0f} s")  # fmt: skip
    if "predict" in results:
        p = results["predict"]
        lines.append(f"\nPredict: {p['images_per_second']:,.0f} images/s on the test images")
    if "memory" in results:
        m = results["memory"]
        lines.append(f"Peak RSS: training {m['train']['peak_mib']:.0f} MiB, predicting "
                     f"{m['predict']['peak_mib']:.0f} MiB (data loaded: "
                     f"{m['predict']['after_loading_data_mib']:.0f} MiB)")  # fmt: skip
    if "growth" in results:
        lines += ["", "| N | epoch s | µs per example | neighbour search s |", "|---|---|---|---|"]
        for r in results["growth"]:
            lines.append(f"| {r['n']:,} | {r['epoch_seconds']:.1f} | "
                         f"{r['epoch_microseconds_per_example']:.0f} | "
                         f"{r['neighbour_search_seconds']:.1f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per loop")
    parser.add_argument("--max-epochs", type=int, default=15, help="time-to-acc limit")
    parser.add_argument("--seeds", default="0-4", help="time-to-acc seeds")
    parser.add_argument("--rss-child", choices=("train", "predict"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child)
        return
    if args.out is None:
        parser.error("--out is required")
    parts = args.parts.split(",")
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; known: {', '.join(PARTS)}")
    x_train, x_test, y_test = mnist()
    results: dict = {}
    if "floor" in parts:
        results["floor"] = {"matmul_b64": matmul_floor(64), "matmul_b256": matmul_floor(256)}
        print(f"floor: {results['floor']}", flush=True)
    if "loops" in parts:
        results["loops"] = loops(x_train, x_test, y_test, args.rounds)
    if "time-to-acc" in parts:
        results["time_to_acc"] = []
        for seed in parse_int_range(args.seeds, "--seeds"):
            row = time_to_accuracy(x_train, x_test, y_test, seed, args.max_epochs)
            results["time_to_acc"].append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "history"}), flush=True)
    if "predict" in parts:
        results["predict"] = predict_throughput(x_train, x_test)
    if "memory" in parts:
        results["memory"] = {"train": peak_rss("train"), "predict": peak_rss("predict")}
    if "growth" in parts:
        results["growth"] = growth(x_train)
    args.out.mkdir(parents=True, exist_ok=True)
    command = command_line("benchmarks.speed")
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "run.json").write_text(json.dumps(benchmark_record(command), indent=2) + "\n")
    text = f"`{command}`\n\n" + markdown(results)
    (args.out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
