"""Random spatial deformation of a patch: rotation, scaling, flips and a smooth elastic warp.

The patch is cut from a larger volume with room for the rotation, and every channel is
resampled once (linear for images and distances, nearest for labels) by one sampling grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial.transform import Rotation


@dataclass(frozen=True)
class DeformConfig:
    rotate_deg: float = 15.0
    scale: float = 0.15  # isotropic scale factor in [1 - scale, 1 + scale]
    elastic_vox: float = 3.0  # largest displacement of the elastic warp, in voxels
    elastic_nodes: int = 4  # control points per axis of the elastic warp


def margin_side(patch: int, cfg: DeformConfig) -> int:
    """Side of the cube to cut so the rotated, scaled and warped ``patch`` cube stays inside.

    A cube turned by at most θ (≤ 45°) about any axis spans at most cos θ + √2 sin θ of its side
    along each axis.
    """
    theta = math.radians(min(cfg.rotate_deg, 45.0))
    reach = (1 + cfg.scale) * (math.cos(theta) + math.sqrt(2) * math.sin(theta))
    side = math.ceil(patch * reach + 2 * cfg.elastic_vox) + 1
    return side + (side - patch) % 2  # centred on whole voxels: no half-voxel shift


def crop(array: np.ndarray, centre: np.ndarray, side: int) -> np.ndarray:
    """A cube of ``side`` around ``centre`` over the last three axes, zero-padded at edges."""
    spatial = array.shape[-3:]
    lo = np.asarray(centre) - side // 2
    src = tuple(slice(max(0, a), min(n, a + side)) for a, n in zip(lo, spatial, strict=True))
    pad = [(0, 0)] * (array.ndim - 3) + [
        (s.start - a, a + side - s.stop) for s, a in zip(src, lo, strict=True)
    ]
    return np.pad(array[(..., *src)], pad)


def random_grid(patch: int, side: int, cfg: DeformConfig, rng: np.random.Generator) -> torch.Tensor:
    """A (1, P, P, P, 3) sampling grid from a ``patch`` cube into a ``side`` cube."""
    matrix = Rotation.from_rotvec(_small_rotvec(cfg.rotate_deg, rng)).as_matrix()
    flips = np.diag(rng.choice([-1.0, 1.0], 3))
    matrix = matrix * rng.uniform(1 - cfg.scale, 1 + cfg.scale) @ flips
    theta = np.hstack([matrix * patch / side, np.zeros((3, 1))])
    grid = F.affine_grid(
        torch.tensor(theta[None], dtype=torch.float32), (1, 1, patch, patch, patch),
        align_corners=False,
    )  # fmt: skip
    if cfg.elastic_vox > 0:
        n = cfg.elastic_nodes
        nodes = rng.uniform(-1.0, 1.0, (1, 3, n, n, n)).astype(np.float32)
        field = F.interpolate(
            torch.from_numpy(nodes), size=(patch,) * 3, mode="trilinear", align_corners=True
        )
        grid = grid + field.permute(0, 2, 3, 4, 1) * (2 * cfg.elastic_vox / side)
    return grid


def _small_rotvec(max_deg: float, rng: np.random.Generator) -> np.ndarray:
    """A rotation vector of a random axis and an angle of at most ``max_deg``."""
    axis = rng.standard_normal(3)
    return axis / np.linalg.norm(axis) * np.deg2rad(rng.uniform(0, max_deg))


def resample(volume: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    """(C, S, S, S) through ``grid`` to (C, P, P, P); zero outside."""
    return F.grid_sample(
        volume[None].float(), grid, mode=mode, padding_mode="zeros", align_corners=False
    )[0]
