"""Damaged files never crash, hang or run code: every loader answers with a GMVAEError (or, for
damage that leaves a valid file, a result)."""

import contextlib
import dataclasses
import gzip
import io
import json
import pickle

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gmvae.data.datasets import read_inputs
from gmvae.data.files import parse_idx, read_data, read_idx
from gmvae.data.preprocessing import prepare
from gmvae.errors import GMVAEError
from gmvae.model.checkpoint import (
    load_model,
    load_scaling,
    load_training_state,
    save_model,
    save_training_state,
)
from gmvae.model.network import GMVAENet, ModelConfig

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
VALID_IDX = bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2]) + bytes(range(8))


def damage(data: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    """Truncate to `cut` bytes (when shorter) and xor a few bytes."""
    out = bytearray(data[: max(0, cut)])
    for position, mask in flips:
        if out:
            out[position % len(out)] ^= mask or 1
    return bytes(out)


DAMAGE = {
    "cut": st.integers(0, 10_000),
    "flips": st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
}


@FUZZ
@given(**DAMAGE)
def test_damaged_idx_bytes_give_an_array_or_a_clear_error(cut, flips):
    with contextlib.suppress(GMVAEError):
        parse_idx(damage(VALID_IDX, cut, flips), "f")


@FUZZ
@given(**DAMAGE)
def test_damaged_gzipped_idx_files_give_an_array_or_a_clear_error(tmp_path, cut, flips):
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(damage(gzip.compress(VALID_IDX), cut, flips))
    with contextlib.suppress(GMVAEError):
        read_idx(path)


@FUZZ
@given(**DAMAGE)
def test_damaged_npy_files_give_an_array_or_a_clear_error(tmp_path, cut, flips):
    buffer = io.BytesIO()
    np.save(buffer, np.arange(2 * 784, dtype=np.float32).reshape(2, 784) / 2000)
    path = tmp_path / "x.npy"
    path.write_bytes(damage(buffer.getvalue(), cut, flips))
    with contextlib.suppress(GMVAEError):
        assert read_inputs(path, 784, True, None).shape[1] == 784


@FUZZ
@given(**DAMAGE)
def test_damaged_csv_files_give_a_table_or_a_clear_error(tmp_path, cut, flips):
    path = tmp_path / "t.csv"
    path.write_bytes(damage(b"a,b,label\n1.5,2,x\n3,4e2,y\n-1,0,x\n", cut, flips))
    with contextlib.suppress(GMVAEError):
        assert read_data(path, label_column="label").values.shape[1] == 2


@FUZZ
@given(**DAMAGE)
def test_damaged_image_files_give_an_image_or_a_clear_error(tmp_path, cut, flips):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir(exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(buffer, format="PNG")
    (folder / "a.png").write_bytes(damage(buffer.getvalue(), cut, flips))
    with contextlib.suppress(GMVAEError):
        assert read_data(folder).values.shape[0] == 1


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    save_model(
        GMVAENet(
            ModelConfig(x_dim=16, image_shape=(4, 4), hidden_dim=8, z_dim=2, likelihood="bernoulli")
        ),
        folder,
    )
    return folder


def copy_with_config(model_folder, folder, meta: dict):
    """`model_folder`'s weights in `folder`, beside the config.json `meta`."""
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(meta))
    (folder / "weights.safetensors").write_bytes(
        (model_folder / "weights.safetensors").read_bytes()
    )
    return folder


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=5,
)


@FUZZ
@given(
    field=st.sampled_from([f.name for f in dataclasses.fields(ModelConfig)] + ["unknown"]),
    value=JSON_VALUES | st.sampled_from([10**12, 10**18, 2**63, -1, 0]),
)
def test_tampered_model_config_is_refused_or_still_fits_the_weights(
    model_folder, tmp_path, field, value
):
    meta = json.loads((model_folder / "config.json").read_text())
    meta["model"][field] = value
    folder = copy_with_config(model_folder, tmp_path / "m", meta)
    try:
        model = load_model(folder)
    except GMVAEError:
        return
    assert model.config.x_dim == 16  # only harmless edits load


@FUZZ
@given(**DAMAGE)
def test_damaged_weights_are_refused_or_load_finite(model_folder, tmp_path, cut, flips):
    folder = tmp_path / "m"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text((model_folder / "config.json").read_text())
    raw = (model_folder / "weights.safetensors").read_bytes()
    (folder / "weights.safetensors").write_bytes(damage(raw, cut * 100, flips))
    try:
        model = load_model(folder)
    except GMVAEError:
        return
    assert all(torch.isfinite(p).all() for p in model.parameters())


@FUZZ
@given(**DAMAGE)
def test_damaged_training_checkpoints_are_a_clear_error(tmp_path, cut, flips):
    path = tmp_path / "ckpt.pt"
    state = {"model": {"w": torch.ones(3)}, "optimizer": {}, "history": [], "rng": {}}
    save_training_state(state, path)
    path.write_bytes(damage(path.read_bytes(), cut, flips))
    with contextlib.suppress(GMVAEError):
        load_training_state(path)


class RunsCode:
    def __reduce__(self):
        return (open, ("/tmp/gmvae-fuzz-code-ran", "w"))


def test_a_checkpoint_carrying_code_is_refused_without_running_it(tmp_path):
    marker = __import__("pathlib").Path("/tmp/gmvae-fuzz-code-ran")
    marker.unlink(missing_ok=True)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": RunsCode(), "optimizer": {}, "history": [], "rng": {}}, path)
    marker.unlink(missing_ok=True)  # torch.save itself does not call it, but be sure
    with pytest.raises(GMVAEError, match="unreadable or corrupt"):
        load_training_state(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps(RunsCode(), protocol=2))
    with pytest.raises(GMVAEError):
        load_training_state(path)
    assert not marker.exists()


@FUZZ
@given(
    field=st.sampled_from(["format", "format_version", "gmvae_version", "scaling", "model"]),
    value=JSON_VALUES,
)
def test_tampered_model_folder_metadata_is_refused_or_harmless(
    model_folder, tmp_path, field, value
):
    meta = json.loads((model_folder / "config.json").read_text())
    meta[field] = value
    folder = copy_with_config(model_folder, tmp_path / "m", meta)
    try:
        model = load_model(folder)
        scaling = load_scaling(folder, model.config.x_dim)
    except GMVAEError:
        return
    assert model.config.x_dim == 16
    assert scaling is None or len(scaling.offset) in (1, 16)


def test_an_absurd_model_size_is_refused_before_anything_is_allocated(model_folder, tmp_path):
    meta = json.loads((model_folder / "config.json").read_text())
    meta["model"]["hidden_dim"] = 10**12
    with pytest.raises(GMVAEError, match="config"):
        load_model(copy_with_config(model_folder, tmp_path / "m", meta))


@FUZZ
@given(
    offset=st.sampled_from([0.0, 1e6, 1e12, -1e15]),
    magnitude=st.floats(1e-300, 1e308),
    row=st.integers(0, 9),
)
def test_tables_of_any_magnitude_are_standardised_finitely_or_refused(offset, magnitude, row):
    values = offset + np.arange(30.0).reshape(10, 3)
    values[row, 1] = magnitude
    try:
        x = prepare(values, is_image=False)[0]
    except GMVAEError as err:
        assert "overflow" in str(err) and magnitude > 1e150
        return
    assert np.isfinite(x).all()


@FUZZ
@given(pixels=st.lists(st.integers(0, 65535), min_size=16, max_size=16))
def test_sixteen_bit_images_of_any_values_come_in_divided_by_65535(tmp_path, pixels):
    from PIL import Image

    from gmvae.data.datasets import open_dataset

    folder = tmp_path / "deep"
    folder.mkdir(exist_ok=True)
    image = np.array(pixels, dtype=np.uint16).reshape(4, 4)
    Image.fromarray(image).save(folder / "a.png")
    x = open_dataset(str(folder), None, None, (10, 2, 2), 0).x_train
    np.testing.assert_allclose(x.reshape(4, 4), image / 65535, atol=1e-6)
