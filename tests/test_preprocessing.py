"""Raw values to model inputs: statistics that stay exact at any offset, and values that cannot
be standardised refused with one line."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gmvae.data import preprocessing
from gmvae.data.preprocessing import Scaling, column_stats, prepare
from gmvae.errors import GMVAEError


def spread_tolerance(offset: float, spread: float) -> float:
    """The relative error a standard deviation of `spread` about `offset` can carry in float64:
    the values themselves are only known to a few units of the offset's last place."""
    return 1e-7 + 100 * float(np.spacing(abs(offset) + 1.0)) / spread


@pytest.mark.parametrize("offset", [0.0, 1e3, 1e6, 1e8, 1e9, 1e10, 1e12])
def test_the_spread_of_a_column_far_from_zero_is_numpys_even_across_chunks(offset, monkeypatch):
    monkeypatch.setattr(preprocessing, "CHUNK_ROWS", 97)  # many chunks, a short last one
    rng = np.random.default_rng(0)
    values = offset + rng.normal(0, 1, (1000, 2)) * [1.0, 50.0]
    stats = column_stats(values, "x")
    np.testing.assert_allclose(stats["std"], values.std(0), rtol=spread_tolerance(offset, 1.0))
    np.testing.assert_allclose(stats["mean"], values.mean(0), rtol=1e-12)
    x = prepare(values, is_image=False)[0]
    np.testing.assert_allclose(x.std(0), 1.0, rtol=1e-4 + spread_tolerance(offset, 1.0))


@settings(max_examples=50, deadline=None)
@given(
    offset=st.floats(-1e12, 1e12),
    spread=st.floats(1e-3, 1e6),
    n=st.integers(2, 300),
    chunk=st.integers(1, 64),
)
def test_statistics_match_numpy_for_any_offset_spread_and_chunking(offset, spread, n, chunk):
    values = offset + spread * np.random.default_rng(n).normal(size=(n, 2))
    original = preprocessing.CHUNK_ROWS
    preprocessing.CHUNK_ROWS = chunk
    try:
        stats = column_stats(values, "x")
    finally:
        preprocessing.CHUNK_ROWS = original
    np.testing.assert_allclose(stats["std"], values.std(0), rtol=spread_tolerance(offset, spread))
    np.testing.assert_allclose(stats["mean"], values.mean(0), rtol=1e-9, atol=1e-9 * spread)


def test_a_memory_mapped_table_gives_the_same_statistics(tmp_path):
    values = 1e9 + np.random.default_rng(0).normal(size=(500, 4))
    np.save(tmp_path / "t.npy", values)
    mapped = np.load(tmp_path / "t.npy", mmap_mode="r")
    np.testing.assert_allclose(column_stats(mapped, "t")["std"], values.std(0), rtol=1e-6)


@pytest.mark.parametrize("big", [1e151, -1e300, np.finfo(np.float64).max])
def test_values_whose_squares_overflow_are_refused(big):
    values = np.ones((5, 2))
    values[3, 1] = big
    with pytest.raises(GMVAEError, match="row 3.*overflow"):
        prepare(values, is_image=False)


def test_a_saved_scaling_that_would_map_a_value_past_float32_is_refused():
    scaling = Scaling(np.zeros(2), np.ones(2))
    values = np.array([[1.0, 2.0], [1e100, 0.0]])
    with pytest.raises(GMVAEError, match="too large for the model once scaled"):
        prepare(values, is_image=False, scaling=scaling)
    with pytest.raises(GMVAEError, match="scaling has 2 features"):
        prepare(np.ones((3, 5)), is_image=False, scaling=scaling)


def test_complex_values_are_refused():
    with pytest.raises(GMVAEError, match="complex"):
        prepare(np.ones((4, 2), dtype=complex), is_image=False)
