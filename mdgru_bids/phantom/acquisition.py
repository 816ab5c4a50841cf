"""The scanner side of a session: head pose, grids, slice profile, bias field, noise, defacing.

A voxel of an acquisition grid is traced grid -> scanner mm -> subject mm (inverse head pose)
-> template mm (subject deformation) -> work grid, and the work-grid maps are read there.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from mdgru_bids.phantom.anatomy import Anatomy
from mdgru_bids.phantom.warp import Deformation

CHUNK_POINTS = 1_000_000  # sample points per slab: bounds memory at 1 mm
#: Room around the template brain on the subject grid: a participant's scaling (up to 7 %),
#: rotation and local deformation move the brain by less than this.
SUBJECT_MARGIN_MM = 20.0


@dataclass(frozen=True)
class Protocol:
    """A sequence: voxel-size options (mm, finest 1 mm), field of view (mm), angulation, noise."""

    voxels: tuple[tuple[float, float, float], ...]
    fov_mm: tuple[float, float, float]
    max_tilt_deg: float  # oblique angulation about the left-right axis
    noise: tuple[float, float]  # Rician sigma range relative to white-matter signal


PROTOCOLS = {
    "T1w": Protocol(
        ((1.0, 1.0, 1.0), (1.0, 1.0, 1.2), (1.2, 1.2, 1.2)),
        (200.0, 240.0, 200.0),
        0.0,
        (0.015, 0.03),
    ),
    "FLAIR": Protocol(
        ((1.0, 1.0, 3.0), (1.2, 1.2, 3.0), (1.0, 1.0, 2.5)),
        (200.0, 230.0, 170.0),
        10.0,
        (0.02, 0.04),
    ),
}


@dataclass(frozen=True, eq=False)
class Grid:
    """An acquisition grid: voxel (i, j, k) to scanner mm through ``affine``."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def zooms(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)


@functools.lru_cache(maxsize=2)
def subject_grid(anatomy: Anatomy) -> Grid:
    """The common grid of a participant's sessions, in subject mm (before any head pose): the
    work grid's voxels cropped to the brain, so lesion truth of all sessions shares one grid."""
    brain = np.argwhere(anatomy.parenchyma > 0.5)
    margin = int(np.ceil(SUBJECT_MARGIN_MM / anatomy.voxel_mm))
    low = np.maximum(brain.min(axis=0) - margin, 0)
    high = np.minimum(brain.max(axis=0) + margin + 1, anatomy.shape)
    affine = anatomy.affine.copy()
    affine[:3, 3] = anatomy.to_mm(low)
    return Grid(tuple(int(n) for n in high - low), affine)


def draw_grid(
    rng: np.random.Generator, protocol: Protocol, resolution: float, centre: np.ndarray
) -> Grid:
    """A grid for one acquisition, voxel sizes scaled so the protocol's finest is ``resolution``."""
    voxel = np.array(protocol.voxels[rng.integers(len(protocol.voxels))]) * resolution
    fov = np.array(protocol.fov_mm) + rng.uniform(-10.0, 10.0, 3)
    shape = np.maximum(np.round(fov / voxel).astype(int), 1)
    tilt = rng.uniform(-protocol.max_tilt_deg, protocol.max_tilt_deg)
    linear = Rotation.from_euler("x", tilt, degrees=True).as_matrix() @ np.diag(voxel)
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = centre - linear @ ((shape - 1) / 2)
    return Grid(tuple(int(n) for n in shape), affine)


def draw_pose(
    rng: np.random.Generator, centre: np.ndarray, degrees: float, mm: float
) -> np.ndarray:
    """Rigid head pose (subject mm to scanner mm), rotating about ``centre``."""
    angles = np.clip(rng.normal(0.0, degrees, 3), -3 * degrees, 3 * degrees)
    rot = Rotation.from_rotvec(np.deg2rad(angles)).as_matrix()
    pose = np.eye(4)
    pose[:3, :3] = rot
    pose[:3, 3] = centre + rng.normal(0.0, mm, 3) - rot @ centre
    return pose


def subsamples(grid: Grid, work_mm: float) -> np.ndarray:
    """Offsets (S, 3), in voxels, that tile a voxel at the work resolution: the slice profile."""
    counts = np.maximum(np.round(grid.zooms / work_mm), 1).astype(int)
    axes = [(np.arange(n) + 0.5) / n - 0.5 for n in counts]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def sample(
    grid: Grid,
    pose: np.ndarray,
    deformation: Deformation,
    anatomy: Anatomy,
    linear: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Read named work-grid maps through an acquisition.

    ``linear`` maps are interpolated and averaged over each voxel's sub-samples (partial
    volume, thick slices); ``labels`` keep the largest label any sub-sample lands on.
    """
    to_subject = np.linalg.inv(pose) @ grid.affine
    offsets = subsamples(grid, anatomy.voxel_mm)
    origin = anatomy.affine[:3, 3, None]
    nx, ny, nz = grid.shape
    out = {name: np.zeros(grid.shape, np.float32) for name in linear}
    out |= {name: np.zeros(grid.shape, m.dtype) for name, m in labels.items()}
    step = max(1, CHUNK_POINTS // (nx * ny))
    for k0 in range(0, nz, step):
        ks = np.arange(k0, min(nz, k0 + step))
        ijk = np.stack(np.meshgrid(np.arange(nx), np.arange(ny), ks, indexing="ij"))
        ijk = ijk.reshape(3, -1).astype(np.float64)
        slab = np.s_[:, :, k0 : k0 + len(ks)]
        for offset in offsets:
            subject = to_subject[:3, :3] @ (ijk + offset[:, None]) + to_subject[:3, 3:]
            vox = (deformation(subject) - origin) / anatomy.voxel_mm
            for name, src in linear.items():
                out[name][slab] += ndi.map_coordinates(src, vox, order=1).reshape(nx, ny, -1)
            for name, src in labels.items():
                hit = ndi.map_coordinates(src, vox, order=0).reshape(nx, ny, -1)
                np.maximum(out[name][slab], hit, out=out[name][slab])
    for name in linear:
        out[name] /= len(offsets)
    return out


def bias_field(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """Smooth multiplicative receive-coil bias: exp of a random quadratic over the field of view."""
    x, y, z = (np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape)
    x, y, z = x[:, None, None], y[None, :, None], z[None, None, :]
    terms = (x, y, z, x * x, y * y, z * z, x * y, x * z, y * z)
    log = sum(np.float32(rng.normal(0.0, 0.1)) * t for t in terms)
    return np.exp(np.broadcast_to(log, shape)).astype(np.float32)


def rician(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise: Rician, as real magnitude MRI."""
    real = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.hypot(real, imag)
