"""Files written whole or not at all, and JSON read with one-line errors: the bottom layer that
every writer of a run folder or model folder uses."""

from __future__ import annotations

import json
import os
from pathlib import Path

from gmvae.errors import GMVAEError


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it: readers see the old
    file or the whole new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
