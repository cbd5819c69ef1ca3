"""Small random affine transforms of images (rotation, scale, shift), used to make q(y|x)
agree on an image and a slightly moved copy of it: an invariance that needs no labels."""

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
    c, h, w = (1, *image_shape) if len(image_shape) == 2 else image_shape
    images = x.view(len(x), c, h, w)
    grid = F.affine_grid(params, list(images.shape), align_corners=False)
    moved = F.grid_sample(images, grid, align_corners=False, padding_mode="zeros")
    return moved.reshape(len(x), -1)
