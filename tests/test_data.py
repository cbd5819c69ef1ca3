import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from gmvae.data.datasets import (
    MNIST,
    VENDORED_MNIST,
    download_idx,
    find_idx,
    load_mnist,
    read_inputs,
)
from gmvae.data.files import parse_idx, read_idx
from gmvae.errors import GMVAEError


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX, by the format's definition."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_idx_round_trips_plain_and_gzipped(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a-idx3-ubyte").write_bytes(idx_bytes(array))
    (tmp_path / "a-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(array)))
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        np.testing.assert_array_equal(read_idx(tmp_path / name), array)


def test_idx_with_truncated_body_or_bad_magic_is_a_clear_error():
    raw = idx_bytes(np.zeros((2, 2, 2), dtype=np.uint8))
    with pytest.raises(GMVAEError, match="truncated or corrupt"):
        parse_idx(raw[:-1], "f")
    with pytest.raises(GMVAEError, match="bad magic"):
        parse_idx(b"\x1f\x8b" + raw[2:], "f")
    with pytest.raises(GMVAEError, match="truncated header"):
        parse_idx(raw[:6], "f")


def test_vendored_mnist_loads_verified_with_the_standard_shapes():
    data = load_mnist()
    assert data.x_train.shape == (60000, 784) and data.x_test.shape == (10000, 784)
    assert data.x_train.dtype == np.float32
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0
    assert sorted(np.unique(data.y_test)) == list(range(10))
    assert data.image_shape == (28, 28)


def copy_mnist(folder: Path) -> Path:
    folder.mkdir()
    for name, _ in MNIST.files.values():
        shutil.copy(VENDORED_MNIST / f"{name}.gz", folder)
    return folder


def test_user_folder_with_a_corrupt_file_names_that_file(tmp_path):
    folder = copy_mnist(tmp_path / "mnist")
    target = folder / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(target.read_bytes()))
    raw[100] ^= 1  # one flipped bit: the size is right, the checksum is not
    target.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(GMVAEError, match=r"t10k-labels-idx1-ubyte.gz is corrupt: sha256"):
        load_mnist(folder)


def test_user_folder_missing_a_file_names_what_was_expected_where(tmp_path):
    folder = copy_mnist(tmp_path / "mnist")
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    expected = f"mnist file train-labels-idx1-ubyte.*not found in {folder}"
    with pytest.raises(GMVAEError, match=expected):
        find_idx(MNIST, folder)


def test_download_verifies_files_and_leaves_nothing_behind_on_failure(tmp_path):
    mirror = copy_mnist(tmp_path / "mirror")
    cache = tmp_path / "cache"
    download_idx(MNIST, cache, mirrors=(mirror.as_uri() + "/",))
    assert sorted(p.name for p in cache.iterdir()) == sorted(p.name for p in mirror.iterdir())
    assert find_idx(MNIST, cache) == cache

    # A mirror serving a corrupt file: the download fails and no file is left in the cache.
    (mirror / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x08\x01" + bytes(8)))
    empty = tmp_path / "empty"
    with pytest.raises(GMVAEError, match="could not download t10k-images-idx3-ubyte.gz"):
        download_idx(MNIST, empty, mirrors=(mirror.as_uri() + "/",))
    assert not any(p.name.startswith("t10k-images") for p in empty.iterdir())


def test_predict_input_npy_of_uint8_images_is_flattened_and_scaled(tmp_path):
    images = np.full((3, 28, 28), 255, dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    x = read_inputs(tmp_path / "x.npy", 784, images=True, scaling=None)[:]  # memory-mapped
    assert x.shape == (3, 784) and x.dtype == np.float32 and x.max() == 1.0


def test_predict_input_idx_file_is_read(tmp_path):
    (tmp_path / "x-idx3-ubyte").write_bytes(idx_bytes(np.zeros((4, 28, 28), dtype=np.uint8)))
    assert read_inputs(tmp_path / "x-idx3-ubyte", 784, True, None).shape == (4, 784)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((3, 10), dtype=np.float32), "10 features per row.*expects 784"),
        (np.full((2, 784), np.nan, dtype=np.float32), "NaN or infinite"),
        (np.zeros((0, 784), dtype=np.float32), "is empty"),
        (np.full((2, 784), "a"), "must hold numbers"),
    ],
)
def test_bad_predict_input_is_a_clear_error(tmp_path, array, message):
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(GMVAEError, match=message):
        read_inputs(tmp_path / "x.npy", 784, True, None)


def test_missing_or_unreadable_predict_input_is_a_clear_error(tmp_path):
    with pytest.raises(GMVAEError, match="does not exist"):
        read_inputs(tmp_path / "nothing.npy", 784, True, None)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(GMVAEError, match="is not an .npy file"):
        read_inputs(tmp_path / "junk.npy", 784, True, None)
