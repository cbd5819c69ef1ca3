"""What every benchmark writes to run.json, so a number can be traced to its command, commit and
machine."""

from __future__ import annotations

import os
import platform
import sys
import time

import torch

from gmvae.run.experiment import git_commit


def command_line(module: str) -> str:
    """The command that is running, as a user would type it: `python -m MODULE ARGS...`."""
    return " ".join(["python -m", module, *sys.argv[1:]])


def cpu_model() -> str:
    """The CPU's model name where Linux reports it, else the architecture. Recorded because the
    same seed and code can cluster differently on another CPU (its rounding differs: see
    benchmarks/results/semi-supervised/, the rerun on an AMD EPYC)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def benchmark_record(command: str) -> dict:
    """run.json: the command, the commit and the machine."""
    return {
        "command": command,
        "commit": git_commit(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
    }
