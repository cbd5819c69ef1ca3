"""One run per folder: a second process that would train in a run folder is refused with one
line naming the holder, the lock goes with the run however it ends, and a dead holder's lock
is taken over."""

import os
import subprocess
import sys
import time

import pytest

from gmvae.errors import GMVAEError
from gmvae.run.lock import LOCK_FILE, RunLock

QUICK = ["--train-subset", "300", "--test-subset", "100", "--monitor-size", "100", "--quiet"]
# Imports first, then waits for a line on stdin: two of these released together race for real.
AT_THE_SIGNAL = "import sys; from gmvae.cli import main; sys.stdin.readline(); main(sys.argv[1:])"


def test_a_held_lock_refuses_another_holder_and_is_free_once_released(tmp_path):
    first = RunLock(tmp_path).acquire()
    with pytest.raises(GMVAEError, match=f"in use by process {os.getpid()} "):
        RunLock(tmp_path).acquire()
    first.release()
    assert not (tmp_path / LOCK_FILE).exists()
    with RunLock(tmp_path).acquire():
        assert (tmp_path / LOCK_FILE).exists()
    assert not (tmp_path / LOCK_FILE).exists()


def test_the_lock_of_a_dead_process_is_taken_over(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    import socket

    (tmp_path / LOCK_FILE).write_text(f"{int(gone.stdout)} {socket.gethostname()}\n")
    with RunLock(tmp_path).acquire() as lock:
        assert lock.held and (tmp_path / LOCK_FILE).read_text().split()[0] == str(os.getpid())


def start(*argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", AT_THE_SIGNAL, *argv],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_two_trainings_started_at_once_in_one_folder_one_trains_the_other_is_told_who(tmp_path):
    out = str(tmp_path / "run")
    runs = [start("train", *QUICK, "--epochs", "2", "--out", out) for _ in range(2)]
    time.sleep(3)  # both have imported everything and wait at the signal
    for run in runs:
        run.stdin.write("go\n")
        run.stdin.flush()
    done = [(run, *run.communicate(timeout=300)) for run in runs]
    codes = sorted(run.returncode for run, _, _ in done)
    assert codes == [0, 2], [err for _, _, err in done]
    winner = next(run for run in runs if run.returncode == 0)
    loser_err = next(err for run, _, err in done if run.returncode == 2)
    assert loser_err.strip().count("\n") == 0  # one line
    assert f"in use by process {winner.pid} " in loser_err
    assert (tmp_path / "run" / "results.json").exists()
    assert not (tmp_path / "run" / LOCK_FILE).exists()  # released when the run ended


def test_resume_is_refused_while_the_first_process_still_trains(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "gmvae", "train", *QUICK, "--epochs", "30", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (out / "checkpoint.pt").exists()
        again = subprocess.run([sys.executable, "-m", "gmvae", "train", "--resume", str(out)],
                               capture_output=True, text=True, timeout=120)  # fmt: skip
        assert again.returncode == 2
        assert f"in use by process {first.pid} " in again.stderr
        assert again.stderr.strip().count("\n") == 0
    finally:
        first.kill()
        first.communicate()
