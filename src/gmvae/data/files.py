"""Users' own data files: .npy (memory-mapped), .npz, .csv/.tsv, .parquet, IDX and folders of
images. Each reader returns the raw values and, when the file has them, labels (for evaluation
only). Any damage is a GMVAEError naming the file."""

from __future__ import annotations

import csv
import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gmvae.errors import GMVAEError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff"}
TABLE_SUFFIXES = {".csv", ".tsv", ".parquet"}
FILE_SUFFIXES = {".npy", ".npz", ".gz", *TABLE_SUFFIXES}


@dataclass
class RawData:
    """values: (N, D) table or (N, H, W) / (N, C, H, W) images, numeric, maybe memory-mapped.
    labels: int64 (N,) or None; label_names: the original label of each index."""

    values: np.ndarray
    labels: np.ndarray | None = None
    label_names: list[str] | None = None
    is_image: bool = False


def read_data(
    path: Path,
    label_column: str | None = None,
    need_label: bool = True,
    empty_labels: bool = False,
) -> RawData:
    """Read any supported file or image folder. With need_label=False a table without the
    label column is read whole (new data at predict time). With empty_labels, empty cells of
    the label column, and -1 in an .npz's label array, are unlabelled rows (label -1,
    semi-supervised) instead of an error or a class."""
    if path.is_dir():
        return read_image_folder(path)
    if not path.is_file():
        raise GMVAEError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    if label_column is not None and suffix not in TABLE_SUFFIXES:
        raise GMVAEError(f"--label-column applies to .csv/.tsv/.parquet tables, not {path.name}")
    if suffix == ".npy":
        return _from_array(_load_npy(path))
    if suffix == ".npz":
        return read_npz(path, empty_labels)
    if suffix in (".csv", ".tsv"):
        delimiter = "\t" if suffix == ".tsv" else ","
        return read_delimited(path, label_column, delimiter, need_label, empty_labels)
    if suffix == ".parquet":
        return read_parquet(path, label_column, need_label, empty_labels)
    return _from_array(read_idx(path))  # IDX, plain or gzipped, whatever the name


def _from_array(array: np.ndarray) -> RawData:
    return RawData(array, is_image=array.ndim >= 3)


NPY_MAGIC = b"\x93NUMPY"


def _load_npy(path: Path) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            magic = f.read(len(NPY_MAGIC))
    except OSError as err:
        raise GMVAEError(f"cannot read {path}: {err.strerror or err}") from None
    if magic != NPY_MAGIC:  # numpy would try it as a pickle, and suggest allowing that
        raise GMVAEError(f"{path} is not an .npy file (it does not start with NumPy's header)")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as err:  # numpy's header parser raises several kinds on damage
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "pickle" in first or "Python objects" in first:  # an object array: never loaded
            first = "it holds Python objects, which are never loaded"
        raise GMVAEError(f"cannot read {path} as .npy: {first}") from None
    if not isinstance(array, np.ndarray):
        raise GMVAEError(f"{path} is not a .npy array file")
    return array


def read_npz(path: Path, empty_labels: bool = False) -> RawData:
    """The array named x/X/data (else the first), labels from y/labels/targets when present.
    With empty_labels, a numeric label -1 (scikit-learn's "unlabelled") or NaN is unlabelled."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as err:
        raise GMVAEError(f"cannot read {path} as .npz: {err}") from None
    if not arrays:
        raise GMVAEError(f"{path} holds no arrays")
    x_name = next((n for n in ("x", "X", "data") if n in arrays), next(iter(arrays)))
    y_name = next((n for n in ("y", "labels", "targets") if n in arrays and n != x_name), None)
    raw = _from_array(arrays[x_name])
    if y_name is not None:
        y = arrays[y_name].reshape(-1)
        text = y.astype(str)
        if empty_labels and y.dtype.kind in "iuf":
            text[y == -1] = ""
        raw.labels, raw.label_names = encode_labels(text, path, empty_labels)
        if len(raw.labels) != len(raw.values):
            raise GMVAEError(f"{path}: {len(raw.labels)} labels for {len(raw.values)} rows")
    return raw


def encode_labels(
    values: np.ndarray, source: Path, empty_labels: bool = False
) -> tuple[np.ndarray, list[str]]:
    """Labels of any kind -> int64 indices into their sorted distinct values; with
    empty_labels, empty cells become -1 (unlabelled), otherwise they are an error."""
    empty = np.isin(values, ["", "nan", "None"])
    if empty.any() and not empty_labels:
        raise GMVAEError(f"{source}: the label column has empty cells")
    names, indices = np.unique(values[~empty], return_inverse=True)
    encoded = np.full(len(values), -1, dtype=np.int64)
    encoded[~empty] = indices
    return encoded, [str(n) for n in names]


def _table(
    columns: list[str],
    cells: list[list[str]],
    label_column: str | None,
    path: Path,
    need_label: bool,
    empty_labels: bool,
) -> RawData:
    if label_column is not None and label_column not in columns and not need_label:
        label_column = None
    if label_column is not None and label_column not in columns:
        raise GMVAEError(f"{path} has no column {label_column!r} (columns: {', '.join(columns)})")
    raw = RawData(np.empty(0))
    keep = [i for i, name in enumerate(columns) if name != label_column]
    if not keep:
        raise GMVAEError(f"{path} has no feature columns")
    values = np.empty((len(cells), len(keep)), dtype=np.float64)
    for r, row in enumerate(cells):
        if len(row) != len(columns):
            raise GMVAEError(f"{path}, row {r + 1}: {len(row)} cells, expected {len(columns)}")
        for j, i in enumerate(keep):
            try:
                values[r, j] = float(row[i])
            except ValueError:
                raise GMVAEError(
                    f"{path}, row {r + 1}, column {columns[i]!r}: {row[i]!r} is not a number"
                ) from None
    raw.values = values
    if label_column is not None:
        labels = np.array([row[columns.index(label_column)] for row in cells])
        raw.labels, raw.label_names = encode_labels(labels, path, empty_labels)
    return raw


def read_delimited(
    path: Path,
    label_column: str | None,
    delimiter: str,
    need_label: bool = True,
    empty_labels: bool = False,
) -> RawData:
    """A CSV/TSV table with a header row; every column but the label column numeric."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [row for row in csv.reader(f, delimiter=delimiter) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise GMVAEError(f"cannot read {path}: {err}") from None
    if len(rows) < 2:
        raise GMVAEError(f"{path} has no data rows (a header row and at least one row needed)")
    columns = [name.strip() for name in rows[0]]
    cells = [[c.strip() for c in row] for row in rows[1:]]
    return _table(columns, cells, label_column, path, need_label, empty_labels)


def read_parquet(
    path: Path, label_column: str | None, need_label: bool = True, empty_labels: bool = False
) -> RawData:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise GMVAEError("reading .parquet needs pyarrow: pip install 'gmvae[parquet]'") from None
    try:
        table = pq.read_table(path)
    except Exception as err:
        raise GMVAEError(f"cannot read {path} as parquet: {err}") from None
    columns = table.column_names
    data = {name: table.column(name).to_pylist() for name in columns}
    cells = [[str(data[name][r]) for name in columns] for r in range(table.num_rows)]
    return _table(columns, cells, label_column, path, need_label, empty_labels)


def read_image_folder(folder: Path) -> RawData:
    """Images in `folder` (one subfolder per class: labels for evaluation) of one size."""
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise GMVAEError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    images = []
    modes = set()
    for path in files:
        try:
            with Image.open(path) as image:
                image.load()
                modes.add("L" if image.mode in GREY_MODES else "RGB")
                images.append((path, image.copy()))
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise GMVAEError(f"cannot read image {path}: {err}") from None
    mode = "L" if modes == {"L"} else "RGB"
    deep = any(image.mode in SIXTEEN_BIT_MODES for _, image in images)
    size = images[0][1].size
    arrays = []
    for path, image in images:
        if image.size != size:
            raise GMVAEError(
                f"images differ in size: {files[0]} is {size[0]}x{size[1]}, "
                f"{path} is {image.size[0]}x{image.size[1]}"
            )
        if deep:
            array = _unit_pixels(path, image, mode)
        else:
            array = np.asarray(image.convert(mode), dtype=np.uint8)
        arrays.append(array if mode == "L" else array.transpose(2, 0, 1))
    raw = RawData(np.stack(arrays), is_image=True)
    classes = [p.parent.relative_to(folder) for p in files]
    if all(str(c) != "." for c in classes):
        raw.labels, raw.label_names = encode_labels(np.array([str(c) for c in classes]), folder)
    return raw


GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
# 16-bit greyscale PNGs open in one of these; their values run to 65535, not 255.
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def _unit_pixels(path: Path, image, mode: str) -> np.ndarray:
    """An image's pixels in [0, 1] as float32, (H, W) or (H, W, 3), for a folder that holds
    16-bit images: those are divided by 65535, 8-bit ones by 255."""
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        if values.min() < 0 or values.max() > 65535:
            raise GMVAEError(f"{path}: pixel values outside 0-65535 (mode {image.mode})")
        values = values / 65535
        return values if mode == "L" else np.repeat(values[..., None], 3, axis=-1)
    return np.asarray(image.convert(mode), dtype=np.float64) / 255


# IDX type codes (http://yann.lecun.com/exdb/mnist/) -> big-endian numpy dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


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
