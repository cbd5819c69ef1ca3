"""From a user's raw values to the model's inputs and back: validation, image scaling to [0, 1],
standardisation of tables. The Scaling is saved with the model so `predict` maps new data the
same way."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gmvae.errors import GMVAEError


@dataclass
class Scaling:
    """x = (raw - offset) / scale, per feature (arrays of shape (D,)) or for all (shape (1,))."""

    offset: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, raw: np.ndarray) -> Scaling:
        """Standardise each column; a constant column keeps scale 1 (it maps to 0)."""
        stats = column_stats(raw, "data")
        return cls(stats["mean"], np.where(stats["std"] > 0, stats["std"], 1.0))

    @classmethod
    def pixels(cls, maximum: float) -> Scaling:
        """Images stored as 0..maximum mapped to [0, 1]."""
        return cls(np.zeros(1), np.full(1, float(maximum)))

    def apply(self, raw: np.ndarray) -> np.ndarray:
        return ((np.asarray(raw, dtype=np.float64) - self.offset) / self.scale).astype(np.float32)

    def invert(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) * self.scale + self.offset).astype(np.float32)

    def to_dict(self) -> dict:
        return {"offset": self.offset.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, values: dict) -> Scaling:
        try:
            offset = np.asarray(values["offset"], dtype=np.float64).reshape(-1)
            scale = np.asarray(values["scale"], dtype=np.float64).reshape(-1)
        except (KeyError, TypeError, ValueError) as err:
            raise GMVAEError(f"invalid saved scaling: {err}") from None
        if offset.shape != scale.shape or not (np.isfinite(scale).all() and (scale > 0).all()):
            raise GMVAEError("invalid saved scaling: offset and positive scale must match")
        return cls(offset, scale)


def value_range(x: np.ndarray | ScaledRows) -> tuple[float, float]:
    """Smallest and largest value of model inputs, read in chunks."""
    low, high = np.inf, -np.inf
    for start in range(0, len(x), CHUNK_ROWS):
        chunk = x[start : start + CHUNK_ROWS]
        low, high = min(low, float(chunk.min())), max(high, float(chunk.max()))
    return low, high


def image_shape_of(array: np.ndarray) -> tuple[int, ...] | None:
    """(H, W) for (N, H, W) or (N, 1, H, W); (C, H, W) for (N, C, H, W); None for tables."""
    if array.ndim == 3:
        return tuple(array.shape[1:])
    if array.ndim == 4:
        return tuple(array.shape[2:]) if array.shape[1] == 1 else tuple(array.shape[1:])
    if array.ndim == 2:
        return None
    raise GMVAEError(f"expected (N, D), (N, H, W) or (N, C, H, W) data; got shape {array.shape}")


def image_scaling_from(low: float, high: float) -> Scaling | None:
    """How image pixels between `low` and `high` map to [0, 1]: as they are, or /255."""
    if low >= 0 and high <= 1:
        return None
    if low >= 0 and high <= 255:
        return Scaling.pixels(255)
    raise GMVAEError(f"image values must lie in [0, 1] or [0, 255]; found {low:g} to {high:g}")


CHUNK_ROWS = 65536


class ScaledRows:
    """Rows of a (possibly memory-mapped, larger than memory) array, flattened to (n, D) and
    scaled on access: only the rows asked for are ever read. Indexable like an array."""

    def __init__(self, values: np.ndarray, scaling: Scaling | None):
        self.values, self.scaling = values, scaling
        self.shape = (len(values), int(np.prod(values.shape[1:])))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: slice | np.ndarray) -> np.ndarray:
        rows = np.asarray(self.values[index]).reshape(-1, self.shape[1])
        return rows.astype(np.float32) if self.scaling is None else self.scaling.apply(rows)


# Values whose squares overflow float64 (about 1.3e154) cannot be standardised; anything near
# that is refused with a line that says so instead of turning into inf and NaN downstream.
MAX_MAGNITUDE = 1e150


def column_stats(values: np.ndarray, what: str) -> dict[str, np.ndarray]:
    """Per-feature min, max, mean and std of (N, ...) values, read in chunks; fails on NaN/inf
    and on magnitudes past MAX_MAGNITUDE. The spread is combined from each chunk's own mean and
    sum of squared deviations (Chan et al.'s pairwise update), so a column of 1e12 + N(0, 1)
    keeps its standard deviation of 1 (E[x^2] - mean^2 loses every digit of it)."""
    n = len(values)
    d = int(np.prod(values.shape[1:]))
    low, high = np.full(d, np.inf), np.full(d, -np.inf)
    mean, deviations, seen = np.zeros(d), np.zeros(d), 0
    for start in range(0, n, CHUNK_ROWS):
        chunk = np.asarray(values[start : start + CHUNK_ROWS], dtype=np.float64).reshape(-1, d)
        if not np.isfinite(chunk).all():
            row = start + int(np.argwhere(~np.isfinite(chunk))[0][0])
            raise GMVAEError(f"{what} contains NaN or infinite values (first in row {row})")
        if (np.abs(chunk) > MAX_MAGNITUDE).any():
            row = start + int(np.argwhere(np.abs(chunk) > MAX_MAGNITUDE)[0][0])
            raise GMVAEError(
                f"{what} holds values beyond {MAX_MAGNITUDE:g} in magnitude (first in row {row}), "
                "whose squares overflow: rescale them first"
            )
        low, high = np.minimum(low, chunk.min(0)), np.maximum(high, chunk.max(0))
        chunk_mean = chunk.mean(0)
        chunk_deviations = ((chunk - chunk_mean) ** 2).sum(0)
        total = seen + len(chunk)
        delta = chunk_mean - mean
        mean = mean + delta * (len(chunk) / total)
        deviations = deviations + chunk_deviations + delta**2 * (seen * len(chunk) / total)
        seen = total
    return {"min": low, "max": high, "mean": mean, "std": np.sqrt(deviations / n)}


def prepare(
    values: np.ndarray, is_image: bool, scaling: Scaling | None | str = "fit", what: str = "data"
) -> tuple[np.ndarray | ScaledRows, tuple[int, ...] | None, Scaling | None]:
    """Validate raw values and map them to model inputs (N, D).

    scaling="fit": images go to [0, 1] (none needed, or /255), tables are standardised.
    Otherwise the given Scaling (or None) is applied, as at predict time. Memory-mapped input
    stays on disk behind a ScaledRows view. Returns (x, image_shape, scaling)."""
    numeric = np.issubdtype(values.dtype, np.number) or values.dtype == bool
    if not numeric:
        raise GMVAEError(f"{what} must hold numbers; found values of type {values.dtype}")
    if np.issubdtype(values.dtype, np.complexfloating):
        raise GMVAEError(f"{what} holds complex numbers; give real values (e.g. split the parts)")
    if values.ndim < 2 or len(values) == 0 or values[0].size == 0:
        raise GMVAEError(f"{what} is empty or not (N, ...) rows: shape {values.shape}")
    image_shape = image_shape_of(values) if is_image else None
    stats = column_stats(values, what)
    if isinstance(scaling, str):
        if is_image:
            scaling = image_scaling_from(float(stats["min"].min()), float(stats["max"].max()))
        else:
            scaling = Scaling(stats["mean"], np.where(stats["std"] > 0, stats["std"], 1.0))
    elif scaling is not None:  # predict: the saved scaling must map every value finitely
        if len(scaling.offset) not in (1, stats["min"].size):
            raise GMVAEError(
                f"the saved scaling has {len(scaling.offset)} features; {what} has "
                f"{stats['min'].size}"
            )
        with np.errstate(over="ignore"):  # past float32's range: inf, refused just below
            extremes = [scaling.apply(stats[k][None]) for k in ("min", "max")]
        if not all(np.isfinite(e).all() for e in extremes):
            raise GMVAEError(f"{what} holds values too large for the model once scaled")
    if isinstance(values, np.memmap):
        return ScaledRows(values, scaling), image_shape, scaling
    return ScaledRows(values, scaling)[:], image_shape, scaling
