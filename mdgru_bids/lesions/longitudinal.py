"""Change between sessions decided from both sessions' evidence, and volumes that repeat.

Differencing two independently thresholded masks makes every lesion whose probability hovers
near the threshold flicker: a rescan with nothing changed shows new and resolved lesions.
Here a matched group of lesions (change.match_lesions, in one subject space) is only called

* new when the earlier session gives clear evidence the lesion was not there: its lesion
  probability stays below ``Evidence.absent`` over the lesion's voxels (hysteresis: lesions
  are drawn at the lesion threshold, absence needs the much lower one) and the FLAIR rose
  there by at least ``Evidence.min_flair_change`` (robust z units), and by as much more than
  it rose in the lesion-free tissue around it (``RING_REACH``): a rescan's smooth bias field,
  or an edge blurred differently by another slice thickness, brightens the surroundings too;
* resolved with the symmetric evidence (probability now below ``absent``, FLAIR fell);
  the FLAIR of two sessions is compared at the coarser session's resolution (the finer one
  blurred to match, ``matched_z``), so a small lesion blurred away by thick slices did not
  "fall";
* enlarging (shrinking) when its partial volume grew (shrank) by the ChangeThresholds and the
  grown (lost) voxels carry the same evidence;
* stable otherwise — a lesion seen in one session and only hinted at in the other is the same
  lesion, not a new one.

All sessions of a subject are decided together (``subject_lesions``): a lesion seen at an
earlier session is never new, one seen again later has not resolved; and, jointly segmented,
every session's probability outside the lesions that changed is the mean of all sessions'
(finer sessions weigh more, ``session_weights``), so an unchanged lesion has one extent and
one volume however each session was acquired.

Volumes are partial volumes: the sum of the lesion probability over the lesion's voxels and
their immediate neighbours, times the voxel volume, on the one subject-space grid (a group:
over the same footprint in both sessions); never a count of thresholded voxels, which changes
with every grid even when nothing changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.segmentation import expand_labels

from mdgru_bids.lesions.change import (
    ENLARGING,
    NEW,
    RESOLVED,
    SHRINKING,
    STABLE,
    ChangeThresholds,
    LesionGroup,
    change_map,
    match_lesions,
)
from mdgru_bids.lesions.components import STRUCTURE, label_lesions

#: How far (voxels) a lesion's partial volume reaches beyond its thresholded voxels.
PARTIAL_VOLUME_REACH = 1
#: The lesion-free tissue whose FLAIR change a lesion's is measured against: voxels more than
#: PARTIAL_VOLUME_REACH and at most RING_REACH voxels from the group's lesions.
RING_REACH = 3


@dataclass(frozen=True)
class Evidence:
    """What it takes to say a lesion was not there (or is no longer)."""

    absent: float = 0.2  # lesion probability below which a voxel is clearly not lesion
    absent_quantile: float = 0.9  # this share of the lesion's voxels must be below ``absent``
    min_flair_change: float = 1.0  # mean FLAIR change over the changed voxels, robust z,
    # both as it is and beyond the mean change of the lesion-free tissue around them


#: Evidence per --change-rule: differencing asks for none (every voxel counts as absent).
CHANGE_RULES = {
    "evidence": Evidence(),
    "difference": Evidence(absent=np.inf, absent_quantile=0.0, min_flair_change=-np.inf),
}


def flair_z(
    flair: np.ndarray, brain: np.ndarray, reference: np.ndarray | None = None
) -> np.ndarray:
    """(FLAIR - median) / (1.4826 MAD) inside the brain, 0 outside: one scale per session, so
    FLAIR of two sessions can be compared after bias correction. Median and MAD come from
    ``reference`` (default: the brain)."""
    values = flair[brain if reference is None else reference]
    if values.size == 0:
        raise ValueError("the brain mask is empty")
    median = float(np.median(values))
    mad = 1.4826 * float(np.median(np.abs(values - median))) or 1.0
    return np.where(brain, (flair - median) / mad, 0.0).astype(np.float32)


def partial_volumes(labels: np.ndarray, prob: np.ndarray, voxel_mm3: float) -> np.ndarray:
    """Partial volume (mm³) of every lesion id 0..max: probability summed over the lesion grown
    by PARTIAL_VOLUME_REACH voxels (index 0 is unused)."""
    grown = expand_labels(labels, PARTIAL_VOLUME_REACH)
    n = int(labels.max())
    return np.bincount(grown.ravel(), weights=prob.ravel(), minlength=n + 1)[: n + 1] * voxel_mm3


def decide_change(
    previous: np.ndarray,
    current: np.ndarray,
    previous_prob: np.ndarray,
    current_prob: np.ndarray,
    previous_z: np.ndarray,
    current_z: np.ndarray,
    voxel_mm3: float,
    thresholds: ChangeThresholds,
    evidence: Evidence,
    earlier: np.ndarray | None = None,
    later: np.ndarray | None = None,
    brains: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[list[LesionGroup], np.ndarray]:
    """Groups of the two sessions' lesion labels classified with evidence from both sessions,
    and the voxel change map (change.py labels); all arrays on one subject-space grid.

    ``earlier`` / ``later``: lesion voxels of the sessions before ``previous`` / after
    ``current``: a lesion seen before is not new, one seen again later has not resolved.
    ``brains``: the two sessions' brain masks; a session says nothing outside its own, so a
    lesion at the edge of one brain mask that the other mask leaves out has not resolved."""
    groups = match_lesions(previous, current, voxel_mm3, thresholds)
    rise = current_z - previous_z
    absent_before = previous_prob < evidence.absent
    absent_now = current_prob < evidence.absent
    if brains is not None:
        absent_before &= brains[0]
        absent_now &= brains[1]
    boxes = _boxes(previous, current)
    decided = []
    for g in groups:
        box = boxes(g)
        was = np.isin(previous[box], g.previous)
        now = np.isin(current[box], g.current)
        others = ((previous[box] > 0) & ~was) | ((current[box] > 0) & ~now)
        grown = ndimage.binary_dilation(was | now, STRUCTURE, PARTIAL_VOLUME_REACH)
        footprint = grown & ~others  # the same voxels measured in both sessions
        ring = ndimage.binary_dilation(was | now, STRUCTURE, RING_REACH) & ~grown
        ring &= (previous[box] == 0) & (current[box] == 0)
        if brains is not None:
            ring &= brains[0][box] & brains[1][box]
        around = float(rise[box][ring].mean()) if ring.any() else 0.0
        before = float(previous_prob[box][footprint].sum()) * voxel_mm3
        after = float(current_prob[box][footprint].sum()) * voxel_mm3
        change = _decide(g, before, after, was, now, rise[box], around, absent_before[box],
                         absent_now[box], thresholds, evidence)  # fmt: skip
        if (change == NEW and earlier is not None and earlier[box][now].any()) or (
            change == RESOLVED and later is not None and later[box][was].any()
        ):
            change = STABLE
        decided.append(LesionGroup(g.previous, g.current, before, after, change))
    return decided, change_map(previous, current, decided)


def _decide(
    g: LesionGroup,
    before: float,
    after: float,
    was: np.ndarray,
    now: np.ndarray,
    rise: np.ndarray,
    around: float,
    absent_before: np.ndarray,
    absent_now: np.ndarray,
    thresholds: ChangeThresholds,
    evidence: Evidence,
) -> int:
    """The group's class: a change only where both sessions' evidence agrees. All arrays are
    cut to the group's box; ``around``: the FLAIR rise of the group's surroundings."""

    def clearly_absent(absent: np.ndarray, voxels: np.ndarray) -> bool:
        return float(np.mean(absent[voxels])) >= evidence.absent_quantile

    def flair_moved(voxels: np.ndarray, sign: float) -> bool:
        if not voxels.any():
            return False
        moved = sign * float(rise[voxels].mean())
        return min(moved, moved - sign * around) >= evidence.min_flair_change

    if not g.previous:
        return NEW if clearly_absent(absent_before, now) and flair_moved(now, 1.0) else STABLE
    if not g.current:
        return RESOLVED if clearly_absent(absent_now, was) and flair_moved(was, -1.0) else STABLE
    enough = max(thresholds.min_change_mm3, thresholds.min_change_fraction * before)
    if after - before >= enough and flair_moved(now & absent_before, 1.0):
        return ENLARGING
    if before - after >= enough and flair_moved(was & absent_now, -1.0):
        return SHRINKING
    return STABLE


def _boxes(previous: np.ndarray, current: np.ndarray):
    """A function giving the bounding box (grown by the ring's reach) of a group."""
    prev_obj = ndimage.find_objects(previous)
    curr_obj = ndimage.find_objects(current)
    reach = RING_REACH + 1

    def box(g: LesionGroup) -> tuple[slice, ...]:
        slices = [prev_obj[i - 1] for i in g.previous] + [curr_obj[i - 1] for i in g.current]
        return tuple(
            slice(max(0, min(s[a].start for s in slices) - reach),
                  min(previous.shape[a], max(s[a].stop for s in slices) + reach))
            for a in range(previous.ndim)
        )  # fmt: skip

    return box


@dataclass
class SessionMaps:
    """One session in subject space: its lesion probability, FLAIR robust z-score, brain mask
    and the resolution it was acquired at (mm along each subject-space axis)."""

    prob: np.ndarray
    z: np.ndarray
    brain: np.ndarray
    resolution: tuple[float, float, float] = (1.0, 1.0, 1.0)


def acquired_resolution(native_affine: np.ndarray, subject_affine: np.ndarray) -> np.ndarray:
    """A session's voxel size (mm) along each subject-space axis, from its native grid: 3 mm
    slices stay 3 mm along whichever subject axis they lie (head motion between sessions is
    small against this and is ignored)."""
    native = native_affine[:3, :3]
    subject = subject_affine[:3, :3] / np.linalg.norm(subject_affine[:3, :3], axis=0)
    steps = np.abs(subject.T @ native)  # mm along each subject axis per native voxel step
    return np.sqrt((steps**2).sum(axis=1))


def matched_z(
    sessions: list[SessionMaps], voxel_size: tuple[float, float, float]
) -> list[np.ndarray]:
    """Every session's FLAIR z-score as if all were acquired at the coarsest resolution among
    them, so that FLAIR rises and falls are compared at one resolution: a finer session is
    blurred by a Gaussian that brings its acquisition to the coarser one's (a thick slice's
    boxcar plus its linear interpolation to the subject grid: σ ≈ half the slice thickness),
    inside the brain only, and standardised again. Sessions of one resolution are untouched."""
    coarsest = np.max([s.resolution for s in sessions], axis=0)
    out = []
    for s in sessions:
        sigma_mm = np.sqrt(np.maximum(coarsest**2 - np.asarray(s.resolution) ** 2, 0.0)) / 2
        if not sigma_mm.any():
            out.append(s.z)
            continue
        sigma = sigma_mm / np.asarray(voxel_size)
        inside = s.brain.astype(np.float32)
        blurred = ndimage.gaussian_filter(s.z * inside, sigma)
        weight = ndimage.gaussian_filter(inside, sigma)
        out.append(flair_z(np.divide(blurred, weight, out=blurred, where=weight > 0), s.brain))
    return out


def session_weights(resolutions: list[tuple[float, float, float]]) -> np.ndarray:
    """Each session's weight in the joint probability: 1 / (acquired voxel volume)², so 1 mm
    counts 9 times as much as 3 mm slices. Thick slices blur a lesion's probability by about
    the square of the slice thickness; equal weights lost the small lesions of c07's 1 mm
    session to its 3 mm rescan (benchmarks/joint_rules.py)."""
    volume = np.prod(np.asarray(resolutions, dtype=float), axis=1)
    return 1.0 / volume**2


@dataclass
class LongitudinalLesions:
    """Every session's lesion probability and labels, and the change between consecutive
    sessions (groups, voxel map), all on the subject-space grid."""

    prob: list[np.ndarray]
    labels: list[np.ndarray]
    changes: list[tuple[list[LesionGroup], np.ndarray]]


def subject_lesions(
    sessions: list[SessionMaps],
    voxel_size: tuple[float, float, float],
    threshold: float,
    min_voxels: int,
    thresholds: ChangeThresholds,
    evidence: Evidence,
    consistent: bool = True,
) -> LongitudinalLesions:
    """Lesions of all of a subject's sessions and their change.

    Consistent (the default): where no change is found, every session's probability is the
    mean of all sessions' probabilities (``session_weights``), so a lesion that did not change
    has one answer at every session (its volume repeats) and each session's noise averages out;
    in the footprint of a lesion group that changed, each session keeps its own probability.
    Change is decided from the independent answers, then again from the consistent ones.
    """
    probs = [s.prob for s in sessions]
    labels = [label_lesions(p > threshold, min_voxels)[0] for p in probs]
    changes = _changes(labels, probs, sessions, voxel_size, thresholds, evidence)
    if consistent and len(sessions) > 1:
        changed = _changed_footprint(labels, changes)
        mean = np.average(probs, axis=0, weights=session_weights([s.resolution for s in sessions]))
        probs = [np.where(changed, p, mean).astype(np.float32) for p in probs]
        labels = [label_lesions(p > threshold, min_voxels)[0] for p in probs]
        changes = _changes(labels, probs, sessions, voxel_size, thresholds, evidence)
    return LongitudinalLesions(probs, labels, changes)


def _changes(
    labels: list[np.ndarray],
    probs: list[np.ndarray],
    sessions: list[SessionMaps],
    voxel_size: tuple[float, float, float],
    thresholds: ChangeThresholds,
    evidence: Evidence,
) -> list[tuple[list[LesionGroup], np.ndarray]]:
    """decide_change for every consecutive pair (FLAIR at the pair's matched resolution),
    knowing the lesions of all other sessions."""
    present = [lab > 0 for lab in labels]
    voxel_mm3 = float(np.prod(voxel_size))
    out = []
    for k in range(1, len(labels)):
        earlier = np.logical_or.reduce(present[: k - 1]) if k > 1 else None
        later = np.logical_or.reduce(present[k + 1 :]) if k + 1 < len(labels) else None
        before_z, after_z = matched_z(sessions[k - 1 : k + 1], voxel_size)
        out.append(decide_change(
            labels[k - 1], labels[k], probs[k - 1], probs[k], before_z, after_z,
            voxel_mm3, thresholds, evidence, earlier, later,
            (sessions[k - 1].brain, sessions[k].brain),
        ))  # fmt: skip
    return out


def _changed_footprint(
    labels: list[np.ndarray], changes: list[tuple[list[LesionGroup], np.ndarray]]
) -> np.ndarray:
    """Voxels of every lesion group found changed between any two consecutive sessions, grown
    by the partial-volume reach and one more voxel."""
    changed = np.zeros(labels[0].shape, dtype=bool)
    for k, (groups, _) in enumerate(changes, start=1):
        moved = [g for g in groups if g.change != STABLE]
        before = [i for g in moved for i in g.previous]
        after = [i for g in moved for i in g.current]
        changed |= np.isin(labels[k - 1], before) | np.isin(labels[k], after)
    return ndimage.binary_dilation(changed, STRUCTURE, PARTIAL_VOLUME_REACH + 1)
