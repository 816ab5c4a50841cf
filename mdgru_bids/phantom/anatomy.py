"""Template anatomy: tissue fractions, a simple head around the brain, and lesion sites.

Everything lives in template space (MNI ICBM152 2009a nonlinear symmetric, mm) on a regular
work grid whose voxel size is the dataset's finest acquisition voxel: partial volume is then
right at every resolution, and coarse test datasets stay cheap to build.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from mdgru_bids.templates import icbm152_map

PAD_MM = 16.0  # room around the template brain for skull, scalp and head motion
SITES = ("periventricular", "deep", "juxtacortical", "infratentorial")
# Shells outside the (smoothed) intracranial surface, in mm: CSF, then skull, then scalp.
CSF_RIM_MM, SKULL_MM, SCALP_MM = 2.0, 7.0, 12.0


@dataclass(frozen=True, eq=False)
class Anatomy:
    """Template-space maps on the work grid (all arrays read-only; shared between subjects)."""

    affine: np.ndarray  # work voxel -> template mm
    voxel_mm: float
    tissues: dict[str, np.ndarray]  # gm, wm, csf, skull, scalp fractions (sum <= 1)
    ventricles: np.ndarray  # lateral-ventricle fraction
    dist_ventricle: np.ndarray  # mm from the lateral ventricles
    sites: dict[str, np.ndarray]  # site name -> candidate lesion centres, (N, 3) voxel indices
    face: np.ndarray  # uint8, 1 = what a defacing tool would remove
    centre: np.ndarray  # centroid of the intracranial volume, mm

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.tissues["wm"].shape

    @property
    def parenchyma(self) -> np.ndarray:
        """Where lesions may sit: grey plus white matter."""
        return self.tissues["gm"] + self.tissues["wm"]

    def to_mm(self, ijk: np.ndarray) -> np.ndarray:
        """Voxel indices (..., 3) to template mm."""
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def to_voxel(self, xyz: np.ndarray) -> np.ndarray:
        """Template mm (..., 3) to (fractional) voxel indices."""
        return (xyz - self.affine[:3, 3]) / self.voxel_mm


def _template(name: str) -> tuple[np.ndarray, np.ndarray]:
    """One of nilearn's packaged ICBM152 2009a maps as fractions in [0, 1], with its affine."""
    img = icbm152_map(name)
    if not np.allclose(img.affine[:3, :3], np.eye(3)):
        raise RuntimeError(f"nilearn's ICBM152 {name} map: expected a 1 mm RAS grid")
    return img.get_fdata(dtype=np.float32) / 255.0, img.affine


def _to_work_grid(vol: np.ndarray, voxel_mm: float) -> np.ndarray:
    """Resample a 1 mm template map onto the padded work grid, blurring first when coarser."""
    if voxel_mm > 1.0:
        vol = ndi.gaussian_filter(vol, 0.4 * np.sqrt(voxel_mm**2 - 1.0))
    shape = np.ceil((np.array(vol.shape) - 1 + 2 * PAD_MM) / voxel_mm).astype(int) + 1
    out = ndi.affine_transform(
        vol,
        np.diag(np.full(3, voxel_mm)),
        offset=-PAD_MM,
        output_shape=tuple(shape),
        order=1,
        prefilter=False,
        mode="constant",
        cval=0.0,
    )
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _lateral_ventricles(csf: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Largest CSF component in a central box: the lateral ventricles (at 1 mm, not cisterns)."""
    x, y, z = (np.arange(n) * affine[a, a] + affine[a, 3] for a, n in enumerate(csf.shape))
    box = (
        (np.abs(x) < 35)[:, None, None]
        & ((y > -55) & (y < 35))[None, :, None]
        & ((z > -10) & (z < 40))[None, None, :]
    )
    labels, count = ndi.label((csf > 0.5) & box)
    sizes = ndi.sum_labels(np.ones(csf.shape), labels, np.arange(1, count + 1))
    return (labels == 1 + int(np.argmax(sizes))).astype(np.float32)


def _ramp(dist: np.ndarray, edge: float, width: float) -> np.ndarray:
    """Partial-volume fraction of a voxel lying beyond ``edge`` mm."""
    return np.clip((dist - edge) / width + 0.5, 0.0, 1.0)


def _head(icv: np.ndarray, voxel_mm: float) -> tuple[np.ndarray, ...]:
    """CSF rim, skull and scalp as shells around a smoothed intracranial surface.

    The template is skull-stripped; a head makes brain extraction and defacing meaningful.
    Returns (rim CSF, skull, scalp) fractions and the distance outside the surface in mm.
    """
    inside = ndi.gaussian_filter(icv, 3.0 / voxel_mm) > 0.5
    dist = ndi.distance_transform_edt(~inside, sampling=voxel_mm).astype(np.float32)
    outside = 1.0 - icv
    w = voxel_mm
    rim = outside * (1.0 - _ramp(dist, CSF_RIM_MM, w))
    skull = outside * (_ramp(dist, CSF_RIM_MM, w) - _ramp(dist, SKULL_MM, w))
    scalp = outside * (_ramp(dist, SKULL_MM, w) - _ramp(dist, SCALP_MM, w))
    return rim, skull, scalp, dist


def _infratentorial(xyz: tuple[np.ndarray, ...], shape: tuple[int, ...]) -> np.ndarray:
    """Brainstem and cerebellum, as boxes in template mm ``xyz``."""
    x, y, z = xyz
    brainstem = (
        (np.abs(x) < 12)[:, None, None]
        & ((y > -40) & (y < -10))[None, :, None]
        & (z < -12)[None, None, :]
    )
    cerebellum = (y < -25)[None, :, None] & (z < -22)[None, None, :]
    return np.broadcast_to(brainstem | cerebellum, shape)


def site_masks(
    tissues: dict[str, np.ndarray],
    dist_vent: np.ndarray,
    infra: np.ndarray,
    voxel_mm: float,
) -> dict[str, np.ndarray]:
    """Where each MS lesion site is, by white matter, distances and the infratentorial mask.

    The synthetic training data (mdgru_bids.synth) place lesions by the same rules on other
    anatomies, so the rules live in one place.
    """
    gm, wm = tissues["gm"], tissues["wm"]
    dist_gm = ndi.distance_transform_edt(gm <= 0.5, sampling=voxel_mm)
    near = max(2.0, 1.01 * voxel_mm)  # "adjacent" must include the next voxel on coarse grids
    masks = {
        "periventricular": (wm > 0.7) & (dist_vent <= max(5.0, 1.5 * voxel_mm)) & ~infra,
        "deep": (wm > 0.9) & (dist_vent > 8.0) & (dist_gm > 4.0) & ~infra,
        "juxtacortical": (wm > 0.5) & (dist_gm <= near) & (dist_vent > 20.0) & ~infra,
        "infratentorial": (wm > 0.8) & infra,
    }
    return masks


def _face(dist_out: np.ndarray, xyz: tuple[np.ndarray, ...]) -> np.ndarray:
    """Anterior-inferior head outside a 6 mm margin around the brain: a defacing-like cut."""
    _, y, z = xyz
    plane = z[None, None, :] < y[None, :, None] - 90.0
    return np.broadcast_to(plane, dist_out.shape) & (dist_out > 6.0)


def _freeze(arr: np.ndarray) -> np.ndarray:
    arr.flags.writeable = False
    return arr


@functools.lru_cache(maxsize=2)
def load_anatomy(voxel_mm: float) -> Anatomy:
    """Build (once per process and resolution) the template anatomy on a work grid."""
    t1, affine_1mm = _template("t1")
    gm, _ = _template("gm")
    wm, _ = _template("wm")
    inside = (t1 > 0).astype(np.float32)
    csf_1mm = np.clip(inside - gm - wm, 0.0, 1.0)
    ventricles = _to_work_grid(_lateral_ventricles(csf_1mm, affine_1mm), voxel_mm)
    icv, gm, wm = (_to_work_grid(v, voxel_mm) for v in (inside, gm, wm))
    origin = affine_1mm[:3, 3] - PAD_MM
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = origin
    xyz = tuple(np.arange(n) * voxel_mm + origin[a] for a, n in enumerate(icv.shape))
    rim, skull, scalp, dist_out = _head(icv, voxel_mm)
    tissues = {
        "gm": gm,
        "wm": wm,
        "csf": np.clip(icv - gm - wm, 0.0, 1.0) + rim,
        "skull": skull,
        "scalp": scalp,
    }
    dist_vent = ndi.distance_transform_edt(ventricles < 0.5, sampling=voxel_mm).astype(np.float32)
    centre = np.array(ndi.center_of_mass(icv)) * voxel_mm + origin
    return Anatomy(
        affine=_freeze(affine),
        voxel_mm=float(voxel_mm),
        tissues={k: _freeze(v.astype(np.float32)) for k, v in tissues.items()},
        ventricles=_freeze(ventricles),
        dist_ventricle=_freeze(dist_vent),
        sites={
            k: _freeze(np.argwhere(v).astype(np.int32))
            for k, v in site_masks(
                tissues, dist_vent, _infratentorial(xyz, icv.shape), voxel_mm
            ).items()
        },
        face=_freeze(_face(dist_out, xyz).astype(np.uint8)),
        centre=_freeze(centre),
    )
