"""Lesion components, measurements and change classification on hand-made masks."""

from __future__ import annotations

import numpy as np
import pytest

from mdgru_bids.lesions.change import (
    ENLARGING,
    NEW,
    RESOLVED,
    SHRINKING,
    STABLE,
    ChangeThresholds,
    change_map,
    match_lesions,
)
from mdgru_bids.lesions.components import label_lesions, lesion_measures, threshold_mask
from mdgru_bids.lesions.metrics import dice

SHAPE = (40, 40, 40)


def ball(centre: tuple[float, float, float], radius: float) -> np.ndarray:
    grid = np.indices(SHAPE)
    return ((grid - np.array(centre)[:, None, None, None]) ** 2).sum(0) <= radius**2


def test_label_lesions_drops_small_components_and_numbers_in_order() -> None:
    mask = ball((10, 10, 10), 3) | ball((30, 30, 30), 1)
    mask[0, 0, 0] = True
    labels, n = label_lesions(mask, min_voxels=5)
    assert n == 2
    assert labels[0, 0, 0] == 0 and labels[10, 10, 10] == 1 and labels[30, 30, 30] == 2


def test_diagonal_neighbours_are_one_lesion() -> None:
    mask = np.zeros(SHAPE, bool)
    mask[5, 5, 5] = mask[6, 6, 6] = True
    assert label_lesions(mask)[1] == 1


def test_lesion_measures_use_the_affine() -> None:
    affine = np.diag([2.0, 1.0, 3.0, 1.0])
    affine[:3, 3] = [-10, 5, 0]
    labels, _ = label_lesions(ball((10, 12, 14), 2.5))
    prob = np.where(labels > 0, 0.8, 0.0)
    prob[10, 12, 14] = 0.95
    (row,) = lesion_measures(labels, affine, prob)
    assert row["volume_mm3"] == pytest.approx(6.0 * row["voxels"])
    assert (row["centroid_x"], row["centroid_y"], row["centroid_z"]) == pytest.approx((10, 17, 42))
    assert row["max_probability"] == pytest.approx(0.95)
    assert 0.8 < row["mean_probability"] < 0.95


def test_threshold_mask_applies_the_minimum_volume() -> None:
    prob = np.where(ball((10, 10, 10), 3), 0.9, 0.1) + np.where(ball((30, 30, 30), 1), 0.9, 0)
    mask = threshold_mask(prob, 0.5, min_volume_mm3=10.0, zooms=(1.0, 1.0, 1.0))
    assert mask[10, 10, 10] and not mask[30, 30, 30]


def test_dice() -> None:
    a = ball((20, 20, 20), 5)
    assert dice(a, a) == 1.0 and dice(a, ~a) == 0.0 and dice(a & False, a & False) == 1.0


@pytest.fixture
def two_sessions() -> tuple[np.ndarray, np.ndarray]:
    prev = np.zeros(SHAPE, np.int32)
    curr = np.zeros(SHAPE, np.int32)
    prev[ball((8, 8, 8), 3)] = 1  # stable
    curr[ball((8, 8, 9), 3)] = 1
    prev[ball((8, 30, 8), 3)] = 2  # enlarging
    curr[ball((8, 30, 8), 5)] = 2
    prev[ball((30, 8, 8), 5)] = 3  # shrinking
    curr[ball((30, 8, 8), 3)] = 3
    prev[ball((30, 30, 8), 3)] = 4  # resolved
    curr[ball((20, 20, 30), 3)] = 4  # new
    prev[ball((30, 24, 30), 3)] = 5  # 5 and 6 merge into one current lesion
    prev[ball((30, 34, 30), 3)] = 6
    curr[(ball((30, 24, 30), 3.5) | ball((30, 34, 30), 3.5) | ball((30, 29, 30), 3))] = 5
    return prev, curr


def test_matching_classifies_every_kind_of_change(two_sessions) -> None:
    prev, curr = two_sessions
    groups = match_lesions(prev, curr, 1.0, ChangeThresholds())
    by_current = {g.current: (g.previous, g.name) for g in groups}
    assert by_current[(1,)] == ((1,), "stable")
    assert by_current[(2,)] == ((2,), "enlarging")
    assert by_current[(3,)] == ((3,), "shrinking")
    assert by_current[(4,)] == ((), "new")
    assert by_current[(5,)] == ((5, 6), "enlarging")
    assert by_current[()] == ((4,), "resolved")


def test_change_map_labels_the_grown_and_lost_parts(two_sessions) -> None:
    prev, curr = two_sessions
    groups = match_lesions(prev, curr, 1.0, ChangeThresholds())
    dseg = change_map(prev, curr, groups)
    assert dseg[8, 8, 8] == STABLE
    assert dseg[8, 8, 5] == 0  # boundary jitter of a stable lesion is no change
    assert dseg[8, 30, 8] == STABLE and dseg[8, 30, 12] == ENLARGING
    assert dseg[30, 8, 8] == STABLE and dseg[30, 8, 12] == SHRINKING
    assert (dseg[ball((30, 30, 8), 3)] == RESOLVED).all()
    assert (dseg[ball((20, 20, 30), 3)] == NEW).all()
    appeared = np.isin(dseg, [NEW, ENLARGING])
    grown = (np.isin(curr, [2, 5]) & (prev == 0)).sum()  # enlarging lesion 2 and merged 5
    assert appeared.sum() == (curr == 4).sum() + grown


def test_thresholds_decide_between_stable_and_enlarging() -> None:
    prev = ball((20, 20, 20), 4).astype(np.int32)
    curr = ball((20, 20, 20), 4.5).astype(np.int32)
    grown = int(curr.sum() - prev.sum())
    loose = ChangeThresholds(min_change_mm3=grown - 1, min_change_fraction=0.0)
    strict = ChangeThresholds(min_change_mm3=grown + 1, min_change_fraction=0.0)
    assert match_lesions(prev, curr, 1.0, loose)[0].change == ENLARGING
    assert match_lesions(prev, curr, 1.0, strict)[0].change == STABLE
    assert match_lesions(curr, prev, 1.0, loose)[0].change == SHRINKING
