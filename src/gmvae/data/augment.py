"""Random transforms of images that keep their class: small affine moves (rotation, scale,
shift), used to make q(y|x) agree on an image and a slightly moved copy of it, and strong views
(larger moves and an erased square) that confident predictions are asked to survive."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MAX_ROTATION_DEGREES = 15.0
MAX_SCALE_CHANGE = 0.1
MAX_SHIFT = 0.1  # of the image's half-width (affine_grid's coordinates run from -1 to 1)


# A strong view moves this many times as far as a small move, then erases a square of this
# fraction of the image's side at a random place (Cutout, as in FixMatch's strong views).
STRONG_MOVE = 2.0
ERASED_SIDE = 0.5


def random_affine_params(n: int, device: torch.device, strength: float = 1.0) -> torch.Tensor:
    """(n, 2, 3) affine matrices, drawn from the global RNG (the same on every rank), each
    range `strength` times the small move's."""
    angle = (torch.rand(n, device=device) * 2 - 1) * math.radians(MAX_ROTATION_DEGREES) * strength
    scale = 1 + (torch.rand(n, device=device) * 2 - 1) * MAX_SCALE_CHANGE * strength
    shift = (torch.rand(n, 2, device=device) * 2 - 1) * MAX_SHIFT * strength
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    return torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], -1), torch.stack([sin, cos, shift[:, 1]], -1)], 1
    )


def transform(x: torch.Tensor, image_shape: tuple[int, ...], params: torch.Tensor) -> torch.Tensor:
    """Apply (N, 2, 3) affine `params` to flat images x (N, C*H*W); outside pixels become 0."""
    c, h, w = (1, *image_shape) if len(image_shape) == 2 else image_shape
    images = x.view(len(x), c, h, w)
    grid = F.affine_grid(params, list(images.shape), align_corners=False)
    moved = F.grid_sample(images, grid, align_corners=False, padding_mode="zeros")
    return moved.reshape(len(x), -1)


def random_erasing_params(n: int, device: torch.device) -> torch.Tensor:
    """(n, 2) centres of the erased squares, in [0, 1) of the image's height and width, drawn
    from the global RNG (the same on every rank)."""
    return torch.rand(n, 2, device=device)


def erase(x: torch.Tensor, image_shape: tuple[int, ...], centres: torch.Tensor) -> torch.Tensor:
    """Flat images x (N, C*H*W) with a square of side ERASED_SIDE * min(H, W) around each
    row's centre (N, 2) set to 0 (clipped at the border)."""
    c, h, w = (1, *image_shape) if len(image_shape) == 2 else image_shape
    half = ERASED_SIDE * min(h, w) / 2
    rows = torch.arange(h, device=x.device, dtype=x.dtype) + 0.5
    cols = torch.arange(w, device=x.device, dtype=x.dtype) + 0.5
    inside_rows = (rows[None, :] - centres[:, :1] * h).abs() < half  # (N, H)
    inside_cols = (cols[None, :] - centres[:, 1:] * w).abs() < half  # (N, W)
    erased = inside_rows[:, :, None] & inside_cols[:, None, :]  # (N, H, W)
    images = x.view(len(x), c, h, w).masked_fill(erased[:, None], 0.0)
    return images.reshape(len(x), -1)


def strong_view(x: torch.Tensor, image_shape: tuple[int, ...], mine: torch.Tensor, n: int):
    """Strong views of this process's rows x (B, D): a move STRONG_MOVE times as large as a
    small one, then an erased square. The draws are made for the whole global batch of n rows
    and `mine` (B,) picks this process's, so the views do not depend on the world's size."""
    params = random_affine_params(n, x.device, STRONG_MOVE)[mine]
    centres = random_erasing_params(n, x.device)[mine]
    return erase(transform(x, image_shape, params), image_shape, centres)
