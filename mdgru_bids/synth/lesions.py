"""Lesions painted into label patches: synthetic shapes, real shapes, and carved real lesions.

Loads span 0.1-80 mL per brain (log-uniform), as MS does from a first attack to a heavy
confluent burden. Synthetic lesions are rippled ellipsoids at the MS sites of
mdgru_bids.phantom.anatomy.site_masks (periventricular, deep, juxtacortical, infratentorial),
tiny 3-10 mm³ dots, and confluent periventricular caps and bands grown from the ventricles;
real expert-marked lesions lend their shapes, and on real images their signal too
(CarveMix-like: a lesion cut from one image with its own intensities, pasted into another).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from mdgru_bids.synth.appearance import GM, LESION, WM, smooth_field

SITE_BITS = {"periventricular": 1, "deep": 2, "juxtacortical": 4, "infratentorial": 8}
SITE_P = {"periventricular": 0.35, "deep": 0.25, "juxtacortical": 0.25, "infratentorial": 0.15}
LOAD_ML = (0.1, 80.0)
BRAIN_ML = 1200.0  # parenchyma, to turn a brain's lesion load into a patch's
WAVES = 4


@dataclass(frozen=True)
class LesionConfig:
    load_ml: tuple[float, float] = LOAD_ML
    diameter_mm: tuple[float, float] = (5.0, 0.5)  # log-normal median and sigma
    # Large round lesions (tumefactive or confluent, 12-35 mm), where the load leaves room:
    # without them a network never sees a bright blob bigger than a few centimetres' band.
    large_p: float = 0.2
    large_mm: tuple[float, float] = (12.0, 35.0)
    tiny_rate: float = 2.0  # mean number of 3-10 mm³ lesions per patch
    real_shape_p: float = 0.3  # share of lesions shaped like a real one (where any are given)
    lesion_free_p: float = 0.1  # share of patches without any lesion


@dataclass(frozen=True, eq=False)
class CarvedLesion:
    """A real lesion with its surroundings: z-scored image crop (C, ...), lesion crop, and the
    median signal of the white matter around it (per channel), to match another image's."""

    image: np.ndarray
    lesion: np.ndarray
    wm_level: np.ndarray


def lesion_shapes(label: np.ndarray, min_voxels: int = 3) -> list[np.ndarray]:
    """Each 26-connected lesion of a mask as a tight boolean crop."""
    components, _ = ndi.label(label > 0, structure=np.ones((3, 3, 3)))
    return [
        components[box] == i + 1
        for i, box in enumerate(ndi.find_objects(components))
        if box is not None and (components[box] == i + 1).sum() >= min_voxels
    ]


def carve(
    image: np.ndarray, label: np.ndarray, tissue: np.ndarray, margin: int = 3
) -> list[CarvedLesion]:
    """Every lesion of a real image with ``margin`` voxels of its surroundings."""
    components, _ = ndi.label(label > 0, structure=np.ones((3, 3, 3)))
    carved = []
    for i, box in enumerate(ndi.find_objects(components)):
        if box is None:
            continue
        big = tuple(
            slice(max(0, s.start - margin), min(n, s.stop + margin))
            for s, n in zip(box, label.shape, strict=True)
        )
        lesion = components[big] == i + 1
        wm = (tissue[big] == WM) & ~lesion
        if lesion.sum() < 3 or wm.sum() < 5:
            continue
        crop = image[(slice(None), *big)]
        carved.append(CarvedLesion(crop, lesion, np.median(crop[:, wm], axis=1)))
    return carved


def _orient(array: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One of the 48 axis permutations and flips of the last three axes."""
    lead = array.ndim - 3
    perm = list(range(lead)) + [lead + int(a) for a in rng.permutation(3)]
    out = np.transpose(array, perm)
    for axis in range(lead, array.ndim):
        if rng.random() < 0.5:
            out = np.flip(out, axis)
    return out


def _box(centre: np.ndarray, shape: tuple[int, ...], patch: tuple[int, ...]):
    """Destination and source slices of a crop of ``shape`` centred at ``centre``."""
    lo = np.asarray(centre) - np.asarray(shape) // 2
    dst, src = [], []
    for a, s, n in zip(lo, shape, patch, strict=True):
        d0, d1 = max(0, a), min(n, a + s)
        if d1 <= d0:
            return None
        dst.append(slice(d0, d1))
        src.append(slice(d0 - a, d1 - a))
    return tuple(dst), tuple(src)


def _ovoid(diameter: float, rng: np.random.Generator, elongation: float = 1.8) -> np.ndarray:
    """A boolean rippled ellipsoid of about ``diameter`` mm (1 mm voxels)."""
    ratios = np.array([rng.uniform(1.0, elongation), 1.0, rng.uniform(0.6, 1.0)])
    radii = diameter / 2 * ratios / np.cbrt(ratios.prod())
    reach = int(np.ceil(radii.max() * 1.3)) + 1
    grid = np.stack(np.meshgrid(*(np.arange(-reach, reach + 1),) * 3, indexing="ij"), -1)
    points = grid.reshape(-1, 3).astype(np.float32)
    local = points @ Rotation.random(rng=rng).as_matrix().astype(np.float32) / radii
    dist = np.linalg.norm(local, axis=1) - 1.0
    if diameter > 3.0:
        waves = (
            Rotation.random(WAVES, rng=rng).as_matrix()[:, :, 0]
            * (2 * np.pi / (diameter * rng.uniform(0.5, 1.0, WAVES)))[:, None]
        )
        ripple = np.sin(points @ waves.T + rng.uniform(0, 2 * np.pi, WAVES)).sum(axis=1)
        dist += rng.uniform(0.0, 0.25) * ripple / np.sqrt(WAVES / 2)
    shape = (dist < 0).reshape(grid.shape[:3])
    return shape if shape.any() else np.ones((1, 1, 1), bool)


def _tiny(rng: np.random.Generator) -> np.ndarray:
    """A 3-10 mm³ lesion (1 mm voxels): the smallest that experts mark."""
    while True:
        shape = _ovoid(rng.uniform(1.6, 2.8), rng, 1.2)
        if 3 <= shape.sum() <= 10:
            return shape


def _band(
    labels: np.ndarray, dist_vent: np.ndarray, load: float, rng: np.random.Generator
) -> np.ndarray:
    """Confluent periventricular caps and bands: white matter within a rippling distance of
    the ventricles, over a random share of their surface; thicker for heavier loads."""
    # at least 3 mm: thinner bright linings are normal (appearance.ventricle_lining)
    thick = rng.uniform(3.0, 4.0 + 8.0 * np.clip(np.log10(load / 2.0) / 1.6, 0, 1))
    ripple = smooth_field(labels.shape, 0.35, rng).numpy()
    sector = smooth_field(labels.shape, 1.0, rng).numpy() > rng.uniform(-0.6, 0.9)
    # white matter inside the ventricles' outline (the template's septum) is no lesion site
    outside = dist_vent >= 0.5
    return (labels == WM) & outside & (dist_vent < np.maximum(thick * (1 + ripple), 3.0)) & sector


def _diameter(cfg: LesionConfig, room: float, rng: np.random.Generator) -> float:
    """A lesion diameter (mm): log-normal, or now and then large where ``room`` (voxels of
    load still to paint) holds most of a ball of that size."""
    widest = 2 * np.cbrt(3 * 1.5 * max(room, 0.0) / (4 * np.pi))
    if widest >= cfg.large_mm[0] and rng.random() < cfg.large_p:
        return float(rng.uniform(cfg.large_mm[0], min(cfg.large_mm[1], widest)))
    median, sigma = cfg.diameter_mm
    return float(np.clip(rng.lognormal(np.log(median), sigma), 2.0, 22.0))


def paint(
    labels: np.ndarray,
    dist_vent: np.ndarray,
    sites: np.ndarray,
    cfg: LesionConfig,
    rng: np.random.Generator,
    shapes: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Random lesions in a label patch (1 mm voxels): new labels and lesion instances 1..N.

    Lesions replace white matter and grey matter only (never CSF or background), so their
    place and shape follow the anatomy of the patch.
    """
    labels = labels.copy()
    existing, count = ndi.label(labels == LESION)  # a real anatomy's own lesions
    instances = existing.astype(np.int16)
    if rng.random() < cfg.lesion_free_p:
        return labels, instances
    tissue = (labels == WM) | (labels == GM)
    load = float(np.exp(rng.uniform(*np.log(cfg.load_ml))))
    target = load * 1000.0 * tissue.sum() / (BRAIN_ML * 1000.0)
    pools = {name: np.flatnonzero(sites & bit) for name, bit in SITE_BITS.items()}

    def place(shape: np.ndarray, centre_index: int) -> int:
        nonlocal count
        centre = np.unravel_index(centre_index, labels.shape)
        boxes = _box(np.array(centre), shape.shape, labels.shape)
        if boxes is None:
            return 0
        dst, src = boxes
        hit = shape[src] & tissue[dst]
        count += 1
        labels[dst][hit] = LESION
        instances[dst][hit] = count
        return int(hit.sum())

    painted = 0
    if pools["periventricular"].size and rng.random() < np.clip(np.log10(load) / 2, 0.05, 0.9):
        band = _band(labels, dist_vent, load, rng) & tissue
        count += 1
        labels[band], instances[band] = LESION, count
        painted += int(band.sum())
    for _ in range(rng.poisson(cfg.tiny_rate)):
        pool = pools["deep"] if pools["deep"].size else np.flatnonzero(labels == WM)
        if pool.size:
            painted += place(_tiny(rng), pool[rng.integers(pool.size)])
    names = [n for n in SITE_P if pools[n].size]
    if not names:
        return labels, instances
    p = np.array([SITE_P[n] for n in names])
    for _ in range(400):
        if painted >= target:
            break
        pool = pools[names[rng.choice(len(names), p=p / p.sum())]]
        if shapes and rng.random() < cfg.real_shape_p:
            shape = _orient(shapes[rng.integers(len(shapes))], rng)
        else:
            shape = _ovoid(_diameter(cfg, target - painted, rng), rng)
        painted += place(shape, pool[rng.integers(pool.size)])
    return labels, instances


def paste_carved(
    image: np.ndarray,
    labels: np.ndarray,
    carved: list[CarvedLesion],
    count: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Paste ``count`` real lesions, with their own signal, onto white matter of a real image.

    The carved crop is shifted so its white matter matches the destination's around it, and
    blended in with a soft edge; only white and grey matter take the lesion label.
    """
    image, labels = image.copy(), labels.copy()
    pool = np.flatnonzero(labels == WM)
    for _ in range(count if pool.size and carved else 0):
        piece = carved[rng.integers(len(carved))]
        stacked = _orient(np.concatenate([piece.image, piece.lesion[None]]), rng)
        crop, lesion = stacked[:-1], stacked[-1] > 0.5
        centre = np.array(np.unravel_index(pool[rng.integers(pool.size)], labels.shape))
        boxes = _box(centre, lesion.shape, labels.shape)
        if boxes is None:
            continue
        dst, src = boxes
        wm = labels[dst] == WM
        if wm.sum() < 5:
            continue
        target = image[(slice(None), *dst)]
        shift = np.median(target[:, wm], axis=1) - piece.wm_level
        weight = ndi.gaussian_filter(ndi.binary_dilation(lesion).astype(np.float32), 0.7)[src]
        weight *= (labels[dst] == WM) | (labels[dst] == GM)
        pasted = crop[(slice(None), *src)] + shift[:, None, None, None]
        image[(slice(None), *dst)] = (1 - weight) * target + weight * pasted
        hit = lesion[src] & ((labels[dst] == WM) | (labels[dst] == GM))
        labels[dst][hit] = LESION
    return image, labels
