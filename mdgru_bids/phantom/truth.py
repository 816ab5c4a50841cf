"""Ground truth on a session's FLAIR grid, and each lesion's fate between sessions.

Fates use the change labels of DESIGN.md (stable, new, enlarging, shrinking, resolved) and
are decided from the id maps themselves, so the table always agrees with the masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from mdgru_bids.phantom.contrast import normal_appearing

ENLARGING_RATIO = 1.5  # volume after/before >= this: enlarging; <= 1/this: shrinking


@dataclass(frozen=True, eq=False)
class Truth:
    """Truth maps on a FLAIR grid."""

    lesion_ids: np.ndarray  # int16, persistent lesion id, 0 = background
    probseg: dict[str, np.ndarray]  # GM, WM, CSF partial volumes (lesion excluded)
    brain: np.ndarray  # bool intracranial mask

    @property
    def lesion_mask(self) -> np.ndarray:
        return self.lesion_ids > 0


def make_truth(
    fraction: np.ndarray, ids: np.ndarray, gm: np.ndarray, wm: np.ndarray, csf: np.ndarray
) -> Truth:
    """Threshold resampled lesion fractions at 0.5 and give every lesion voxel an id."""
    gm_n, wm_n = normal_appearing(gm, wm, fraction)
    return Truth(
        lesion_ids=lesion_ids(fraction, ids),
        probseg={"GM": gm_n, "WM": wm_n, "CSF": np.clip(csf, 0.0, 1.0)},
        brain=(gm + wm + csf) >= 0.5,
    )


def lesion_ids(fraction: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The id map of resampled lesions: voxels of partial volume >= 0.5, each with the id
    sampled there or, where sampling fell just outside every lesion, the nearest one's."""
    mask = fraction >= 0.5
    ids = np.where(mask, ids, 0).astype(np.int16)
    missing = mask & (ids == 0)
    if missing.any() and ids.any():
        nearest = ndi.distance_transform_edt(ids == 0, return_distances=False, return_indices=True)
        ids[missing] = ids[tuple(ix[missing] for ix in nearest)]
    return ids


def lesion_volumes(ids: np.ndarray, voxel_volume: float) -> dict[int, float]:
    """Volume in mm^3 of every lesion id present in an id map."""
    counts = np.bincount(ids.ravel().astype(np.int64))
    return {int(i): float(c) * voxel_volume for i, c in enumerate(counts) if i > 0 and c > 0}


def classify(before: float, after: float) -> str:
    """A lesion's fate from its volumes at two consecutive sessions (not both zero)."""
    if before == 0:
        return "new"
    if after == 0:
        return "resolved"
    ratio = after / before
    if ratio >= ENLARGING_RATIO:
        return "enlarging"
    if ratio <= 1 / ENLARGING_RATIO:
        return "shrinking"
    return "stable"


def fate_rows(volumes: list[dict[int, float]], sessions: list[str]) -> list[dict[str, object]]:
    """One row per lesion present at either of two consecutive sessions."""
    rows = []
    for k in range(1, len(volumes)):
        before, after = volumes[k - 1], volumes[k]
        for lesion_id in sorted(before.keys() | after.keys()):
            vb, va = before.get(lesion_id, 0.0), after.get(lesion_id, 0.0)
            rows.append(
                {
                    "lesion_id": lesion_id,
                    "session_before": sessions[k - 1],
                    "session_after": sessions[k],
                    "volume_before_mm3": round(vb, 3),
                    "volume_after_mm3": round(va, 3),
                    "fate": classify(vb, va),
                }
            )
    return rows
