"""MS lesions: where they sit, what shape they take, and how they change between sessions.

A lesion is a union of ellipsoids with a rippled surface, in template mm. Its course is one
radius scale per session (0 = absent); growth and shrinkage scale it about its first
ellipsoid's centre, so a stable lesion keeps its exact shape from session to session.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from mdgru_bids.phantom.anatomy import Anatomy

SOFT_EDGE_MM = 1.5  # lesion borders fade over this width (or one voxel, if coarser)
MAX_DIAMETER_MM = {"ovoid": 20.0, "irregular": 16.0, "confluent": 25.0}  # main ellipsoid, at most
SITE_P = {"periventricular": 0.4, "deep": 0.25, "juxtacortical": 0.25, "infratentorial": 0.1}
SITE_MAX_DIAMETER_MM = {"juxtacortical": 12.0, "infratentorial": 10.0}
IRREGULAR_P = {"periventricular": 0.3, "deep": 0.3, "juxtacortical": 0.4, "infratentorial": 0.2}
CONFLUENT_P, MAX_CONFLUENT = 0.15, 2  # periventricular only
BLACK_HOLE_P = 0.25
# Fate of a lesion present at the previous session, and its volume factor range.
FATE_P = {"stable": 0.7, "enlarging": 0.12, "shrinking": 0.1, "resolved": 0.08}
VOLUME_FACTOR = {"stable": (0.95, 1.05), "enlarging": (2.0, 3.0), "shrinking": (0.2, 0.45)}
WAVES = 5  # sinusoids that ripple a lesion's surface


@dataclass(frozen=True, eq=False)
class Blob:
    """An ellipsoid: centre (mm), principal axes (columns of a rotation), semi-axes (mm)."""

    centre: np.ndarray
    axes: np.ndarray
    radii: np.ndarray


@dataclass(frozen=True, eq=False)
class Lesion:
    """One lesion with a persistent id, its look on FLAIR/T1w, and its course over sessions."""

    lesion_id: int
    site: str
    blobs: tuple[Blob, ...]
    waves: np.ndarray  # (WAVES, 3) wave vectors, rad/mm at scale 1
    phases: np.ndarray  # (WAVES,)
    roughness: float  # surface ripple, mm (standard deviation) at scale 1
    flair: float  # signal relative to white matter
    t1: float
    black_hole: bool  # T1w signal close to CSF: chronic tissue loss
    scales: tuple[float, ...]  # radius scale per session, 0 = absent

    @property
    def anchor(self) -> np.ndarray:
        return self.blobs[0].centre

    def extent(self) -> float:
        """Radius (mm, scale 1) of a sphere about the anchor holding the whole lesion."""
        reach = max(np.linalg.norm(b.centre - self.anchor) + b.radii.max() for b in self.blobs)
        return float(reach + 3.0 * self.roughness)

    def signed_distance(self, points: np.ndarray, scale: float) -> np.ndarray:
        """Approximate distance (mm, negative inside) from points (N, 3) to the surface."""
        rel = points - self.anchor
        dist = np.full(len(points), np.inf)
        for b in self.blobs:
            local = (rel - scale * (b.centre - self.anchor)) @ b.axes / (scale * b.radii)
            mean_radius = scale * float(np.exp(np.log(b.radii).mean()))
            dist = np.minimum(dist, (np.linalg.norm(local, axis=1) - 1.0) * mean_radius)
        ripple = np.sin(rel @ self.waves.T / scale + self.phases).sum(axis=1)
        return dist + scale * self.roughness * ripple / np.sqrt(WAVES / 2)


@dataclass(frozen=True, eq=False)
class LesionMaps:
    """One session's lesions on the work grid."""

    fraction: np.ndarray  # lesion partial volume, [0, 1]
    ids: np.ndarray  # id of the dominant lesion, 0 = none
    flair: np.ndarray  # lesion signal relative to white matter, where fraction > 0
    t1: np.ndarray


@dataclass(frozen=True)
class _Plan:
    """A lesion before it is placed: what it is and what happens to it."""

    site: str
    kind: str  # ovoid, irregular or confluent
    diameter: float  # mm at scale 1
    scales: tuple[float, ...]


def _fates(rng: np.random.Generator, count: int) -> list[str]:
    """Fates for the lesions present at a session: every kind of change where there are enough."""
    fixed = ["enlarging", "shrinking", "resolved"] if count >= 4 else []
    drawn = rng.choice(list(FATE_P), size=count - len(fixed), p=list(FATE_P.values()))
    fates = fixed + [str(f) for f in drawn]
    return [fates[i] for i in rng.permutation(count)]


def _radius_factor(rng: np.random.Generator, fate: str) -> float:
    if fate == "resolved":
        return 0.0
    return float(np.cbrt(rng.uniform(*VOLUME_FACTOR[fate])))


def _courses(rng: np.random.Generator, sessions: int) -> list[tuple[list[float], bool]]:
    """Radius scale per session for every lesion, and whether it must be easy to see.

    Baseline lesions come first, then each interval's new lesions, the first of which is
    conspicuous so that every interval has a new lesion even on coarse grids.
    """
    baseline = int(np.clip(rng.poisson(14), 6, 30))
    courses = [([1.0] + [0.0] * (sessions - 1), False) for _ in range(baseline)]
    for k in range(1, sessions):
        present = [c for c, _ in courses if c[k - 1] > 0]
        for course, fate in zip(present, _fates(rng, len(present)), strict=True):
            course[k] = course[k - 1] * _radius_factor(rng, fate)
        for j in range(1 + rng.poisson(1.5)):
            courses.append(([0.0] * k + [1.0] + [0.0] * (sessions - k - 1), j == 0))
    return courses


def _plans(rng: np.random.Generator, sessions: int, voxel_mm: float) -> list[_Plan]:
    """Site, shape and size of every lesion."""
    plans, confluent = [], 0
    for course, conspicuous in _courses(rng, sessions):
        site = str(rng.choice(list(SITE_P), p=list(SITE_P.values())))
        kind = "irregular" if rng.random() < IRREGULAR_P[site] else "ovoid"
        if site == "periventricular" and confluent < MAX_CONFLUENT and rng.random() < CONFLUENT_P:
            kind, confluent = "confluent", confluent + 1
        diameter = (
            rng.uniform(14.0, 24.0) if kind == "confluent" else rng.lognormal(np.log(6), 0.45)
        )
        if conspicuous:
            diameter = max(diameter, 8.0, 4.0 * voxel_mm)
        largest = min(SITE_MAX_DIAMETER_MM.get(site, np.inf), MAX_DIAMETER_MM[kind])
        cap = largest / max(course)
        plans.append(_Plan(site, kind, float(np.clip(diameter, 3.0, cap)), tuple(course)))
    return plans


def _outward(anatomy: Anatomy, centre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit vector away from the ventricles at ``centre`` (Dawson's fingers point this way)."""
    ijk = np.clip(np.round(anatomy.to_voxel(centre)).astype(int), 1, np.array(anatomy.shape) - 2)
    d = anatomy.dist_ventricle
    grad = np.array(
        [d[tuple(ijk + e)] - d[tuple(ijk - e)] for e in np.eye(3, dtype=int)], dtype=float
    )
    norm = np.linalg.norm(grad)
    return grad / norm if norm > 0 else Rotation.random(rng=rng).as_matrix()[:, 0]


def _frame(long_axis: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random rotation whose first column is ``long_axis``."""
    helper = Rotation.random(rng=rng).as_matrix()[:, 0]
    second = np.cross(long_axis, helper)
    second /= np.linalg.norm(second)
    return np.stack([long_axis, second, np.cross(long_axis, second)], axis=1)


def _ovoid(centre: np.ndarray, radius: float, axes: np.ndarray, ratios: np.ndarray) -> Blob:
    """An ellipsoid with the volume of a sphere of ``radius``."""
    return Blob(centre, axes, radius * ratios / np.cbrt(np.prod(ratios)))


def _candidate(anatomy: Anatomy, site: str, rng: np.random.Generator) -> np.ndarray:
    """A random lesion centre (mm) at a site."""
    cands = anatomy.sites[site]
    return anatomy.to_mm(cands[rng.integers(len(cands))] + rng.uniform(-0.5, 0.5, 3))


def _blobs(plan: _Plan, anatomy: Anatomy, rng: np.random.Generator) -> tuple[Blob, ...]:
    """The ellipsoids of a lesion of the planned site, kind and size."""
    centre = _candidate(anatomy, plan.site, rng)
    radius = plan.diameter / 2
    if plan.site == "periventricular":
        main = _ovoid(
            centre,
            radius if plan.kind != "confluent" else 4.0,
            _frame(_outward(anatomy, centre, rng), rng),
            np.array([rng.uniform(1.5, 2.2), 1.0, rng.uniform(0.8, 1.0)]),
        )
    else:
        main = _ovoid(
            centre,
            radius,
            Rotation.random(rng=rng).as_matrix(),
            np.array([1.0, rng.uniform(0.6, 0.9), rng.uniform(0.5, 0.8)]),
        )
    if plan.kind == "ovoid":
        return (main,)
    if plan.kind == "irregular":
        extra = []
        for _ in range(rng.integers(1, 4)):
            direction = Rotation.random(rng=rng).as_matrix()
            offset = direction[:, 0] * rng.uniform(0.5, 0.9) * radius
            ratios = np.array([1.0, rng.uniform(0.7, 1.0), rng.uniform(0.6, 0.9)])
            extra.append(
                _ovoid(centre + offset, radius * rng.uniform(0.35, 0.6), direction, ratios)
            )
        return (main, *extra)
    cands = anatomy.to_mm(anatomy.sites["periventricular"].astype(float))
    near = cands[np.abs(np.linalg.norm(cands - centre, axis=1) - radius / 2) < radius / 4]
    picks = near[rng.choice(len(near), size=min(len(near), rng.integers(2, 5)), replace=False)]
    return (
        main,
        *(
            _ovoid(
                c,
                rng.uniform(3.0, 5.0),
                _frame(_outward(anatomy, c, rng), rng),
                np.array([1.5, 1.0, 0.9]),
            )
            for c in picks
        ),
    )


def _lesion(plan: _Plan, lesion_id: int, anatomy: Anatomy, rng: np.random.Generator) -> Lesion:
    """Shape and signal for a planned lesion."""
    blobs = _blobs(plan, anatomy, rng)
    size = float(np.exp(np.log(blobs[0].radii).mean()))
    rough = {"ovoid": 0.08, "irregular": 0.2, "confluent": 0.15}[plan.kind] * size
    directions = Rotation.random(WAVES, rng=rng).as_matrix()[:, :, 0]
    wavelengths = np.maximum(rng.uniform(1.0, 2.0, WAVES) * size, 3.0)
    black_hole = rng.random() < BLACK_HOLE_P
    return Lesion(
        lesion_id=lesion_id,
        site=plan.site,
        blobs=blobs,
        waves=directions * (2 * np.pi / wavelengths)[:, None],
        phases=rng.uniform(0, 2 * np.pi, WAVES),
        roughness=rough,
        flair=float(rng.uniform(1.6, 2.2)),
        t1=float(rng.uniform(0.28, 0.4) if black_hole else rng.uniform(0.55, 0.75)),
        black_hole=bool(black_hole),
        scales=plan.scales,
    )


def _fits(lesion: Lesion, placed: list[Lesion], margin: float) -> bool:
    """Whether a lesion, at its largest, stays clear of every placed lesion at theirs."""
    reach = lesion.extent() * max(lesion.scales)
    return all(
        np.linalg.norm(lesion.anchor - o.anchor) > reach + o.extent() * max(o.scales) + margin
        for o in placed
    )


def plan_lesions(anatomy: Anatomy, rng: np.random.Generator, sessions: int) -> list[Lesion]:
    """A participant's lesions over ``sessions`` sessions, ids 1.. in order of appearance."""
    margin = 2 * max(anatomy.voxel_mm, SOFT_EDGE_MM)
    placed: list[Lesion] = []
    for plan in _plans(rng, sessions, anatomy.voxel_mm):
        for _ in range(200):
            lesion = _lesion(plan, len(placed) + 1, anatomy, rng)
            if _fits(lesion, placed, margin):
                placed.append(lesion)
                break
    return placed


def rasterise(lesions: list[Lesion], session: int, anatomy: Anatomy) -> LesionMaps:
    """Lesion partial volume, ids and signal on the work grid, confined to brain tissue."""
    soft = max(anatomy.voxel_mm, SOFT_EDGE_MM)
    shape = anatomy.shape
    frac = np.zeros(shape, np.float32)
    ids = np.zeros(shape, np.int16)
    flair = np.zeros(shape, np.float32)
    t1 = np.zeros(shape, np.float32)
    for lesion in lesions:
        scale = lesion.scales[session]
        if scale == 0:
            continue
        reach = scale * lesion.extent() + soft
        lo = np.maximum(np.floor(anatomy.to_voxel(lesion.anchor - reach)).astype(int), 0)
        hi = np.minimum(np.ceil(anatomy.to_voxel(lesion.anchor + reach)).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        ijk = np.stack(
            np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi, strict=True)), indexing="ij"),
            axis=-1,
        ).reshape(-1, 3)
        dist = lesion.signed_distance(anatomy.to_mm(ijk), scale).reshape(hi - lo)
        f = np.clip(0.5 - dist / soft, 0.0, 1.0)
        wins = f > frac[box]
        frac[box][wins] = f[wins]
        ids[box][wins] = lesion.lesion_id
        flair[box][wins] = lesion.flair
        t1[box][wins] = lesion.t1
    np.minimum(frac, anatomy.parenchyma, out=frac)
    ids[frac <= 0] = 0
    return LesionMaps(fraction=frac, ids=ids, flair=flair, t1=t1)
