"""Throughput of `gmvae train` on MNIST in one process against several under torchrun (gloo on
the CPU), same global batch.

    python -m benchmarks.distributed --out benchmarks/results/distributed [--epochs 2]

Each configuration trains a fresh run; the samples per second come from the per-epoch training
seconds in its metrics.csv (the first epoch, which includes warm-up, is dropped).
Writes results.csv, results.md and run.json (command, commit, machine) into --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.provenance import benchmark_record, command_line

CONFIGS = [  # (label, processes, threads per process)
    ("1 process, 2 threads", 1, 2),
    ("2 processes (torchrun, gloo), 1 thread each", 2, 1),
]


def run_one(processes: int, threads: int, batch: int, epochs: int, folder: Path) -> list[float]:
    out = folder / f"p{processes}-b{batch}"
    args = ["train", "--epochs", str(epochs), "--batch-size", str(batch),
            "--monitor-size", "1000", "--out", str(out)]  # fmt: skip
    launcher = [sys.executable, "-m", "gmvae"]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={processes}", "-m", "gmvae"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([*launcher, *args], check=True, env=env, stdout=subprocess.DEVNULL)
    with open(out / "metrics.csv") as f:
        return [float(row["seconds"]) for row in csv.DictReader(f)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-sizes", default="64,256")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            for label, processes, threads in CONFIGS:
                seconds = run_one(processes, threads, batch, args.epochs, Path(folder))
                steady = seconds[1:] or seconds
                per_epoch = sum(steady) / len(steady)
                row = {
                    "config": label,
                    "processes": processes,
                    "global_batch": batch,
                    "seconds_per_epoch": per_epoch,
                    "samples_per_second": 60000 / per_epoch,
                }
                rows.append(row)
                print(
                    f"batch {batch:>4}  {label:<45} {per_epoch:6.1f} s/epoch  "
                    f"{row['samples_per_second']:7.0f} samples/s",
                    flush=True,
                )
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| global batch | configuration | s / epoch | samples / s |", "|---|---|---|---|"]
    lines += [f"| {r['global_batch']} | {r['config']} | {r['seconds_per_epoch']:.1f} | "
              f"{r['samples_per_second']:.0f} |" for r in rows]  # fmt: skip
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    record = benchmark_record(command_line("benchmarks.distributed"))
    (args.out / "run.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
