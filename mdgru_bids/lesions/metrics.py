"""Segmentation accuracy: voxel overlap, volume, boundary distance and lesion-wise detection.

Plain functions on arrays, so that the evaluation command and the tests share one definition.
Undefined scores are NaN rather than a convention (an empty truth has no recall, two empty
masks have no boundary distance), and summaries skip them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mdgru_bids.lesions.components import label_lesions

#: Face neighbours: a voxel is on a mask's boundary when one of these lies outside the mask.
FACES = ndimage.generate_binary_structure(3, 1)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Sørensen–Dice coefficient of two binary masks; 1.0 when both are empty."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def absolute_volume_difference(prediction: np.ndarray, truth: np.ndarray) -> float:
    """|V_pred − V_truth| as a percentage of V_truth (the WMH challenge's AVD); NaN for an
    empty truth, where no relative error exists."""
    truth_voxels = int(np.count_nonzero(truth))
    if truth_voxels == 0:
        return float("nan")
    return 100.0 * abs(int(np.count_nonzero(prediction)) - truth_voxels) / truth_voxels


def hd95(prediction: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]) -> float:
    """95th-percentile Hausdorff distance in mm between the boundaries of two masks.

    As in the WMH segmentation challenge (Kuijf et al., IEEE TMI 2019): the larger of the two
    directed 95th percentiles of boundary-voxel to nearest-boundary-voxel distances, so a few
    stray voxels do not dominate as they do the plain Hausdorff distance. ``spacing`` is the
    voxel size in mm per axis (voxel axes are taken as orthogonal, as in NIfTI). NaN when
    either mask is empty: no distance exists to nothing.
    """
    a, b = np.asarray(prediction, dtype=bool), np.asarray(truth, dtype=bool)
    if not a.any() or not b.any():
        return float("nan")
    box = bounding_box(a | b)
    a, b = _boundary(a[box]), _boundary(b[box])
    a_to_b = ndimage.distance_transform_edt(~b, sampling=spacing)[a]
    b_to_a = ndimage.distance_transform_edt(~a, sampling=spacing)[b]
    return float(max(np.percentile(a_to_b, 95), np.percentile(b_to_a, 95)))


def bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box holding a non-empty mask: distances between voxels inside it are
    all that hd95 needs (a lesion's box is far smaller than the head), and inference tiles
    the brain's box."""
    where = np.argwhere(mask)
    return tuple(slice(lo, hi + 1) for lo, hi in zip(where.min(0), where.max(0), strict=True))


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Mask voxels with a face neighbour outside the mask (or outside the array)."""
    return mask & ~ndimage.binary_erosion(mask, structure=FACES, border_value=0)


@dataclass(frozen=True)
class DetectionRule:
    """When a lesion counts as detected (Commowick et al., Sci Rep 8:13650, 2018).

    A reference lesion is detected when the other segmentation's lesions cover more than
    ``alpha`` of it, and, going through those lesions from the largest overlap down until
    they make up ``gamma`` of the covered part, none lies more than ``beta`` outside every
    reference lesion (a blob that merely touches a lesion does not detect it). Lesions of
    ``min_volume_mm3`` or less are left out of both masks.

    The defaults are those of Anima's animaSegPerfAnalyzer (animaSegPerfApp.cxx: minimum
    volume 3 mm³, overlap ratio 0.1, false-positive ratio 0.7, its moderator 0.65), the tool
    that scored MSSEG-2016 and MSSEG-2 (new lesions, 2021). Lesions here are 26-connected
    components, as everywhere in mdgru-bids (Anima labels face-connected components).
    """

    alpha: float = 0.1
    beta: float = 0.7
    gamma: float = 0.65
    min_volume_mm3: float = 3.0


#: Any overlap detects, whatever lies outside: the simplest lesion-wise rule.
ANY_OVERLAP = DetectionRule(alpha=0.0, beta=1.0, gamma=1.0, min_volume_mm3=0.0)


@dataclass(frozen=True)
class Detection:
    """Lesion-wise counts for one prediction against its truth."""

    truth_lesions: int
    predicted_lesions: int
    detected: int  # truth lesions the prediction detects
    correct: int  # predicted lesions that the truth confirms (the same rule, roles swapped)

    @property
    def recall(self) -> float:
        """Lesion-wise sensitivity; NaN without truth lesions."""
        return self.detected / self.truth_lesions if self.truth_lesions else float("nan")

    @property
    def precision(self) -> float:
        """Lesion-wise positive predictive value; NaN without predicted lesions."""
        return self.correct / self.predicted_lesions if self.predicted_lesions else float("nan")

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall; 0 when both are 0, NaN when either is."""
        p, r = self.precision, self.recall
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def lesion_detection(
    prediction: np.ndarray, truth: np.ndarray, voxel_mm3: float, rule: DetectionRule
) -> Detection:
    """Lesion-wise detection of ``truth``'s lesions by ``prediction``'s, and vice versa."""
    overlap = _overlap(prediction, truth, voxel_mm3, rule)
    return Detection(
        truth_lesions=len(overlap) - 1,
        predicted_lesions=overlap.shape[1] - 1,
        detected=int(_detected(overlap, rule).sum()),
        correct=int(_detected(overlap.T, rule).sum()),
    )


def _overlap(
    prediction: np.ndarray, truth: np.ndarray, voxel_mm3: float, rule: DetectionRule
) -> np.ndarray:
    """Voxels shared by truth lesion i and predicted lesion j (row and column 0: background),
    lesions of ``rule.min_volume_mm3`` or less left out."""
    min_voxels = int(np.floor(rule.min_volume_mm3 / voxel_mm3)) + 1  # strictly above the minimum
    t_labels, n_t = label_lesions(truth, min_voxels)
    p_labels, n_p = label_lesions(prediction, min_voxels)
    pairs = t_labels.ravel().astype(np.int64) * (n_p + 1) + p_labels.ravel()
    return np.bincount(pairs, minlength=(n_t + 1) * (n_p + 1)).reshape(n_t + 1, n_p + 1)


def _detected(overlap: np.ndarray, rule: DetectionRule) -> np.ndarray:
    """Which reference lesions (rows 1..) the other side's lesions (columns 1..) detect.

    ``overlap[i, j]`` counts voxels in reference lesion i and other lesion j; row and column
    0 are the backgrounds.
    """
    other = overlap[:, 1:]
    outside = other[0] / np.maximum(other.sum(axis=0), 1)  # share of each lesion off the reference
    found = np.zeros(len(overlap) - 1, dtype=bool)
    for i, row in enumerate(other[1:]):
        covered = int(row.sum())
        if covered <= rule.alpha * int(overlap[i + 1].sum()):
            continue
        share = 0.0
        found[i] = True
        for j in np.argsort(-row, kind="stable")[: np.count_nonzero(row)]:
            if outside[j] > rule.beta:
                found[i] = False
                break
            share += row[j] / covered
            if share >= rule.gamma:
                break
    return found


#: Truth lesion sizes (mm³) that detection is broken down by: small lesions are where
#: models and thresholds differ most.
SIZE_BINS_MM3 = ((10.0, 30.0), (30.0, 100.0), (100.0, float("inf")))


def recall_by_size(
    prediction: np.ndarray,
    truth: np.ndarray,
    voxel_mm3: float,
    rule: DetectionRule,
    bins: tuple[tuple[float, float], ...] = SIZE_BINS_MM3,
) -> list[tuple[int, int]]:
    """(detected, total) truth lesions of each size bin [lo, hi) mm³, by ``rule``."""
    overlap = _overlap(prediction, truth, voxel_mm3, rule)
    found = _detected(overlap, rule)
    sizes = overlap[1:].sum(axis=1) * voxel_mm3
    in_bins = [(sizes >= lo) & (sizes < hi) for lo, hi in bins]
    return [(int(found[b].sum()), int(b.sum())) for b in in_bins]
