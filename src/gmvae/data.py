"""Datasets: IDX files, checksummed MNIST (vendored, a user folder, or a verified download).

Images come out as float32 arrays of shape (N, H*W) scaled to [0, 1]; labels as int64 (N,).
Labels are only ever used for evaluation.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gmvae.errors import GMVAEError

# sha256 of the *uncompressed* IDX files (../shared/data/README.md; the published MD5s agree).
MNIST_FILES = {
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
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
# The copy vendored in a source checkout: <repo>/data/mnist, three levels above this file.
VENDORED_MNIST = Path(__file__).resolve().parents[2] / "data" / "mnist"

# IDX type codes (http://yann.lecun.com/exdb/mnist/) -> big-endian numpy dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class Dataset:
    """A train/test split. x_*: float32 (N, D) in [0, 1]; y_*: int64 (N,); image_shape: (H, W)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    image_shape: tuple[int, int] | None


def parse_idx(raw: bytes, source: str) -> np.ndarray:
    """Decode the bytes of an (uncompressed) IDX file; `source` names it in errors."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise GMVAEError(f"{source} is not an IDX file (bad magic number)")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise GMVAEError(f"{source} is not a valid IDX file (truncated header)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise GMVAEError(
            f"{source} is truncated or corrupt: {len(raw)} bytes, expected {expected} "
            f"for shape {shape}"
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # native byte order, and a writable copy


def read_bytes(path: Path) -> bytes:
    """Read a file, transparently gunzipping it when it starts with the gzip magic."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise GMVAEError(f"cannot read {path}: {err}") from None
    return raw


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file, plain or gzip-compressed."""
    return parse_idx(read_bytes(path), str(path))


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


def download_mnist(folder: Path, mirrors: tuple[str, ...] = MNIST_MIRRORS) -> None:
    """Fetch any missing MNIST file into `folder`, verified before it is given its final name."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, sha256 in MNIST_FILES.values():
        if _find_file(folder, name):
            continue
        target = folder / f"{name}.gz"
        errors = []
        for mirror in mirrors:
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


def find_mnist(data_dir: Path | None) -> Path:
    """The folder holding the four MNIST files: `data_dir` if given, else the vendored copy,
    else the user cache (downloading into it when the files are missing)."""
    names = [name for name, _ in MNIST_FILES.values()]
    if data_dir is not None:
        missing = [n for n in names if _find_file(data_dir, n) is None]
        if missing:
            raise GMVAEError(f"MNIST file {missing[0]}[.gz] not found in {data_dir}")
        return data_dir
    for folder in (VENDORED_MNIST, default_cache_dir() / "mnist"):
        if all(_find_file(folder, n) for n in names):
            return folder
    cache = default_cache_dir() / "mnist"
    download_mnist(cache)
    return cache


def load_mnist(data_dir: Path | None = None) -> Dataset:
    """MNIST, checksums verified: 60,000 training and 10,000 test images of 28x28."""
    folder = find_mnist(data_dir)
    arrays = {
        key: _read_verified(_find_file(folder, name), sha256)
        for key, (name, sha256) in MNIST_FILES.items()
    }
    return Dataset(
        name="mnist",
        x_train=images_to_unit(arrays["train_images"]),
        y_train=arrays["train_labels"].astype(np.int64),
        x_test=images_to_unit(arrays["test_images"]),
        y_test=arrays["test_labels"].astype(np.int64),
        image_shape=(28, 28),
    )


DATASETS = {"mnist": load_mnist}


def load_dataset(name: str, data_dir: Path | None = None) -> Dataset:
    if name not in DATASETS:
        raise GMVAEError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name](data_dir)


def images_to_unit(images: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 -> (N, H*W) float32 in [0, 1]."""
    return (images.reshape(len(images), -1).astype(np.float32) / 255.0).astype(np.float32)


def load_array(path: Path, x_dim: int) -> np.ndarray:
    """Read inputs for `predict`: .npy or IDX (plain or .gz). Returns float32 (N, x_dim).

    uint8 data is taken as 0-255 pixels and scaled to [0, 1]; floats are used as they are.
    """
    if not path.is_file():
        raise GMVAEError(f"input file {path} does not exist")
    if path.suffix == ".npy":
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as err:  # numpy's header parser raises several kinds on damage
            raise GMVAEError(f"cannot read {path} as .npy: {err}") from None
        if not isinstance(array, np.ndarray):
            raise GMVAEError(f"{path} is not a .npy array file")
    else:
        array = read_idx(path)
    if array.ndim < 2 or array.shape[0] == 0:
        raise GMVAEError(f"{path} holds an array of shape {array.shape}; expected (N, ...) rows")
    if not np.issubdtype(array.dtype, np.number):
        raise GMVAEError(f"{path} holds {array.dtype} values, expected numbers")
    flat = array.reshape(len(array), -1)
    if flat.shape[1] != x_dim:
        raise GMVAEError(
            f"{path} has {flat.shape[1]} features per row (shape {array.shape}); "
            f"the model expects {x_dim}"
        )
    if array.dtype == np.uint8:
        return images_to_unit(np.asarray(flat))
    flat = np.asarray(flat, dtype=np.float32)
    if not np.isfinite(flat).all():
        raise GMVAEError(f"{path} contains NaN or infinite values")
    return flat
