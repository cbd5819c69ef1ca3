"""End to end: `gmvae train` on an MNIST subset, then evaluate, predict and sample on its run."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from gmvae.cli import main
from gmvae.data.datasets import load_mnist

QUICK = ["--train-subset", "300", "--test-subset", "200", "--monitor-size", "200", "--epochs", "1"]
TRAIN_TINY = ["train", "--train-subset", "50", "--test-subset", "20", "--epochs", "1"]
FIGURES = ["scores", "losses", "latent_tsne", "reconstructions", "generated", "contingency"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "quick"
    done = subprocess.run(
        [sys.executable, "-m", "gmvae", "train", *QUICK, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return out, done.stdout


def test_train_writes_every_output_and_each_parses(run):
    out, stdout = run
    assert "ACC" in stdout and "NMI" in stdout and "ARI" in stdout

    config = json.loads((out / "config.json").read_text())
    assert config["preset"] == "default" and config["train"]["seed"] == 0
    assert config["train"]["batch_size"] == 256 and config["objective"]["w_adversarial"] == 1
    assert config["model"]["n_clusters"] == 10 and config["data"]["train_subset"] == 300
    for key in ("gmvae_version", "torch_version", "device", "git_commit", "preset"):
        assert key in config

    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    expected = {"epoch", "loss", "rec", "gauss", "cat", "tau", "lr", "acc", "nmi", "ari"}
    assert expected | {"usage_entropy", "seconds"} <= set(rows[0])
    assert all(np.isfinite(float(rows[0][k])) for k in expected)

    results = json.loads((out / "results.json").read_text())
    assert {"acc", "nmi", "ari", "elbo"} <= set(results["test"])
    assert results["train_seconds"] > 0 and results["test"]["elbo"] < 0

    meta = json.loads((out / "model" / "config.json").read_text())
    assert meta["model"]["x_dim"] == 784
    assert (out / "model" / "weights.safetensors").stat().st_size > 0

    for name in FIGURES:
        data = (out / f"{name}.png").read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000, name


def test_evaluate_recomputes_the_saved_test_metrics(run, capsys):
    out, _ = run
    main(["evaluate", str(out)])
    printed = capsys.readouterr().out.split("\n")[1].split()
    results = json.loads((out / "results.json").read_text())["test"]
    assert [float(v) for v in printed] == pytest.approx(
        [results[k] for k in ("acc", "nmi", "ari", "elbo")], abs=0.01
    )


def test_predict_writes_the_cluster_and_k_probabilities_per_row(run, tmp_path):
    out, _ = run
    images = (load_mnist().x_test[:25].reshape(25, 28, 28) * 255).round().astype(np.uint8)
    np.save(tmp_path / "x.npy", images)
    main(
        [
            "predict",
            str(out),
            "--input",
            str(tmp_path / "x.npy"),
            "--output",
            str(tmp_path / "p.csv"),
        ]
    )
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["cluster"] + [f"p{k}" for k in range(10)]
    table = np.array(rows[1:], dtype=float)
    assert table.shape == (25, 11)
    np.testing.assert_allclose(table[:, 1:].sum(1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(table[:, 0], table[:, 1:].argmax(1))


def test_sample_draws_a_png_grid(run, tmp_path):
    out, _ = run
    main(["sample", str(out), "--per-cluster", "3", "--output", str(tmp_path / "g.png")])
    assert (tmp_path / "g.png").read_bytes().startswith(b"\x89PNG")


def expect_error(argv: list[str], capsys, message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("gmvae: error:") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_an_existing_run_folder_is_never_written_over(run, capsys):
    out, _ = run
    before = (out / "results.json").read_bytes()
    expect_error(["train", *QUICK, "--out", str(out)], capsys, "already exists")
    assert (out / "results.json").read_bytes() == before


def test_bad_inputs_fail_with_one_line_and_exit_code_2(run, tmp_path, capsys):
    out, _ = run
    np.save(tmp_path / "wide.npy", np.zeros((2, 100), dtype=np.float32))
    predict = ["predict", str(out), "--output", str(tmp_path / "p.csv"), "--input"]
    expect_error([*predict, str(tmp_path / "wide.npy")], capsys, "expects 784")
    np.save(tmp_path / "big.npy", np.full((2, 784), 300.0, dtype=np.float32))
    expect_error([*predict, str(tmp_path / "big.npy")], capsys, "must lie in [0, 1] or [0, 255]")
    assert not (tmp_path / "p.csv").exists()
    expect_error(["evaluate", str(tmp_path)], capsys, "not a run folder")
    # Errors found before training leave no run folder behind.
    expect_error(
        ["train", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")], capsys, "not found in"
    )
    if not __import__("torch").cuda.is_available():
        expect_error(["train", "--device", "cuda", "--out", str(tmp_path / "c")], capsys, "CUDA")
    assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()


def test_every_setting_is_a_train_flag(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for flag in (
        "--preset",
        "--n-clusters",
        "--z-dim",
        "--hidden-dim",
        "--likelihood",
        "--epochs",
        "--batch-size",
        "--lr",
        "--tau-start",
        "--tau-decay",
        "--tau-min",
        "--gumbel-hard",
        "--w-rec",
        "--w-gauss",
        "--w-cat",
        "--seed",
        "--device",
        "--data-dir",
        "--out",
    ):
        assert flag in text, flag
    # The defaults shown are those a plain `gmvae train` uses (the default preset's), and the
    # placeholders are plain names.
    flat = " ".join(text.split())
    for shown in ("--epochs EPOCHS passes over the training data (default: 15)",
                  "(default: 256)", "Adam learning rate (default: 0.002)",
                  "when uniform) (default: 0.4)", "--data DATA ",
                  "--label-column LABEL_COLUMN "):  # fmt: skip
        assert shown in flat, shown
    assert "DATA.DATA" not in text and "TRAIN." not in text


def test_every_setting_is_checked_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "r"
    for flags, message in [
        (["--batch-size", "1"], "two examples"),
        (["--w-rec", "-1"], "must be finite and at least 0"),
        (["--w-gauss", "nan"], "must be finite and at least 0"),
        (["--lr", "inf"], "lr must be positive"),
        (["--tau-decay", "-0.1"], "tau_decay"),
        (["--monitor-size", "0"], "at least 1"),
    ]:
        expect_error([*TRAIN_TINY, *flags, "--out", str(out)], capsys, message)
        assert not out.exists(), flags
    main([*TRAIN_TINY, "--quiet", "--out", str(out)])  # the same folder, once the settings are good
    assert (out / "results.json").exists()


def test_a_run_folder_that_cannot_be_written_is_said_to_be_so(tmp_path, capsys):
    expect_error([*TRAIN_TINY, "--out", "/proc/gmvae-run"], capsys, "not a writable folder")


def test_an_unwritable_or_full_run_folder_fails_before_training(tmp_path, capsys, monkeypatch):
    (tmp_path / "a-file").write_text("")
    expect_error([*TRAIN_TINY, "--out", str(tmp_path / "a-file" / "run")], capsys, "cannot write")

    import collections

    import gmvae.run.experiment

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(gmvae.run.experiment.shutil, "disk_usage", lambda _: usage(1, 1, 2**20))
    expect_error([*TRAIN_TINY, "--out", str(tmp_path / "full")], capsys, "only 1 MB free")
    assert not (tmp_path / "full").exists()


def test_labels_per_class_draws_that_many_saves_the_draw_and_scores_classes(tmp_path, capsys):
    out = tmp_path / "semi"
    main(["train", *QUICK, "--labels-per-class", "2", "--out", str(out)])
    assert "ACCURACY" in capsys.readouterr().out
    train_labels = load_mnist().y_train
    with open(out / "labelled.csv") as f:
        drawn = [(int(r["row"]), int(r["label"])) for r in csv.DictReader(f)]
    assert sorted(label for _, label in drawn) == sorted(list(range(10)) * 2)
    assert all(row < 300 and train_labels[row] == label for row, label in drawn)
    results = json.loads((out / "results.json").read_text())
    assert results["labelled"] == 20 and 0 <= results["test"]["accuracy"] <= 100
    main(["evaluate", str(out)])
    assert f"{results['test']['accuracy']:.2f}" in capsys.readouterr().out


def test_latent_map_umap_draws_the_map_with_umap_instead_of_tsne(tmp_path, monkeypatch, capsys):
    pytest.importorskip("umap")
    out = tmp_path / "umap"
    main([*TRAIN_TINY, "--latent-map", "umap", "--quiet", "--out", str(out)])
    assert (out / "latent_umap.png").read_bytes().startswith(b"\x89PNG")
    assert not (out / "latent_tsne.png").exists()
    assert "UMAP of the latent means" in (out / "report.html").read_text()

    import importlib.util

    find_spec = importlib.util.find_spec
    without_umap = lambda name, *rest: None if name == "umap" else find_spec(name, *rest)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", without_umap)
    missing = tmp_path / "missing"
    expect_error([*TRAIN_TINY, "--latent-map", "umap", "--out", str(missing)], capsys, "umap-learn")
    assert not missing.exists()
