"""Lesion change between two sessions in one space: voxel- and lesion-level.

Lesions are matched by overlap. Lesions of both sessions that overlap, directly or through a
chain (a lesion that split, or two that merged), form one *group*; a group's class follows
from its total volume before and after:

* new — no lesion before; resolved — no lesion after;
* enlarging / shrinking — the volume changed by at least ``min_change_mm3`` and by at least
  ``min_change_fraction`` of the earlier volume; stable otherwise.

The voxel map (DESIGN.md labels): 1 stable lesion (lesion voxels now, outside the grown part of
an enlarging lesion), 2 new lesion, 3 enlarging (the grown part), 4 shrinking (the lost part),
5 resolved lesion. Boundary jitter of a stable lesion is not change: its lost voxels are 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

STABLE, NEW, ENLARGING, SHRINKING, RESOLVED = 1, 2, 3, 4, 5
CHANGE_LABELS = {
    STABLE: "stable",
    NEW: "new",
    ENLARGING: "enlarging",
    SHRINKING: "shrinking",
    RESOLVED: "resolved",
}


@dataclass(frozen=True)
class ChangeThresholds:
    """When a matched lesion counts as enlarging or shrinking (both conditions must hold)."""

    min_change_mm3: float = 15.0
    min_change_fraction: float = 0.25


@dataclass(frozen=True)
class LesionGroup:
    previous: tuple[int, ...]
    current: tuple[int, ...]
    previous_mm3: float
    current_mm3: float
    change: int

    @property
    def name(self) -> str:
        return CHANGE_LABELS[self.change]


def match_lesions(
    previous: np.ndarray, current: np.ndarray, voxel_mm3: float, thresholds: ChangeThresholds
) -> list[LesionGroup]:
    """Groups of overlapping lesions of two label maps (0 = background), classified."""
    n_prev, n_curr = int(previous.max()), int(current.max())
    both = (previous > 0) & (current > 0)
    pairs = np.unique(np.stack([previous[both], current[both]]), axis=1)
    # Bipartite overlap graph: nodes 0..n_prev for previous lesions, then the current ones.
    n = n_prev + n_curr + 1
    graph = coo_matrix((np.ones(pairs.shape[1]), (pairs[0], pairs[1] + n_prev)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    prev_mm3 = np.bincount(previous.ravel(), minlength=n_prev + 1) * voxel_mm3
    curr_mm3 = np.bincount(current.ravel(), minlength=n_curr + 1) * voxel_mm3
    members: dict[int, tuple[list[int], list[int]]] = {}
    for lesion in range(1, n_prev + 1):
        members.setdefault(component[lesion], ([], []))[0].append(lesion)
    for lesion in range(1, n_curr + 1):
        members.setdefault(component[lesion + n_prev], ([], []))[1].append(lesion)
    groups = []
    for prev_ids, curr_ids in members.values():
        before = float(prev_mm3[prev_ids].sum())
        after = float(curr_mm3[curr_ids].sum())
        groups.append(
            LesionGroup(
                tuple(prev_ids),
                tuple(curr_ids),
                before,
                after,
                _classify(before, after, bool(prev_ids), bool(curr_ids), thresholds),
            )
        )
    return sorted(groups, key=lambda g: (g.current or (np.inf,), g.previous))


def _classify(before: float, after: float, had: bool, has: bool, t: ChangeThresholds) -> int:
    if not had:
        return NEW
    if not has:
        return RESOLVED
    enough = max(t.min_change_mm3, t.min_change_fraction * before)
    if after - before >= enough:
        return ENLARGING
    if before - after >= enough:
        return SHRINKING
    return STABLE


def change_map(previous: np.ndarray, current: np.ndarray, groups: list[LesionGroup]) -> np.ndarray:
    """The voxel-level change labels (uint8) implied by classified lesion groups: the grown
    part of an enlarging group is its voxels outside the earlier lesions, the lost part of a
    shrinking one its earlier voxels outside the current lesions."""
    curr_class = np.zeros(int(current.max()) + 1, dtype=np.uint8)
    prev_class = np.zeros(int(previous.max()) + 1, dtype=np.uint8)
    for g in groups:
        curr_class[list(g.current)] = g.change
        prev_class[list(g.previous)] = g.change
    now = curr_class[current]
    before = prev_class[previous]
    out = np.zeros(current.shape, dtype=np.uint8)
    out[now > 0] = STABLE
    out[now == NEW] = NEW
    out[(now == ENLARGING) & (previous == 0)] = ENLARGING
    lost = (current == 0) & (previous > 0)
    out[lost & (before == SHRINKING)] = SHRINKING
    out[lost & (before == RESOLVED)] = RESOLVED
    return out
