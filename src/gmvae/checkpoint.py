"""Files on disk: atomic writes and the saved model (safetensors weights + JSON config).

Loading never runs code from the files: weights are plain tensors, the config plain JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from gmvae import __version__
from gmvae.errors import GMVAEError
from gmvae.model import GMVAENet, ModelConfig

MODEL_FORMAT = "gmvae-model"
MODEL_FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"


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


def save_model(model: GMVAENet, folder: Path) -> None:
    """Write `folder`/weights.safetensors and `folder`/config.json."""
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(folder / WEIGHTS_FILE, save(weights))
    write_json(
        folder / CONFIG_FILE,
        {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "gmvae_version": __version__,
            "model": model.config.to_dict(),
        },
    )


def load_model(folder: Path, device: torch.device | str = "cpu") -> GMVAENet:
    """Rebuild the network from `folder`/config.json and load its safetensors weights."""
    meta = read_json(folder / CONFIG_FILE)
    if meta.get("format") != MODEL_FORMAT or meta.get("format_version") != MODEL_FORMAT_VERSION:
        raise GMVAEError(
            f"{folder} holds a model of format {meta.get('format')!r} version "
            f"{meta.get('format_version')!r}; this gmvae {__version__} reads "
            f"{MODEL_FORMAT!r} version {MODEL_FORMAT_VERSION}"
        )
    try:
        model = GMVAENet(ModelConfig.from_dict(meta["model"]))
    except (KeyError, TypeError, ValueError) as err:
        raise GMVAEError(f"{folder / CONFIG_FILE} has an invalid model config: {err}") from None
    try:
        weights = load_file(str(folder / WEIGHTS_FILE))
    except (OSError, SafetensorError) as err:
        raise GMVAEError(f"cannot read {folder / WEIGHTS_FILE}: {err}") from None
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1].strip()
        raise GMVAEError(f"{folder / WEIGHTS_FILE} does not fit its config: {first}") from None
    return model.to(device).eval()
