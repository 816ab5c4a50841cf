"""Lesions as connected components of a mask, and their per-lesion measurements."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: The default lesion threshold and smallest lesion: a model card's unless it says otherwise.
LESION_THRESHOLD = 0.5
MIN_LESION_MM3 = 10.0
#: 26-connectivity: voxels touching at a corner belong to one lesion (as in LST and SAMSEG).
STRUCTURE = np.ones((3, 3, 3), dtype=bool)


def label_lesions(mask: np.ndarray, min_voxels: int = 1) -> tuple[np.ndarray, int]:
    """Connected components of ``mask`` with at least ``min_voxels`` voxels, numbered 1..n
    in order of their first voxel (so numbering is deterministic)."""
    labels, n = ndimage.label(np.asarray(mask, dtype=bool), structure=STRUCTURE)
    if n == 0:
        return labels.astype(np.int32), 0
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_voxels
    keep[0] = False
    relabel = np.zeros(n + 1, dtype=np.int32)
    relabel[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return relabel[labels], int(keep.sum())


def min_voxels(min_volume_mm3: float, voxel_mm3: float) -> int:
    """The fewest voxels a lesion of at least ``min_volume_mm3`` has on this grid (at least 1)."""
    return max(1, int(np.ceil(min_volume_mm3 / voxel_mm3)))


def threshold_mask(
    prob: np.ndarray, threshold: float, min_volume_mm3: float, zooms: tuple[float, ...]
) -> np.ndarray:
    """Lesion mask from a probability map: above ``threshold``, components ≥ the minimum size."""
    labels, _ = label_lesions(prob > threshold, min_voxels(min_volume_mm3, float(np.prod(zooms))))
    return labels > 0


def lesion_measures(
    labels: np.ndarray, affine: np.ndarray, prob: np.ndarray | None = None
) -> list[dict]:
    """One row per lesion present: id, voxel count, volume (mm³), centroid in scanner mm, and
    the maximum and mean probability when a probability map is given.

    Ids need not be consecutive (a label map resampled to a coarser grid may lose some)."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    n = ids.size
    if n == 0:
        return []
    voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
    counts = np.bincount(labels.ravel())[ids]
    centroids = np.array(ndimage.center_of_mass(np.ones_like(labels), labels, ids)).reshape(n, 3)
    scanner = centroids @ affine[:3, :3].T + affine[:3, 3]
    rows = []
    for i, lesion in enumerate(ids):
        row = {
            "lesion_id": int(lesion),
            "voxels": int(counts[i]),
            "volume_mm3": float(counts[i] * voxel_mm3),
            "centroid_x": float(scanner[i, 0]),
            "centroid_y": float(scanner[i, 1]),
            "centroid_z": float(scanner[i, 2]),
        }
        rows.append(row)
    if prob is not None:
        maxima = ndimage.maximum(prob, labels, ids)
        means = ndimage.mean(prob, labels, ids)
        for row, mx, mn in zip(rows, np.atleast_1d(maxima), np.atleast_1d(means), strict=True):
            row["max_probability"] = float(mx)
            row["mean_probability"] = float(mn)
    return rows
