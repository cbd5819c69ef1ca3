"""Random changes of images that keep what they show: small affine transforms (rotation, scale,
shift), used to make q(y|x) agree on an image and a slightly moved copy of it, an invariance that
needs no labels; and a cut-out square, which with two such transforms makes the strongly changed
copy that the pseudo-label term fits to the confident prediction of the image itself."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MAX_ROTATION_DEGREES = 15.0
MAX_SCALE_CHANGE = 0.1
MAX_SHIFT = 0.1  # of the image's half-width (affine_grid's coordinates run from -1 to 1)


def random_affine_params(n: int, device: torch.device) -> torch.Tensor:
    """(n, 2, 3) affine matrices, drawn from the global RNG (the same on every rank)."""
    angle = (torch.rand(n, device=device) * 2 - 1) * math.radians(MAX_ROTATION_DEGREES)
    scale = 1 + (torch.rand(n, device=device) * 2 - 1) * MAX_SCALE_CHANGE
    shift = (torch.rand(n, 2, device=device) * 2 - 1) * MAX_SHIFT
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    return torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], -1), torch.stack([sin, cos, shift[:, 1]], -1)], 1
    )


def transform(x: torch.Tensor, image_shape: tuple[int, ...], params: torch.Tensor) -> torch.Tensor:
    """Apply (N, 2, 3) affine `params` to flat images x (N, C*H*W); outside pixels become 0."""
    c, h, w = _channels_height_width(image_shape)
    images = x.view(len(x), c, h, w)
    grid = F.affine_grid(params, list(images.shape), align_corners=False)
    moved = F.grid_sample(images, grid, align_corners=False, padding_mode="zeros")
    return moved.reshape(len(x), -1)


CUT_OUT_SIDE = 0.5  # of the image's side: the square of pixels a strong change sets to 0


def _channels_height_width(image_shape: tuple[int, ...]) -> tuple[int, int, int]:
    return (1, *image_shape) if len(image_shape) == 2 else image_shape


def random_cut_out_corners(
    n: int, image_shape: tuple[int, ...], device: torch.device
) -> torch.Tensor:
    """(n, 2) top-left pixel (row, column) of each image's cut-out square, drawn from the global
    RNG (the same on every rank); the square may reach past the image's edge."""
    _, h, w = _channels_height_width(image_shape)
    side_h, side_w = _cut_out_sides(h, w)
    top = torch.randint(-(side_h // 2), h - side_h // 2, (n,), device=device)
    left = torch.randint(-(side_w // 2), w - side_w // 2, (n,), device=device)
    return torch.stack([top, left], -1)


def _cut_out_sides(h: int, w: int) -> tuple[int, int]:
    return max(1, round(h * CUT_OUT_SIDE)), max(1, round(w * CUT_OUT_SIDE))


def cut_out(x: torch.Tensor, image_shape: tuple[int, ...], corners: torch.Tensor) -> torch.Tensor:
    """Flat images x (N, C*H*W) with the square of CUT_OUT_SIDE of their side from `corners`
    (N, 2) set to 0."""
    c, h, w = _channels_height_width(image_shape)
    side_h, side_w = _cut_out_sides(h, w)
    rows = torch.arange(h, device=x.device)[None] - corners[:, :1]  # (N, H) from the top
    cols = torch.arange(w, device=x.device)[None] - corners[:, 1:]  # (N, W) from the left
    inside = ((rows >= 0) & (rows < side_h))[:, :, None] & ((cols >= 0) & (cols < side_w))[:, None]
    return (x.view(len(x), c, h, w) * ~inside[:, None]).reshape(len(x), -1)
