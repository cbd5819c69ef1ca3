"""Two CPU processes (gloo on 127.0.0.1, a free port, via torchrun) train one model: the same
parameters on every rank, disjoint shards covering each batch, the single-process result within
float tolerance, files from rank 0 only, and checkpoints that move between 1 and 2 processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gmvae.train.distributed import World
from tests.distributed_worker import SETTINGS, few_labels, train

TIMEOUT = 240  # the test's own limit; the process group's is GMVAE_DIST_TIMEOUT below


def torchrun(*args: str, processes: int = 2) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={processes}", *args,
    ]  # fmt: skip
    env = {**os.environ, "GMVAE_DIST_TIMEOUT": "60", "OMP_NUM_THREADS": "1"}
    root = Path(__file__).parent.parent  # so that `-m tests.distributed_worker` is found
    return subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=root
    )


def test_shards_are_disjoint_contiguous_and_cover_the_batch():
    rows = torch.arange(11)
    parts = [World(rank, 3).shard(rows) for rank in range(3)]
    assert torch.cat(parts).tolist() == rows.tolist()
    assert [len(p) for p in parts] == [4, 4, 3]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    done = torchrun("-m", "tests.distributed_worker", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_every_rank_ends_with_identical_parameters(two_ranks):
    first, second = (rank["params"] for rank in two_ranks)
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_the_estimator_fitted_under_torchrun_gives_the_same_clusters_on_every_rank(two_ranks):
    assert [rank["estimator_world"] for rank in two_ranks] == [2, 2]
    assert torch.equal(two_ranks[0]["estimator_labels"], two_ranks[1]["estimator_labels"])


def test_a_table_with_p_y_held_equal_by_its_start_trains_under_torchrun(two_ranks):
    # The held logits are in no term; DDP still wants a gradient for them every step.
    assert [rank["table_learns_proportions"] for rank in two_ranks] == [False, False]
    assert torch.equal(two_ranks[0]["table_labels"], two_ranks[1]["table_labels"])


def test_ranks_see_disjoint_rows_that_cover_every_epoch(two_ranks):
    steps_per_epoch = 400 // SETTINGS["batch_size"]
    for epoch in range(SETTINGS["epochs"]):
        span = slice(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch)
        rows = [sum(rank["rows"][span], []) for rank in two_ranks]
        assert not set(rows[0]) & set(rows[1])
        assert sorted(rows[0] + rows[1]) == list(range(400))


def test_two_processes_match_one_with_the_same_global_batch(two_ranks):
    single = train(World(), torch.device("cpu"))
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(two_ranks[0]["params"][name], value, atol=2e-5, rtol=1e-4)
    assert two_ranks[0]["loss"] == pytest.approx([r["loss"] for r in single.history], rel=1e-4)


def test_semi_supervised_two_processes_match_one(two_ranks):
    single = train(World(), torch.device("cpu"), labels=few_labels())
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(two_ranks[0]["semi_params"][name], value, atol=2e-5, rtol=1e-4)


def test_ranks_that_exit_straight_after_their_last_broadcast_exit_cleanly():
    # Before teardown waited for gloo's threads, about one such exit in three aborted.
    worker = str(Path(__file__).with_name("distributed_exit_worker.py"))
    done = torchrun(worker, processes=4)
    assert done.returncode == 0, done.stderr[-3000:]


QUICK = [
    "--train-subset", "600", "--test-subset", "200", "--monitor-size", "200",
    "--epochs", "2", "--batch-size", "64", "--hidden-dim", "64", "--z-dim", "8",
]  # fmt: skip


def test_gmvae_train_under_torchrun_writes_one_run_from_rank_0_and_resumes_alone(tmp_path):
    out = tmp_path / "run"
    done = torchrun("-m", "gmvae", "train", *QUICK, "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run folder:") == 1  # one rank reported
    assert json.loads((out / "config.json").read_text())["processes"] == 2
    with open(out / "metrics.csv") as f:
        assert len(f.read().splitlines()) == 3  # header + 2 epochs, written once each
    assert json.loads((out / "results.json").read_text())["epochs"] == 2

    # The distributed run's checkpoint continues in one process: pretend epoch 2 never ran.
    from gmvae.model.checkpoint import load_training_state, save_training_state

    state = load_training_state(out / "checkpoint.pt")
    assert len(state["history"]) == 2
    (out / "results.json").unlink()
    single = subprocess.run(
        [sys.executable, "-m", "gmvae", "train", "--resume", str(out)],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr
    assert (out / "results.json").exists()

    # ... and a single-process checkpoint continues under torchrun.
    state["history"] = state["history"][:1]
    save_training_state(state, out / "checkpoint.pt")
    (out / "results.json").unlink()
    again = torchrun("-m", "gmvae", "train", "--resume", str(out))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming" in again.stdout and json.loads((out / "results.json").read_text())
