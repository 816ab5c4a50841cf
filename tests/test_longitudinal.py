"""Change decided from both sessions' evidence: flicker near the threshold is not change, real
change still is."""

from __future__ import annotations

import itertools

import numpy as np

from mdgru_bids.lesions.change import (
    ENLARGING,
    NEW,
    RESOLVED,
    STABLE,
    ChangeThresholds,
    match_lesions,
)
from mdgru_bids.lesions.components import label_lesions
from mdgru_bids.lesions.longitudinal import (
    CHANGE_RULES,
    Evidence,
    decide_change,
    flair_z,
    partial_volumes,
)

SHAPE = (40, 40, 40)
BRAIN = np.zeros(SHAPE, bool)
BRAIN[4:-4, 4:-4, 4:-4] = True


def _ball(centre: tuple[int, int, int], radius: float) -> np.ndarray:
    grid = np.indices(SHAPE).astype(np.float32)
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)))
    return np.clip(radius + 0.5 - distance, 0.0, 1.0)  # partial volume of a ball


def _session(
    balls: list[tuple[tuple[int, int, int], float, float]], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, probability, FLAIR z) of lesions given as (centre, radius, peak probability):
    FLAIR is bright where a lesion is, whatever the model's probability."""
    rng = np.random.default_rng(seed)
    prob = np.zeros(SHAPE, np.float32)
    flair = 100 + 5 * rng.standard_normal(SHAPE).astype(np.float32)
    for centre, radius, peak in balls:
        pv = _ball(centre, radius)
        prob = np.maximum(prob, peak * pv)
        flair += 40 * pv
    labels, _ = label_lesions(prob > 0.5, 3)
    return labels, prob, flair_z(flair, BRAIN)


def _decide(before, after):
    (p, pp, pz), (c, cp, cz) = before, after
    return decide_change(p, c, pp, cp, pz, cz, 1.0, ChangeThresholds(), Evidence())


STEADY = ((12, 12, 20), 4.0, 0.95)
NEAR_THRESHOLD = ((28, 28, 20), 3.0, 0.58)


def test_a_lesion_flickering_at_the_threshold_is_stable_not_resolved_or_new() -> None:
    first = _session([STEADY, NEAR_THRESHOLD], 0)
    flicker = ((28, 28, 20), 3.0, 0.45)  # the same lesion, probability just under 0.5
    second = _session([STEADY, flicker], 1)
    differenced = match_lesions(first[0], second[0], 1.0, ChangeThresholds())
    assert RESOLVED in {g.change for g in differenced}  # what independent masks report
    groups, dseg = _decide(first, second)
    assert {g.change for g in groups} == {STABLE}
    assert not np.isin(dseg, [NEW, ENLARGING, RESOLVED]).any()
    back, dseg = _decide(second, first)
    assert {g.change for g in back} == {STABLE} and not (dseg == NEW).any()


def test_a_real_new_lesion_is_new() -> None:
    first = _session([STEADY], 0)
    second = _session([STEADY, ((28, 28, 20), 3.0, 0.9)], 1)
    groups, dseg = _decide(first, second)
    assert sorted(g.change for g in groups) == [STABLE, NEW]
    assert (dseg == NEW).sum() == (second[0] == second[0][28, 28, 20]).sum()


def test_a_probability_jump_without_flair_change_is_not_new() -> None:
    """The model saw nothing before although the FLAIR was just as bright: no evidence."""
    first = _session([STEADY, ((28, 28, 20), 3.0, 0.1)], 0)
    second = _session([STEADY, ((28, 28, 20), 3.0, 0.9)], 1)
    groups, _ = _decide(first, second)
    assert {g.change for g in groups} == {STABLE}


def test_growth_is_enlarging_only_in_the_grown_voxels() -> None:
    first = _session([STEADY, ((28, 28, 20), 3.0, 0.95)], 0)
    second = _session([STEADY, ((28, 28, 20), 5.0, 0.95)], 1)
    groups, dseg = _decide(first, second)
    assert sorted(g.change for g in groups) == [STABLE, ENLARGING]
    grown = dseg == ENLARGING
    assert grown.any() and not (grown & (first[1] > 0.5)).any()
    enlarging = next(g for g in groups if g.change == ENLARGING)
    true_growth = _ball((28, 28, 20), 5.0).sum() - _ball((28, 28, 20), 3.0).sum()
    assert abs((enlarging.current_mm3 - enlarging.previous_mm3) / true_growth - 0.95) < 0.1


def test_three_sessions_a_dip_at_the_second_is_neither_resolved_nor_new() -> None:
    dip = ((28, 28, 20), 3.0, 0.3)
    sessions = [_session([STEADY, NEAR_THRESHOLD], 0), _session([STEADY, dip], 1),
                _session([STEADY, ((28, 28, 20), 3.0, 0.9)], 2)]  # fmt: skip
    for before, after in itertools.pairwise(sessions):
        groups, dseg = _decide(before, after)
        assert {g.change for g in groups} == {STABLE}
        assert not np.isin(dseg, [NEW, RESOLVED]).any()


def test_partial_volume_repeats_where_voxel_counts_do_not() -> None:
    """A ball of 4.3 voxels' radius at two sub-voxel offsets: the thresholded counts differ,
    the probability sums do not."""
    volumes, counts = [], []
    for centre in ((20, 20, 20), (20.5, 20.3, 20.4)):
        pv = _ball(centre, 4.3)
        labels, _ = label_lesions(pv > 0.5)
        volumes.append(partial_volumes(labels, pv, 1.0)[1])
        counts.append(int((labels > 0).sum()))
    exact = 4 / 3 * np.pi * 4.3**3
    assert all(abs(v / exact - 1) < 0.03 for v in volumes), volumes
    assert abs(volumes[0] - volumes[1]) < 0.3 * abs(counts[0] - counts[1]), (volumes, counts)


def test_the_difference_rule_is_plain_differencing() -> None:
    first = _session([STEADY, NEAR_THRESHOLD], 0)
    second = _session([STEADY, ((28, 28, 20), 3.0, 0.45), ((12, 28, 20), 3.0, 0.9)], 1)
    (p, pp, pz), (c, cp, cz) = first, second
    groups, dseg = decide_change(
        p, c, pp, cp, pz, cz, 1.0, ChangeThresholds(), CHANGE_RULES["difference"]
    )
    plain = match_lesions(p, c, 1.0, ChangeThresholds())
    assert [g.change for g in groups] == [g.change for g in plain]
    assert sorted(g.change for g in groups) == [STABLE, NEW, RESOLVED]
    assert (dseg == RESOLVED).any() and (dseg == NEW).any()
