"""Clustering quality over seeds: `gmvae train` with one preset on one dataset, once per seed.

    python -m benchmarks.clustering --dataset mnist --seeds 0-4 --preset default \
        --out benchmarks/results/clustering/mnist-default [any gmvae train flag, e.g. --w-cat 1]

Each seed is a run folder under OUT/seed-N; unless --keep-all, only its config.json,
metrics.csv, results.json and two figures (generated.png, contingency.png) are kept, so the raw
output can be committed (the weights, checkpoint, report and other figures are deleted). A seed
whose results.json already exists is not run again, so an interrupted benchmark continues where
it stopped; if that seed ran other settings (an older preset, say), the benchmark stops.
Writes OUT/seeds.csv (a row per seed), OUT/summary.csv and OUT/summary.md (median, min and max
of test ACC, NMI, ARI, ELBO and wall seconds) and OUT/run.json (command, commit, machine).
Labels only score the runs: nothing here chooses among seeds.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks.provenance import benchmark_record, command_line
from gmvae.cli import build_parser, setting_overrides
from gmvae.model.network import ModelConfig
from gmvae.run.experiment import Output, run_experiment
from gmvae.run.settings import PRESETS, DataConfig, ExperimentConfig, parse_int_range
from gmvae.train.objective import ObjectiveConfig
from gmvae.train.trainer import TrainConfig

KEPT = {
    "config.json",
    "metrics.csv",
    "results.json",
    "generated.png",
    "contingency.png",
    "labelled.csv",  # semi-supervised runs: the labelled draw
    "restarts.csv",  # runs with --restarts: a row per candidate
}
COLUMNS = ("acc", "nmi", "ari", "elbo", "wall_seconds", "train_seconds")


def differences(config: ExperimentConfig, saved: dict) -> list[str]:
    """The settings where a finished seed's saved config.json differs from `config`; model
    sizes, "auto" choices and unset values are filled in from the data when a run starts, so
    not compared.
    A setting missing from the saved config was added after that seed ran, at the default
    that keeps the old behaviour, so it counts as that default. (Seeds run before the
    "objective" section existed kept its settings under "train".)"""
    wanted = {"preset": config.preset, "data": config.data.data}
    wanted.update({**asdict(config.objective), **asdict(config.train)})
    found = {"preset": saved["preset"], "data": saved["data"]["data"]}
    found.update({**asdict(ObjectiveConfig()), **asdict(TrainConfig())})
    found.update({**saved["train"], **saved.get("objective", {})})
    for key, value in asdict(config.data).items():  # e.g. the labels of a semi-supervised run
        if value != getattr(DataConfig(), key):
            wanted[f"data.{key}"], found[f"data.{key}"] = value, saved["data"].get(key)
    resolved = {"x_dim", "image_shape"}
    for key, value in asdict(config.model).items():
        if key not in resolved and value != "auto":
            found_value = saved["model"].get(key, getattr(ModelConfig(), key))
            wanted[f"model.{key}"], found[f"model.{key}"] = value, found_value
    return [
        f"{k}: {found.get(k)!r} there, {v!r} here"
        for k, v in wanted.items()
        if found.get(k) != v and v not in ("auto", None)  # resolved from the data when run
    ]


def run_seed(args: argparse.Namespace, seed: int) -> dict:
    folder = args.out / f"seed-{seed}"
    results_path = folder / "results.json"
    overrides = setting_overrides(build_parser().parse_args(["train", *args.settings]))
    overrides["data"]["data"] = args.dataset
    overrides["train"]["seed"] = seed
    config = ExperimentConfig.from_preset(args.preset, overrides)
    if results_path.exists():  # finished before: kept only if it ran these very settings
        changed = differences(config, json.loads((folder / "config.json").read_text()))
        if changed:
            sys.exit(f"error: {folder} was run with other settings ({'; '.join(changed)})")
    else:
        if folder.exists():  # an interrupted seed: start it again from scratch
            shutil.rmtree(folder)
        start = time.perf_counter()
        results = run_experiment(config, folder, command=sys.argv, output=Output(log="quiet"))
        results["wall_seconds"] = time.perf_counter() - start
        results_path.write_text(json.dumps(results, indent=2) + "\n")
    if not args.keep_all:
        for path in folder.iterdir():
            if path.name not in KEPT:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    results = json.loads(results_path.read_text())
    test = results["test"]
    row = {"seed": seed, **{k: test[k] for k in ("acc", "nmi", "ari", "elbo")}}
    if "accuracy" in test:  # semi-supervised: cluster k is class k
        row["accuracy"] = test["accuracy"]
    row.update(wall_seconds=results["wall_seconds"], train_seconds=results["train_seconds"])
    print(
        f"seed {seed}: ACC {row['acc']:.2f}  NMI {row['nmi']:.2f}  ARI {row['ari']:.2f}  "
        f"ELBO {row['elbo']:.2f}  {row['wall_seconds']:.0f}s",
        flush=True,
    )
    return row


def summarise(rows: list[dict]) -> list[dict]:
    return [
        {
            "statistic": name,
            **{c: round(float(fn([r[c] for r in rows])), 2) for c in COLUMNS},
        }
        for name, fn in (("median", statistics.median), ("min", min), ("max", max))
    ]


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist", help="a named dataset or a file")
    parser.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,3,7")
    parser.add_argument("--preset", choices=tuple(PRESETS), default="default")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--keep-all", action="store_true", help="keep each run folder whole (weights included)"
    )
    args, args.settings = parser.parse_known_args()  # the rest are `gmvae train` flags
    build_parser().parse_args(["train", *args.settings])  # a wrong flag fails before any run
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [run_seed(args, seed) for seed in parse_int_range(args.seeds, "--seeds")]
    write_csv(args.out / "seeds.csv", rows)
    summary = summarise(rows)
    write_csv(args.out / "summary.csv", summary)
    command = command_line("benchmarks.clustering")
    lines = [
        f"`{command}`",
        "",
        "| seed | ACC | NMI | ARI | test ELBO | wall s |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['seed']} | {r['acc']:.2f} | {r['nmi']:.2f} | {r['ari']:.2f} | "
            f"{r['elbo']:.2f} | {r['wall_seconds']:.0f} |"
            for r in rows
        ),
        *(
            f"| **{s['statistic']}** | {s['acc']:.2f} | {s['nmi']:.2f} | {s['ari']:.2f} | "
            f"{s['elbo']:.2f} | {s['wall_seconds']:.0f} |"
            for s in summary
        ),
    ]
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    (args.out / "run.json").write_text(json.dumps(benchmark_record(command), indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
