"""One way to assemble a run from its settings: data -> model -> objective -> trainer.

`gmvae train` (and its --resume), the estimator, `select-k` and the --restarts candidates all
build their trainer with `assemble`, so each trains the same model for the same settings.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from gmvae.data.datasets import Dataset, open_dataset
from gmvae.data.labels import check_labels, draw_per_class
from gmvae.data.preprocessing import ScaledRows, value_range
from gmvae.errors import GMVAEError
from gmvae.model.network import GMVAENet
from gmvae.run.settings import DataConfig, ExperimentConfig, parse_int_range
from gmvae.train.distributed import World, resolve_device
from gmvae.train.objective import Objective
from gmvae.train.trainer import STARTS_ON_INPUTS, Trainer


def load_data(config: DataConfig, seed: int = 0) -> Dataset:
    """The dataset, cut to the configured subsets; for semi-supervised runs, with the training
    labels training may use (train_labels: all the data's, or `labels_per_class` of each class
    drawn with `seed`)."""
    config.validate()
    data = open_dataset(
        config.data,
        Path(config.data_dir) if config.data_dir else None,
        config.label_column,
        (config.blobs_samples, config.blobs_features, config.blobs_centers),
        seed,
        empty_labels=config.semi_supervised_run,
    )

    def cut(array, n):  # slicing ScaledRows would read the whole file: only cut when asked
        return array if array is None or n is None else array[:n]

    n_train, n_test = config.train_subset, config.test_subset
    data = replace(
        data,
        x_train=cut(data.x_train, n_train),
        y_train=cut(data.y_train, n_train),
        x_test=cut(data.x_test, n_test),
        y_test=cut(data.y_test, n_test),
    )
    if not config.semi_supervised_run:
        return data
    if data.y_train is None:
        raise GMVAEError(
            f"semi-supervised training needs labels, and {config.data} has none here: name a "
            "table's label column with --label-column, or give an .npz a y array (-1: unlabelled)"
        )
    labels = data.y_train
    if config.labels_per_class is not None:
        labels = draw_per_class(labels, config.labels_per_class, seed)
    if config.labelled_classes is not None:
        kept = parse_int_range(config.labelled_classes, "--labelled-classes")
        labels = np.where(np.isin(labels, kept), labels, -1)
    if (data.y_train < 0).any():  # a table with unlabelled rows: no labels to score with
        data = replace(data, y_train=None, y_test=None)
    return replace(data, train_labels=labels)


def fit_to_data(
    config: ExperimentConfig,
    x: np.ndarray | ScaledRows,
    image_shape: tuple[int, ...] | None,
    labels: np.ndarray | None = None,
) -> ExperimentConfig:
    """The settings made for the training rows x (N, D): the model's size, shape and "auto"
    choices, and the objective's for images or tables, with or without labels
    (ObjectiveConfig.for_inputs). Checks
    that the settings fit the data. The same settings come out when given again.

    mixture_start "auto": a table starts from a Gaussian mixture on its standardised rows
    (unless it pretrains), images from random weights. proportions "auto" without a start
    mixture (random weights, no pretraining): equal."""
    config.train.validate()
    config.objective.validate()
    low, high = value_range(x)
    model = config.model.resolve(x.shape[1], image_shape, unit_range=low >= 0 and high <= 1)
    model.validate()
    objective = config.objective
    train = config.train
    if train.mixture_start == "auto":
        on_inputs = image_shape is None and train.pretrain_epochs == 0
        train = replace(train, mixture_start="inputs" if on_inputs else "none")
    if model.proportions == "auto" and train.mixture_start == "none" and not train.pretrain_epochs:
        model = replace(model, proportions="equal")  # no start mixture to decide by
    objective = objective.for_inputs(
        images=image_shape is not None,
        labelled=labels is not None,
        # --restarts choose among their candidates' starts and keep none to hold.
        holds_start=train.mixture_start in STARTS_ON_INPUTS and train.restarts == 1,
    )
    if objective.w_start > 0 and train.mixture_start not in STARTS_ON_INPUTS:
        raise GMVAEError(
            "--w-start holds q(y|x) to a start on the inputs: set --mixture-start inputs "
            "or embedding"
        )
    if objective.w_start > 0 and train.restarts > 1:  # the candidates make the starts
        raise GMVAEError("--w-start is not for --restarts: the run keeps no start to hold")
    if len(x) < max(model.n_clusters, 2):  # a batch needs two rows (batch normalisation)
        raise GMVAEError(
            f"{len(x)} training examples for {model.n_clusters} clusters ({len(x)} samples for "
            f"{model.n_clusters} clusters; at least 2 and one per cluster needed)"
        )
    if labels is not None:
        check_labels(labels, len(x), model.n_clusters)
        if model.components_per_cluster > 1:  # labels name cluster k = component k = class k
            raise GMVAEError("--components-per-cluster above 1 is for unlabelled training")
    if config.train.restarts > 1 and (labels is not None or isinstance(x, ScaledRows)):
        raise GMVAEError("--restarts is for unlabelled training on data that fits in memory")
    return replace(config, model=model, objective=objective, train=train)


def world_device(device: torch.device, world: World) -> torch.device:
    """This rank's GPU (its local rank) when training on CUDA across processes."""
    if device.type == "cuda" and world.size > 1:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def assemble(
    config: ExperimentConfig,
    x: np.ndarray | ScaledRows,
    image_shape: tuple[int, ...] | None,
    labels: np.ndarray | None = None,
    world: World | None = None,
    checkpoint_path: Path | None = None,
) -> Trainer:
    """The trainer for `config` on the training rows x (N, D) (labels (N,), -1 unknown, for a
    semi-supervised run): the settings fitted to the data, the network initialised from the
    seed, the objective around it. Training starts with `trainer.fit(x, labels=labels)`."""
    world = world or World()
    config = fit_to_data(config, x, image_shape, labels)
    device = world_device(resolve_device(config.train.device), world)
    torch.manual_seed(config.train.seed)
    objective = Objective(GMVAENet(config.model), config.objective)
    return Trainer(objective, config.train, device, checkpoint_path, world)


def settings_used(config: ExperimentConfig, trainer: Trainer) -> ExperimentConfig:
    """`config` as `trainer` was assembled from it: fitted to the data."""
    return replace(
        config, model=trainer.model.config, objective=trainer.objective.config, train=trainer.config
    )
