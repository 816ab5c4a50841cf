"""Subject anatomy as a smooth random deformation of the template, plus atrophy over time."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from mdgru_bids.phantom.anatomy import Anatomy

LATTICE_MM = 4.0  # displacement control-point spacing; fields are far smoother than this
SMOOTHNESS_MM = 20.0  # correlation length of a subject's random deformation


@dataclass(frozen=True, eq=False)
class Deformation:
    """Subject mm to template mm: ``centre + linear @ (x - centre) + u(x)``.

    ``u`` is linearly interpolated from a coarse lattice, so evaluating it at the millions of
    points of an acquisition grid costs little more than one interpolation per component.
    """

    centre: np.ndarray
    linear: np.ndarray
    origin: np.ndarray  # lattice origin, mm
    field: np.ndarray  # (3, *lattice) displacement, mm

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Template mm of subject-space points; both (3, N)."""
        lattice = (points - self.origin[:, None]) / LATTICE_MM
        shift = np.stack(
            [ndi.map_coordinates(c, lattice, order=1, mode="nearest") for c in self.field]
        )
        return self.centre[:, None] + self.linear @ (points - self.centre[:, None]) + shift


@dataclass(frozen=True, eq=False)
class SubjectWarp:
    """One participant's head: a fixed deformation, with atrophy accruing each session."""

    base: Deformation
    shrink: np.ndarray  # (3, *lattice) brain-shrinkage field per unit rate
    grow: np.ndarray  # (3, *lattice) ventricular-enlargement field per unit rate (mm)
    shrink_rate: float
    grow_rate: float

    def session(self, index: int) -> Deformation:
        """The deformation at session ``index`` (0 = baseline)."""
        field = self.base.field + index * (
            self.shrink_rate * self.shrink + self.grow_rate * self.grow
        )
        return Deformation(self.base.centre, self.base.linear, self.base.origin, field)


def _lattice_points(anatomy: Anatomy) -> np.ndarray:
    """Lattice control points (3, *lattice) in mm covering the work grid."""
    extent = (np.array(anatomy.shape) - 1) * anatomy.voxel_mm
    axes = [
        anatomy.affine[a, 3] + LATTICE_MM * np.arange(int(np.ceil(extent[a] / LATTICE_MM)) + 1)
        for a in range(3)
    ]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


def _smoothed_at(anatomy: Anatomy, vol: np.ndarray, sigma_mm: float, pts: np.ndarray) -> np.ndarray:
    """A work-grid map, Gaussian-smoothed, read at lattice points."""
    smooth = ndi.gaussian_filter(vol, sigma_mm / anatomy.voxel_mm)
    vox = anatomy.to_voxel(pts.reshape(3, -1).T).T
    return ndi.map_coordinates(smooth, vox, order=1, mode="nearest").reshape(pts.shape[1:])


@functools.lru_cache(maxsize=2)
def _atrophy_fields(anatomy: Anatomy) -> tuple[np.ndarray, np.ndarray]:
    """Unit fields: whole-brain shrinkage towards the centre, and ventricles pushing outwards.

    Sampling template points further out makes the brain look smaller while the skull stays;
    sampling towards the ventricles makes them look larger.
    """
    pts = _lattice_points(anatomy)
    brain = _smoothed_at(anatomy, anatomy.parenchyma, 4.0, pts)
    shrink = (pts - anatomy.centre[:, None, None, None]) * brain
    vent = _smoothed_at(anatomy, anatomy.ventricles, 5.0, pts)
    grow = np.stack(np.gradient(vent, LATTICE_MM))
    grow /= np.linalg.norm(grow, axis=0).max()
    return shrink.astype(np.float32), grow.astype(np.float32)


def _random_field(rng: np.random.Generator, shape: tuple[int, ...], amplitude: float) -> np.ndarray:
    """Smooth random displacement (3, *shape) whose 99th-percentile magnitude is ``amplitude``."""
    field = rng.standard_normal((3, *shape))
    field = np.stack([ndi.gaussian_filter(c, SMOOTHNESS_MM / LATTICE_MM) for c in field])
    field *= amplitude / np.percentile(np.linalg.norm(field, axis=0), 99)
    return field.astype(np.float32)


def make_subject_warp(anatomy: Anatomy, rng: np.random.Generator) -> SubjectWarp:
    """Draw a participant: head size and shape, local anatomy, and atrophy rates."""
    pts = _lattice_points(anatomy)
    scale = np.diag(rng.uniform(0.93, 1.07, 3))
    linear = Rotation.from_rotvec(rng.normal(0.0, 0.03, 3)).as_matrix() @ scale
    base = Deformation(
        centre=anatomy.centre,
        linear=linear,
        origin=pts[:, 0, 0, 0],
        field=_random_field(rng, pts.shape[1:], rng.uniform(2.0, 4.0)),
    )
    shrink, grow = _atrophy_fields(anatomy)
    return SubjectWarp(
        base=base,
        shrink=shrink,
        grow=grow,
        shrink_rate=float(rng.uniform(0.002, 0.004)),
        grow_rate=float(rng.uniform(0.4, 0.8)),
    )
