"""Files on disk: the saved model (safetensors weights + JSON config) and the
training state behind `--resume`.

Loading never runs code from the files: weights are plain tensors, configs plain JSON, and the
training state is read with torch.load(weights_only=True), which only rebuilds tensors and
plain containers.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from gmvae.data.preprocessing import Scaling
from gmvae.errors import GMVAEError
from gmvae.model.network import GMVAENet, ModelConfig
from gmvae.storage import atomic_write, read_json, write_json
from gmvae.version import __version__

MODEL_FORMAT = "gmvae-model"
MODEL_FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"


def save_model(model: GMVAENet, folder: Path, scaling: Scaling | None = None) -> None:
    """Write `folder`/weights.safetensors and `folder`/config.json (with the input scaling)."""
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(folder / WEIGHTS_FILE, save(weights))
    write_json(
        folder / CONFIG_FILE,
        {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "gmvae_version": __version__,
            "model": model.config.to_dict(),
            "scaling": None if scaling is None else scaling.to_dict(),
        },
    )


def load_scaling(folder: Path, n_features: int) -> Scaling | None:
    """The input scaling saved beside a model of `n_features` inputs (None: inputs are used as
    they are); one that does not fit that many features is refused."""
    saved = read_json(folder / CONFIG_FILE).get("scaling")
    if saved is None:
        return None
    try:
        scaling = Scaling.from_dict(saved)
    except GMVAEError as err:
        raise GMVAEError(f"{folder / CONFIG_FILE}: {err}") from None
    if len(scaling.offset) not in (1, n_features):
        raise GMVAEError(
            f"{folder / CONFIG_FILE}: the saved scaling has {len(scaling.offset)} features; "
            f"the model has {n_features}"
        )
    return scaling


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
        config = ModelConfig.from_dict(meta["model"])
        with torch.device("meta"):  # shapes only: a tampered config allocates nothing
            expected = {k: tuple(v.shape) for k, v in GMVAENet(config).state_dict().items()}
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as err:
        # RuntimeError: sizes too large to describe even on the meta device
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GMVAEError(f"{folder / CONFIG_FILE} has an invalid model config: {first}") from None
    weights_path = folder / WEIGHTS_FILE
    try:
        with safe_open(str(weights_path), framework="pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (OSError, SafetensorError) as err:
        raise GMVAEError(f"cannot read {weights_path}: {err}") from None
    if found != expected:
        wrong = sorted(set(found.items()) ^ set(expected.items()))[0][0]
        raise GMVAEError(f"{weights_path} does not fit its config (tensor {wrong!r})")
    try:
        weights = load_file(str(weights_path))
    except (OSError, SafetensorError) as err:
        raise GMVAEError(f"cannot read {weights_path}: {err}") from None
    if not all(torch.isfinite(w).all() for w in weights.values()):
        raise GMVAEError(f"{weights_path} holds NaN or infinite weights")
    model = GMVAENet(config)
    model.load_state_dict(weights)
    return model.to(device).eval()


def save_training_state(state: dict, path: Path) -> None:
    """Write a Trainer's state_dict (tensors, numbers, strings, lists, dicts) atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, buffer.getvalue())


def load_training_state(path: Path, device: torch.device | str = "cpu") -> dict:
    """Read what save_training_state wrote; any damage is a GMVAEError naming the file."""
    if not path.is_file():
        raise GMVAEError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # damage surfaces as many kinds (zip, pickle, storage errors)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GMVAEError(f"checkpoint {path} is unreadable or corrupt: {first}") from None
    if not isinstance(state, dict) or not {"model", "optimizer", "history", "rng"} <= set(state):
        raise GMVAEError(f"checkpoint {path} is not a gmvae training state")
    return state
