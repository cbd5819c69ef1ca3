"""Every setting of a run, in four sections saved as config.json's "data", "model",
"objective" and "train", and the presets that fill them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from gmvae.data.datasets import NAMED_DATASETS
from gmvae.errors import GMVAEError
from gmvae.model.network import ModelConfig
from gmvae.train.objective import ObjectiveConfig
from gmvae.train.trainer import TrainConfig

# The reference project's settings are the dataclass defaults (K=10, z_dim=64, width 512,
# batch 64, Adam 1e-3, BCE, 50 epochs, seed 0); a preset lists only what differs from them.
# "default" trains q(y|x) as IMSAT does (Hu et al. 2017: a wide batch-normalised MLP; agreement
# under the small perturbation that would change it most; confident and balanced clusters) and
# lets the ELBO fit the rest of the GMVAE to those clusters: measured in
# benchmarks/results/clustering/, where the ELBO's own gradient on q(y|x) cost accuracy.
PRESETS: dict[str, dict[str, dict]] = {
    "reference": {},
    "default": {
        "model": {"y_hidden_dim": 1200, "y_batch_norm": True, "proportions": "auto"},
        "objective": {
            "elbo_to_clusters": False,
            "w_adversarial": 1.0,
            "w_confidence": 0.1,
            "w_balance": 0.4,
        },
        "train": {"epochs": 15, "batch_size": 256, "lr": 2e-3, "mixture_start": "auto"},
    },
}
DEFAULT_PRESET = "default"


@dataclass
class DataConfig:
    data: str = field(
        default="mnist",
        metadata={
            "help": f"a named dataset ({', '.join(NAMED_DATASETS)}) or a file (.npy, .npz, "
            ".csv, .tsv, .parquet, IDX) or folder of images"
        },
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "folder holding a named dataset's files"}
    )
    label_column: str | None = field(
        default=None,
        metadata={"help": "a table's label column: for evaluation only, unless semi-supervised"},
    )
    semi_supervised: bool = field(
        default=False,
        metadata={
            "help": "train with the training labels (a table's --label-column, where empty cells "
            "are unlabelled rows, or an .npz's y, where -1 is): cluster k is then class k"
        },
    )
    labels_per_class: int | None = field(
        default=None,
        metadata={
            "help": "semi-supervised with only N training labels per class, drawn with the "
            "seed (saved in RUN/labelled.csv); the other examples are unlabelled"
        },
    )
    labelled_classes: str | None = field(
        default=None,
        metadata={
            "help": "semi-supervised with the labels of these classes only (e.g. 0-4 or 1,3): "
            "the other classes are left to find clusters of their own"
        },
    )
    blobs_samples: int = field(default=1000, metadata={"help": "blobs: number of samples"})
    blobs_features: int = field(default=2, metadata={"help": "blobs: number of features"})
    blobs_centers: int = field(default=3, metadata={"help": "blobs: number of centers"})
    train_subset: int | None = field(
        default=None, metadata={"help": "use only the first N training images (quick runs)"}
    )
    test_subset: int | None = field(
        default=None, metadata={"help": "evaluate on only the first N test images"}
    )
    monitor_size: int = field(
        default=10000, metadata={"help": "training images scored each epoch (ACC/NMI/ARI)"}
    )

    def validate(self) -> None:
        sizes = {"blobs_samples", "blobs_features", "blobs_centers", "monitor_size"}
        sizes |= {k for k in ("train_subset", "test_subset", "labels_per_class")
                  if getattr(self, k) is not None}  # fmt: skip
        if min(getattr(self, k) for k in sizes) < 1:
            raise GMVAEError(f"{', '.join(sorted(sizes))} must be at least 1")

    @property
    def semi_supervised_run(self) -> bool:
        """Whether training uses labels (any of the three ways of asking for it)."""
        return (
            self.semi_supervised
            or self.labels_per_class is not None
            or self.labelled_classes is not None
        )


SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "objective": ObjectiveConfig,
    "train": TrainConfig,
}


@dataclass
class ExperimentConfig:
    data: DataConfig
    model: ModelConfig
    objective: ObjectiveConfig
    train: TrainConfig
    preset: str = DEFAULT_PRESET

    @classmethod
    def from_preset(cls, name: str, overrides: dict[str, dict] | None = None) -> ExperimentConfig:
        """The preset's settings with `overrides` ({section: {field: value}})."""
        if name not in PRESETS:
            raise GMVAEError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
        sections = {name: section() for name, section in SECTIONS.items()}
        for layer in (PRESETS[name], overrides or {}):
            for section, values in layer.items():
                sections[section] = replace(sections[section], **values)
        return cls(preset=name, **sections)

    @classmethod
    def from_dict(cls, saved: dict) -> ExperimentConfig:
        """What to_dict wrote (config.json). A run saved before the "objective" section
        existed kept the objective's fields under "train": they are read from there."""
        try:
            values = {name: dict(saved[name]) for name in ("data", "model", "train")}
            values["objective"] = dict(saved.get("objective", {}))
            for f in fields(ObjectiveConfig):
                if f.name in values["train"]:
                    values["objective"].setdefault(f.name, values["train"].pop(f.name))
            return cls(
                data=DataConfig(**values["data"]),
                model=ModelConfig.from_dict(values["model"]),
                objective=ObjectiveConfig(**values["objective"]),
                train=TrainConfig(**values["train"]),
                preset=saved.get("preset", DEFAULT_PRESET),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise GMVAEError(f"not a gmvae run config: {err}") from None

    def to_dict(self) -> dict:
        return {"preset": self.preset, **{name: asdict(getattr(self, name)) for name in SECTIONS}}


def parse_int_range(text: str, flag: str = "--k") -> list[int]:
    """'2-20' -> 2..20; '5,10,15' -> [5, 10, 15]; non-negative values only."""
    try:
        if "-" in text:
            low, high = (int(v) for v in text.split("-"))
            values = list(range(low, high + 1))
        else:
            values = [int(v) for v in text.split(",")]
    except ValueError:
        raise GMVAEError(
            f"{flag} {text!r}: expected a range like 2-20 or a list like 5,10"
        ) from None
    if not values or min(values) < 0:
        raise GMVAEError(f"{flag} {text!r}: expected non-negative numbers")
    return values
