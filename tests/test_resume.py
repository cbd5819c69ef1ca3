"""End to end: a `gmvae train` process killed (SIGKILL) or stopped (SIGTERM) mid-run and then
resumed ends exactly as an uninterrupted run with the same seed."""

import csv
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Semi-supervised, so that resuming must also find the run's labelled draw (labelled.csv); the
# unsupervised command line resumes in tests/test_distributed.py.
ARGS = [
    "--train-subset", "1500", "--test-subset", "300", "--monitor-size", "300",
    "--epochs", "4", "--batch-size", "32", "--hidden-dim", "256",
    "--labels-per-class", "3", "--labelled-batch-size", "8",
]  # fmt: skip


def gmvae(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "gmvae", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def start(out: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "gmvae", "train", *ARGS, "--out", str(out)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)


def outcome(run: Path) -> tuple[dict, list[dict]]:
    """results.json's test scores and metrics.csv without its wall-clock columns."""
    with open(run / "metrics.csv") as f:
        rows = [
            {k: v for k, v in row.items() if k not in ("seconds", "eval_seconds")}
            for row in csv.DictReader(f)
        ]
    return json.loads((run / "results.json").read_text())["test"], rows


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    done = gmvae("train", *ARGS, "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


def test_sigkill_at_a_random_moment_then_resume_ends_as_if_never_killed(uninterrupted, tmp_path):
    out = tmp_path / "run"
    process = start(out)
    wait_for(out / "checkpoint.pt", process)  # epoch 1 is done; kill somewhere after it
    time.sleep(random.uniform(0.0, 1.0))
    process.kill()
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run finished before it was killed"
    assert not (out / "results.json").exists()

    resumed = gmvae("train", "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    assert outcome(out) == outcome(uninterrupted)


def test_sigterm_checkpoints_mid_epoch_exits_nonzero_and_says_how_to_resume(
    uninterrupted, tmp_path
):
    out = tmp_path / "run"
    process = start(out)
    wait_for(out / "checkpoint.pt", process)
    time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM in epoch" in stderr
    assert f"Resume with: gmvae train --resume {out}" in stderr

    resumed = gmvae("train", "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert outcome(out) == outcome(uninterrupted)


def test_resume_refuses_a_finished_run_and_new_settings(uninterrupted, tmp_path):
    done = gmvae("train", "--resume", str(uninterrupted))
    assert done.returncode == 2 and "already finished" in done.stderr
    done = gmvae("train", "--resume", str(uninterrupted), "--lr", "0.1")
    assert done.returncode == 2 and "only --device" in done.stderr
    done = gmvae("train", "--resume", str(tmp_path / "nothing"))
    assert done.returncode == 2 and "not found" in done.stderr
