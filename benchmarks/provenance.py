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


def benchmark_record(command: str) -> dict:
    """run.json: the command, the commit and the machine."""
    return {
        "command": command,
        "commit": git_commit(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
    }
