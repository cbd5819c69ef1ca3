"""Choosing among short models by held-out ELBO: --restarts."""

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch

from gmvae import GMVAE
from gmvae.cli import main
from gmvae.model import inference
from gmvae.run import selection
from gmvae.run.assembly import assemble, load_data
from gmvae.run.restarts import candidate_seed, choose_start, held_out_split
from gmvae.run.settings import DataConfig, ExperimentConfig

QUICK = ["--epochs", "1", "--hidden-dim", "32", "--z-dim", "4", "--monitor-size", "100"]


def test_restarts_go_on_from_the_candidate_with_the_best_held_out_elbo(digits):
    x, y = digits
    config = ExperimentConfig.from_preset("reference", {
        "model": {"z_dim": 4, "hidden_dim": 32},
        "train": {"batch_size": 64, "restarts": 3, "restart_epochs": 1, "seed": 7},
    })  # fmt: skip
    trainer = assemble(config, x, (8, 8))
    rows = choose_start(trainer, config, x, (8, 8), labels=y)
    model = trainer.model
    assert [r["seed"] for r in rows] == [candidate_seed(7, c) for c in range(3)]
    assert rows[0]["seed"] == 7 and len({r["seed"] for r in rows}) == 3
    assert len({r["heldout_elbo"] for r in rows}) == 3  # three different networks
    best = max(rows, key=lambda r: r["heldout_elbo"])
    assert [r["chosen"] for r in rows] == [r is best for r in rows]
    assert {"acc", "nmi", "ari"} <= set(best)  # scored with the labels, not chosen by them
    held, _ = held_out_split(len(x), 7)
    elbo = float(inference.elbo(model, x[held], seed=7).mean())
    assert elbo == pytest.approx(best["heldout_elbo"], rel=1e-6)  # the model holds its weights


def test_the_chosen_candidate_of_a_table_is_not_restarted_from_the_mixture_again():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (60, 3)), rng.normal(5, 1, (60, 3))]).astype(np.float32)
    config = ExperimentConfig.from_preset("default", {
        "model": {"n_clusters": 2, "z_dim": 2, "hidden_dim": 16, "y_hidden_dim": 16},
        "train": {"epochs": 1, "batch_size": 32, "restarts": 2, "restart_epochs": 1},
    })  # fmt: skip
    trainer = assemble(config, x, None)
    choose_start(trainer, config, x, None)
    chosen = {k: v.clone() for k, v in trainer.model.y_encoder.state_dict().items()}
    trainer.config = dataclasses.replace(trainer.config, epochs=0)  # fit: the phases alone
    trainer.fit(torch.as_tensor(x), progress=False)
    after = trainer.model.y_encoder.state_dict()
    assert all(torch.equal(chosen[k], after[k]) for k in chosen)


def test_candidate_seeds_differ_across_runs_and_candidates():
    seeds = {candidate_seed(seed, c) for seed in range(20) for c in range(1, 20)}
    assert len(seeds) == 20 * 19 and not seeds & set(range(20))


def test_train_with_restarts_writes_each_candidate_and_the_choice(tmp_path, capsys):
    out = tmp_path / "r"
    main(["train", "--data", "digits", *QUICK, "--restarts", "2", "--restart-epochs", "1",
          "--out", str(out), "--quiet"])  # fmt: skip
    with open(out / "restarts.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["candidate"]) for r in rows] == [0, 1]
    results = json.loads((out / "results.json").read_text())
    chosen = int(np.argmax([float(r["heldout_elbo"]) for r in rows]))
    assert results["restart_chosen"] == chosen
    assert results["restart_seconds"] == pytest.approx(sum(float(r["seconds"]) for r in rows))


def test_restarts_refuse_labelled_training(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--data", "digits", *QUICK, "--restarts", "2", "--labels-per-class", "2",
              "--out", str(tmp_path / "r")])  # fmt: skip
    assert "--restarts is for unlabelled training" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_select_k_trains_each_k_with_the_presets_objective_as_gmvae_train_would(
    tmp_path, monkeypatch, capsys
):
    built = []
    original = selection.assemble
    monkeypatch.setattr(
        selection,
        "assemble",
        lambda config, *a, **k: (built.append(config), original(config, *a, **k))[1],
    )
    config = ExperimentConfig.from_preset("default", {"train": {"epochs": 1}})
    data = load_data(DataConfig(data="digits", train_subset=400))
    selection.select_k(data, [2, 3], config, tmp_path / "k")
    assert [c.model.n_clusters for c in built] == [2, 3]
    assert all(c.objective == config.objective and c.model.y_batch_norm for c in built)
    assert config.objective.w_adversarial > 0 and not config.objective.elbo_to_clusters


def test_the_estimator_makes_its_restarts_keeps_the_best_held_out_elbo_and_saves_them(tmp_path):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (60, 3)), rng.normal(5, 1, (60, 3))]).astype(np.float32)
    small = {"model": {"y_hidden_dim": 16}, "train": {"restart_epochs": 1}}
    kwargs = dict(n_clusters=2, latent_dim=2, hidden_dim=16, epochs=1, random_state=0)
    single = GMVAE(**kwargs, settings=small).fit(x)
    assert single.restarts_ is None
    restarted = {**small, "train": {"restart_epochs": 1, "restarts": 3}}
    fitted = GMVAE(**kwargs, settings=restarted).fit(x)
    assert [r["candidate"] for r in fitted.restarts_] == [0, 1, 2]
    best = max(fitted.restarts_, key=lambda r: r["heldout_elbo"])
    assert [r["chosen"] for r in fitted.restarts_] == [r is best for r in fitted.restarts_]
    fitted.save(tmp_path / "m")
    assert GMVAE.load(tmp_path / "m").restarts_ == fitted.restarts_
