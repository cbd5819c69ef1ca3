"""`GMVAE`: the scikit-learn-style estimator, a thin layer over the assembly of a run."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from gmvae.data.labels import check_labels
from gmvae.data.preprocessing import ScaledRows, prepare
from gmvae.errors import GMVAEError
from gmvae.model import inference
from gmvae.model.checkpoint import load_model, load_scaling, save_model
from gmvae.run.assembly import assemble, settings_used
from gmvae.run.restarts import choose_start
from gmvae.run.settings import PRESETS, ExperimentConfig
from gmvae.storage import atomic_write, read_json, replace_folder
from gmvae.train import distributed
from gmvae.train.distributed import resolve_device

ESTIMATOR_FILE = "estimator.json"


class GMVAE(ClusterMixin, TransformerMixin, BaseEstimator):
    """Gaussian Mixture VAE clustering.

    X: an array, torch tensor or pandas DataFrame of shape (n_samples, n_features), or images
    (n_samples, H, W) / (n_samples, C, H, W), or flat rows with `image_shape` given. Images go
    to [0, 1] (0-255 values are divided by 255); tables are standardised per column and the
    scaling is kept for every later call and saved with the model.

    preset: the objective and settings to start from, as for `gmvae train --preset` ("default",
    or "reference" for the reference project's); epochs, batch_size and learning_rate are the
    preset's unless given.

    settings: any other setting of the preset changed, as `gmvae train`'s flags change them:
    {"objective" | "model" | "train": {field: value}}, e.g. {"objective": {"w_balance": 0.1}}.

    semi_supervised: when True, `fit(X, y)` trains with the labels in y (-1 for unlabelled
    rows, as scikit-learn's semi-supervised estimators read it; classes 0 to n_clusters - 1),
    and cluster k is class k, so `predict` returns classes. When False, y is ignored.

    Fitted attributes: model_ (the network), labels_, weights_ (the clusters' proportions
    p(y), as GaussianMixture's), scaling_, likelihood_, architecture_, image_shape_, history_ (a
    dict per epoch), restarts_ (with settings {"train": {"restarts": n}}, n > 1: a dict per
    candidate start, its held-out ELBO and whether it was chosen; else None), n_features_in_,
    feature_names_in_ (DataFrames).
    """

    def __init__(
        self,
        n_clusters: int = 10,
        latent_dim: int = 64,
        hidden_dim: int = 512,
        likelihood: str = "auto",
        architecture: str = "auto",
        epochs: int | None = None,
        batch_size: int | None = None,
        learning_rate: float | None = None,
        image_shape: tuple[int, ...] | None = None,
        device: str = "auto",
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
        semi_supervised: bool = False,
        preset: str = "default",
        settings: dict | None = None,
    ):
        self.n_clusters = n_clusters
        self.latent_dim = latent_dim
        self.hidden_dim = hidden_dim
        self.likelihood = likelihood
        self.architecture = architecture
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.image_shape = image_shape
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.semi_supervised = semi_supervised
        self.preset = preset
        self.settings = settings

    def _values(self, X: object, reset: bool) -> np.ndarray:
        """Validated values shaped as images when they are images."""
        values = validate_data(self, X, reset=reset, allow_nd=True, dtype="numeric")
        if self.image_shape is not None and values.ndim == 2:
            if int(np.prod(self.image_shape)) != values.shape[1]:
                raise GMVAEError(
                    f"image_shape {tuple(self.image_shape)} does not hold "
                    f"{values.shape[1]} features"
                )
            values = values.reshape(len(values), *self.image_shape)
        return values

    def _inputs(self, X: object) -> np.ndarray | ScaledRows:
        check_is_fitted(self, "model_")
        values = self._values(X, reset=False)
        if tuple(values.shape[1:]) != self.input_shape_:
            raise GMVAEError(
                f"X has rows of shape {values.shape[1:]}; fitted on {self.input_shape_}"
            )
        return prepare(values, self.image_shape_ is not None, self.scaling_, what="X")[0]

    def fit(self, X: object, y: object = None) -> GMVAE:
        """Fit to X. y: ignored (clustering uses no labels), unless semi_supervised: then the
        class of each row, -1 where unknown."""
        values = self._values(X, reset=True)
        is_image = values.ndim >= 3
        x, image_shape, scaling = prepare(values, is_image, what="X")
        labels = None
        if self.semi_supervised:
            if y is None:
                raise GMVAEError("semi_supervised=True needs y: a class per row, -1 if unknown")
            labels = check_labels(y, len(x), self.n_clusters)
        # Drawn from random_state: under torchrun give an int so every rank draws the same.
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        given = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.learning_rate}
        overrides = {section: dict(values) for section, values in (self.settings or {}).items()}
        if set(overrides) - {"model", "objective", "train"}:
            raise GMVAEError(f"settings sections are model, objective and train; got {overrides}")
        overrides.setdefault("model", {}).update(
            n_clusters=self.n_clusters,
            z_dim=self.latent_dim,
            hidden_dim=self.hidden_dim,
            likelihood=self.likelihood,
            architecture=self.architecture,
        )
        overrides.setdefault("train", {}).update(
            {name: value for name, value in given.items() if value is not None},
            seed=seed,
            device=self.device,
            checkpoint_every=0,
        )
        try:
            config = ExperimentConfig.from_preset(self.preset, overrides)
        except TypeError as err:  # a field the section does not have
            raise GMVAEError(f"settings: {err}") from None
        # Under torchrun every process trains its share of each batch (DDP); else one process.
        world, _ = distributed.setup(self.device)
        trainer = assemble(config, x, image_shape, labels, world)
        self.restarts_ = None
        if trainer.config.restarts > 1:  # as `gmvae train --restarts` does
            used = settings_used(config, trainer)
            self.restarts_ = choose_start(trainer, used, x, image_shape)
        data = torch.as_tensor(x) if isinstance(x, np.ndarray) else x
        self.history_ = trainer.fit(data, progress=self.verbose > 0, labels=labels)
        self.model_ = trainer.model.eval()
        self.scaling_ = scaling
        self.input_shape_ = tuple(values.shape[1:])
        self.image_shape_ = image_shape
        self.likelihood_ = trainer.model.config.likelihood
        self.architecture_ = trainer.model.config.architecture
        self.n_iter_ = len(self.history_)
        self.labels_ = inference.cluster_probabilities(self.model_, x).argmax(1)
        return self

    @property
    def weights_(self) -> np.ndarray:
        """The clusters' proportions (n_clusters,): p(y), learned or equal where the settings
        hold them equal, summed over each cluster's components."""
        check_is_fitted(self, "model_")
        return inference.proportions(self.model_)

    def predict_proba(self, X: object) -> np.ndarray:
        """q(cluster|x), q(y|x) summed over each cluster's components: (n_samples, n_clusters)."""
        x = self._inputs(X)
        return inference.cluster_probabilities(self.model_, x)

    def predict(self, X: object) -> np.ndarray:
        """The most probable cluster of each sample."""
        return self.predict_proba(X).argmax(1)

    def transform(self, X: object) -> np.ndarray:
        """E[z|x] under the most probable cluster: (n_samples, latent_dim)."""
        x = self._inputs(X)
        return inference.latent_means(self.model_, x)

    def score_samples(self, X: object) -> np.ndarray:
        """The ELBO of each sample (nats, in the model's scaled units)."""
        x = self._inputs(X)
        return inference.elbo(self.model_, x)

    def score(self, X: object, y: object = None) -> float:
        """The mean ELBO (higher is better)."""
        return float(self.score_samples(X).mean())

    def _to_user_space(self, x: np.ndarray) -> np.ndarray:
        if self.scaling_ is not None:
            x = self.scaling_.invert(x)
        return x.reshape(len(x), *self.input_shape_)

    def sample(
        self, n_samples: int = 1, cluster: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw y ~ p(y) (or fixed to `cluster`), z ~ p(z|y), x = E[x|z]. Returns (X, y)."""
        check_is_fitted(self, "model_")
        if cluster is not None and not 0 <= cluster < self.n_clusters:
            raise GMVAEError(f"cluster must be in [0, {self.n_clusters}), got {cluster}")
        rng = check_random_state(self.random_state)
        y = (
            np.full(n_samples, cluster)
            if cluster is not None
            else rng.choice(self.n_clusters, size=n_samples, p=self._sampling_weights())
        )
        x = inference.sample(self.model_, y, seed=int(rng.randint(2**31 - 1)))
        return self._to_user_space(x), y

    def _sampling_weights(self) -> np.ndarray | None:
        """p(y) for drawing y: None (uniform, as rng.choice reads it) where it is held equal,
        so that a seed draws what it always drew."""
        if not self.model_.learns_proportions():
            return None
        weights = self.weights_.astype(np.float64)
        return weights / weights.sum()

    def reconstruct(self, X: object) -> np.ndarray:
        """E[x|z] at z = E[z|x], in the units and shape of X."""
        x = self._inputs(X)
        return self._to_user_space(inference.reconstruct(self.model_, x))

    def save(self, folder: str | Path, overwrite: bool = False) -> None:
        """Write the fitted model to `folder` (safetensors weights and JSON, no pickle). An
        existing model folder is replaced only with `overwrite`; either way the folder is
        written beside it and renamed into place, so a reader sees the old model or the whole
        new one."""
        check_is_fitted(self, "model_")
        folder = Path(folder)
        if folder.exists() and not (folder.is_dir() and not any(folder.iterdir())):
            if not overwrite:
                raise GMVAEError(f"{folder} already exists; save(..., overwrite=True) replaces it")
            if not (folder / ESTIMATOR_FILE).is_file():
                raise GMVAEError(f"{folder} exists and is not a saved GMVAE: not replaced")
        state = {
            "params": {k: v for k, v in self.get_params().items() if k != "random_state"},
            "random_state": self.random_state if isinstance(self.random_state, int) else None,
            "input_shape": list(self.input_shape_),
            "n_features_in": int(self.n_features_in_),
            "feature_names_in": getattr(self, "feature_names_in_", np.array([])).tolist(),
            "labels": self.labels_.tolist(),
            "history": self.history_,
            "restarts": self.restarts_,
        }
        staging = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        try:
            save_model(self.model_, staging, self.scaling_)
            atomic_write(staging / ESTIMATOR_FILE, json.dumps(state, indent=2) + "\n")
            replace_folder(staging, folder)
        except OSError as err:
            raise GMVAEError(f"cannot write {folder}: {err.strerror or err}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> GMVAE:
        """Read what `save` wrote; any damage, or an estimator.json that does not fit the
        model, is a GMVAEError naming the file."""
        folder = Path(folder)
        state = read_json(folder / ESTIMATOR_FILE)
        where = folder / ESTIMATOR_FILE
        try:
            params = dict(state["params"])
            if params.get("image_shape") is not None:  # a JSON list, given as a tuple
                params["image_shape"] = tuple(int(n) for n in params["image_shape"])
            estimator = cls(**params, random_state=state["random_state"])
            input_shape = tuple(int(n) for n in state["input_shape"])
            n_features = int(state["n_features_in"])
            labels = np.asarray(state["labels"], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as err:
            raise GMVAEError(f"{where} is not a saved GMVAE: {err}") from None
        model = load_model(folder, resolve_device(device))
        config = model.config
        expected = {
            "n_clusters": config.n_clusters,
            "latent_dim": config.z_dim,
            "hidden_dim": config.hidden_dim,
        }
        wrong = [k for k, v in expected.items() if getattr(estimator, k) != v]
        if estimator.preset not in PRESETS:
            wrong.append("preset")
        if math.prod(input_shape) != config.x_dim or n_features not in (
            config.x_dim, input_shape[0]
        ):  # fmt: skip
            wrong.append("input_shape / n_features_in")
        if labels.ndim != 1 or (
            len(labels) and not 0 <= labels.min() <= labels.max() < config.n_clusters
        ):
            wrong.append("labels")
        if wrong:
            raise GMVAEError(f"{where} does not fit the model in {folder}: {', '.join(wrong)}")
        estimator.model_ = model
        estimator.scaling_ = load_scaling(folder, config.x_dim)
        estimator.input_shape_ = input_shape
        estimator.image_shape_ = config.image_shape
        estimator.likelihood_ = config.likelihood
        estimator.architecture_ = config.architecture
        estimator.history_ = state.get("history", [])
        estimator.n_iter_ = len(estimator.history_)
        estimator.restarts_ = state.get("restarts")
        estimator.n_features_in_ = n_features
        estimator.labels_ = labels
        if state.get("feature_names_in"):
            estimator.feature_names_in_ = np.array(state["feature_names_in"], dtype=object)
        return estimator
