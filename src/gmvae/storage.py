"""Files written whole or not at all, and JSON read with one-line errors: the bottom layer that
every writer of a run folder or model folder uses."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from gmvae.errors import GMVAEError


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it: readers see the old
    file or the whole new one, never half of it. A path that cannot be written is a GMVAEError
    naming it."""
    if path.is_dir():
        raise GMVAEError(f"{path} is a folder; give a file name")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise GMVAEError(f"cannot write {path}: {err.strerror or err}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_writable(path: Path) -> None:
    """Refuse, before any work is done for it, a path that cannot become a file: a folder, or
    one whose nearest existing folder cannot be written."""
    if path.is_dir():
        raise GMVAEError(f"{path} is a folder; give a file name")
    parent = next(p for p in path.absolute().parents if p.exists())
    try:  # a real probe: permission bits say little to root or on a read-only file system
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError:
        raise GMVAEError(f"cannot write {path}: {parent} is not a writable folder") from None


def write_json(path: Path, obj: dict) -> None:
    atomic_write(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise GMVAEError(f"{path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GMVAEError(f"{path} is not readable JSON: {err}") from None
    if not isinstance(obj, dict):
        raise GMVAEError(f"{path} does not hold a JSON object")
    return obj


def replace_folder(new: Path, folder: Path) -> None:
    """Put the folder `new` where `folder` is, by renames: a reader of `folder` finds the old
    folder or the whole new one, never part of either (for an instant between the two renames
    of a replacement, neither)."""
    if not folder.exists() or not any(folder.iterdir()):
        os.replace(new, folder)  # over an empty folder, or none
        return
    old = folder.with_name(f".{folder.name}.{os.getpid()}.old")
    os.replace(folder, old)
    os.replace(new, folder)
    shutil.rmtree(old, ignore_errors=True)
