"""Datasets: IDX files; checksummed MNIST and Fashion-MNIST (vendored or system copy, a user
folder, or a verified download); scikit-learn's digits; synthetic blobs; and users' own files.

Data come out as float32 arrays (N, D): images scaled to [0, 1], tables standardised by the
model's Scaling. Labels, int64 (N,) or None, are only ever used for evaluation.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gmvae.data.files import TABLE_SUFFIXES, parse_idx, read_bytes, read_data
from gmvae.data.preprocessing import ScaledRows, Scaling, prepare
from gmvae.errors import GMVAEError


@dataclass(frozen=True)
class IdxSource:
    """Four IDX files (name, sha256 of the uncompressed file) and where they may be found."""

    name: str
    files: dict[str, tuple[str, str]]
    mirrors: tuple[str, ...]
    local_dirs: tuple[Path, ...]  # looked in, in order, before the user cache


MNIST = IdxSource(
    name="mnist",
    # ../shared/data/README.md; the published MD5s of the same files agree.
    files={
        "train_images": (
            "train-images-idx3-ubyte",
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        ),
        "train_labels": (
            "train-labels-idx1-ubyte",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        ),
        "test_images": (
            "t10k-images-idx3-ubyte",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        ),
        "test_labels": (
            "t10k-labels-idx1-ubyte",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
    },
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    # The copy vendored in a source checkout: <repo>/data/mnist, three levels above this file.
    local_dirs=(Path(__file__).resolve().parents[3] / "data" / "mnist",),
)
FASHION_MNIST = IdxSource(
    name="fashion-mnist",
    # Read off the files of Debian's dataset-fashion-mnist (the 2017 Zalando release).
    files={
        "train_images": (
            "train-images-idx3-ubyte",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        ),
        "train_labels": (
            "train-labels-idx1-ubyte",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        ),
        "test_images": (
            "t10k-images-idx3-ubyte",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        ),
        "test_labels": (
            "t10k-labels-idx1-ubyte",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
    },
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    local_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
)
IDX_SOURCES = {source.name: source for source in (MNIST, FASHION_MNIST)}
VENDORED_MNIST = MNIST.local_dirs[0]


@dataclass
class Dataset:
    """Data to train on and to score. x_*: float32 (N, D); y_*: int64 (N,) or None.

    Named image datasets have a real test split; for other data the test split is the training
    data itself (clustering is scored on the data it was fitted to).
    image_shape: (H, W) or (C, H, W) for images, None for tables.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray | None
    image_shape: tuple[int, ...] | None
    scaling: Scaling | None = None  # how raw values were mapped to x (None: already in [0, 1])
    # Semi-supervised runs only: the class of each training example that training may use,
    # -1 where unknown (gmvae.data.labels). None for clustering, which trains on no label at all.
    train_labels: np.ndarray | None = None
    label_names: list[str] | None = None  # a file's original label of each class index


def _find_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_verified(path: Path, sha256: str) -> np.ndarray:
    raw = read_bytes(path)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != sha256:
        raise GMVAEError(f"{path} is corrupt: sha256 {digest[:16]}..., expected {sha256[:16]}...")
    return parse_idx(raw, str(path))


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gmvae"


def download_idx(source: IdxSource, folder: Path, mirrors: tuple[str, ...] | None = None) -> None:
    """Fetch any missing file of `source` into `folder`, verified before it gets its name."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, sha256 in source.files.values():
        if _find_file(folder, name):
            continue
        target = folder / f"{name}.gz"
        errors = []
        for mirror in mirrors or source.mirrors:
            partial = target.with_suffix(".gz.part")
            try:
                with urllib.request.urlopen(f"{mirror}{name}.gz", timeout=60) as response:
                    partial.write_bytes(response.read())
                _read_verified(partial, sha256)
                partial.replace(target)
                break
            except (urllib.error.URLError, OSError, GMVAEError) as err:
                partial.unlink(missing_ok=True)
                errors.append(f"{mirror}: {getattr(err, 'reason', err)}")
        else:
            raise GMVAEError(f"could not download {name}.gz into {folder} ({'; '.join(errors)})")


def _complete(source: IdxSource, folder: Path) -> bool:
    return all(_find_file(folder, name) for name, _ in source.files.values())


def find_idx(source: IdxSource, data_dir: Path | None, download: bool = True) -> Path:
    """The folder holding the four files: `data_dir` if given, else the vendored or system
    copy, else the user cache (downloading into it when the files are missing)."""
    if data_dir is not None:
        for name, _ in source.files.values():
            if _find_file(data_dir, name) is None:
                raise GMVAEError(f"{source.name} file {name}[.gz] not found in {data_dir}")
        return data_dir
    cache = default_cache_dir() / source.name
    for folder in (*source.local_dirs, cache):
        if _complete(source, folder):
            return folder
    if not download:
        places = ", ".join(str(p) for p in (*source.local_dirs, cache))
        raise GMVAEError(f"{source.name} not found in {places}")
    download_idx(source, cache)
    return cache


def load_idx_dataset(source: IdxSource, data_dir: Path | None = None) -> Dataset:
    """An IDX image dataset, checksums verified, with its own train/test split."""
    folder = find_idx(source, data_dir)
    arrays = {
        key: _read_verified(_find_file(folder, name), sha256)
        for key, (name, sha256) in source.files.items()
    }
    return Dataset(
        name=source.name,
        x_train=images_to_unit(arrays["train_images"]),
        y_train=arrays["train_labels"].astype(np.int64),
        x_test=images_to_unit(arrays["test_images"]),
        y_test=arrays["test_labels"].astype(np.int64),
        image_shape=arrays["train_images"].shape[1:],
    )


def load_mnist(data_dir: Path | None = None) -> Dataset:
    """MNIST: 60,000 training and 10,000 test images of 28x28."""
    return load_idx_dataset(MNIST, data_dir)


def load_digits_dataset() -> Dataset:
    """scikit-learn's 1,797 8x8 digits (pixel values 0-16), scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return Dataset("digits", x, y.astype(np.int64), x, y.astype(np.int64), (8, 8))


def load_blobs(n_samples: int, n_features: int, centers: int, seed: int) -> Dataset:
    """Isotropic Gaussian blobs (scikit-learn's make_blobs), standardised."""
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples, n_features, centers=centers, random_state=seed)
    scaling = Scaling.fit(x)
    x = scaling.apply(x)
    y = y.astype(np.int64)
    return Dataset("blobs", x, y, x, y, None, scaling)


def dataset_status() -> list[tuple[str, str]]:
    """(name, where it is found or why not) for each named dataset, downloading nothing."""
    rows = []
    for source in IDX_SOURCES.values():
        try:
            rows.append((source.name, f"found in {find_idx(source, None, download=False)}"))
        except GMVAEError as err:
            rows.append((source.name, f"{err}; will download into the cache when asked for"))
    rows.append(("digits", "ships with scikit-learn (1,797 8x8 images, 10 classes)"))
    rows.append(("blobs", "synthetic (--blobs-samples, --blobs-features, --blobs-centers)"))
    return rows


def images_to_unit(images: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 -> (N, H*W) float32 in [0, 1]."""
    return images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)


NAMED_DATASETS = (*IDX_SOURCES, "digits", "blobs")


def open_dataset(
    spec: str,
    data_dir: Path | None = None,
    label_column: str | None = None,
    blobs: tuple[int, int, int] = (1000, 2, 3),
    seed: int = 0,
    empty_labels: bool = False,
) -> Dataset:
    """A named dataset (mnist, fashion-mnist, digits, blobs) or a user's file or image folder.

    blobs: (samples, features, centers) of the synthetic dataset, drawn with `seed`.
    empty_labels: a table's empty label cells are unlabelled rows (-1) instead of an error.
    """
    if spec in IDX_SOURCES:
        return load_idx_dataset(IDX_SOURCES[spec], data_dir)
    if spec == "digits":
        return load_digits_dataset()
    if spec == "blobs":
        return load_blobs(*blobs, seed=seed)
    path = Path(spec)
    if not path.exists():
        raise GMVAEError(
            f"no dataset {spec!r}: not a file or folder, nor one of {', '.join(NAMED_DATASETS)}"
        )
    raw = read_data(path, label_column, empty_labels=empty_labels)
    x, image_shape, scaling = prepare(raw.values, raw.is_image, what=str(path))
    return Dataset(
        path.name, x, raw.labels, x, raw.labels, image_shape, scaling, label_names=raw.label_names
    )


def read_inputs(
    path: Path,
    x_dim: int,
    images: bool,
    scaling: Scaling | None,
    label_column: str | None = None,
) -> np.ndarray | ScaledRows:
    """New rows for a trained model (predict). For an image model, pixels are mapped to [0, 1]
    as in training (0-255 values divided by 255); for a table model, by its saved scaling."""
    if path.suffix.lower() not in TABLE_SUFFIXES:
        label_column = None
    raw = read_data(path, label_column, need_label=False)
    features = int(np.prod(raw.values.shape[1:]))
    if raw.values.ndim >= 2 and len(raw.values) and features != x_dim:
        raise GMVAEError(
            f"{path} has {features} features per row (shape {raw.values.shape}); "
            f"the model expects {x_dim}"
        )
    return prepare(raw.values, images, "fit" if images else scaling, what=str(path))[0]
