"""Change decided from both sessions' evidence: flicker near the threshold is not change, real
change still is."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pandas as pd
from nipype.utils.filemanip import ensure_list
from scipy import ndimage

from mdgru_bids.interfaces.lesions import SubjectLesions
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
    SessionMaps,
    acquired_resolution,
    decide_change,
    flair_z,
    partial_volumes,
    subject_lesions,
)

SHAPE = (40, 40, 40)
BRAIN = np.zeros(SHAPE, bool)
BRAIN[4:-4, 4:-4, 4:-4] = True


def _ball(centre: tuple[int, int, int], radius: float) -> np.ndarray:
    grid = np.indices(SHAPE).astype(np.float32)
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)))
    return np.clip(radius + 0.5 - distance, 0.0, 1.0)  # partial volume of a ball


#: Two tissues in 8-voxel blocks: the brain's spread of intensities is tissue contrast, as in
#: a real FLAIR, not only noise (so blurring does not change the z scale much).
TISSUE = (np.indices(SHAPE) // 8).sum(axis=0) % 2


def _session(
    balls: list[tuple[tuple[int, int, int], float, float]], seed: int, slice_mm: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, probability, FLAIR z) of lesions given as (centre, radius, peak probability):
    FLAIR is bright where a lesion is, whatever the model's probability. ``slice_mm`` > 1:
    the FLAIR acquired in slices that thick along the last axis (boxcar profile) and
    interpolated linearly back to the 1 mm grid."""
    rng = np.random.default_rng(seed)
    prob = np.zeros(SHAPE, np.float32)
    flair = 100 + 10 * TISSUE + 5 * rng.standard_normal(SHAPE).astype(np.float32)
    for centre, radius, peak in balls:
        pv = _ball(centre, radius)
        prob = np.maximum(prob, peak * pv)
        flair += 40 * pv
    if slice_mm > 1:
        slices = ndimage.uniform_filter1d(flair, slice_mm, axis=2)[:, :, 1::slice_mm]
        grid = np.indices(SHAPE).astype(np.float32)
        grid[2] = (grid[2] - 1) / slice_mm
        flair = ndimage.map_coordinates(slices, grid, order=1, mode="nearest")
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


def test_a_brighter_neighbourhood_is_no_evidence_of_growth() -> None:
    """A rescan's smooth bias field brightens a lesion's edge and the tissue around it alike;
    the network draws the lesion larger. The FLAIR rose in the 'grown' voxels, but no more
    than around them: stable. The same rise confined to the grown voxels is growth."""
    first = _session([STEADY, ((28, 28, 20), 3.0, 0.95)], 0)
    _, prob, z = _session([STEADY, ((28, 28, 20), 3.0, 0.95)], 1)
    prob = np.maximum(prob, 0.95 * _ball((28, 28, 20), 4.5))
    grown = (prob > 0.5) & (first[1] < 0.2)
    field = 1.5 * np.exp(-((np.indices(SHAPE) - np.array([28, 28, 20])[:, None, None, None]) ** 2
                           ).sum(axis=0) / (2 * 8.0**2))  # fmt: skip
    brighter = (label_lesions(prob > 0.5, 3)[0], prob, z + field.astype(np.float32))
    assert (brighter[2] - first[2])[grown].mean() >= Evidence().min_flair_change
    groups, dseg = _decide(first, brighter)
    assert {g.change for g in groups} == {STABLE} and not (dseg == ENLARGING).any()
    grew = (brighter[0], prob, z + np.where(grown, 1.5 * 2, 0.0).astype(np.float32))
    assert ENLARGING in {g.change for g in _decide(first, grew)[0]}


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


def _subject(sessions, resolutions=None, consistent: bool = True, brains=None):
    maps = [SessionMaps(prob, z, brain, res) for (_, prob, z), res, brain in zip(
        sessions, resolutions or [(1.0, 1.0, 1.0)] * len(sessions),
        brains or [BRAIN] * len(sessions), strict=True)]  # fmt: skip
    return subject_lesions(maps, (1.0, 1.0, 1.0), 0.5, 3, ChangeThresholds(), Evidence(),
                           consistent)  # fmt: skip


def _volumes(result) -> list[float]:
    return [float(partial_volumes(lab, p, 1.0).sum()) for lab, p in
            zip(result.labels, result.prob, strict=True)]  # fmt: skip


LESION = ((28, 28, 20), 3.0, 0.95)


def test_three_sessions_a_lesion_missing_at_the_second_only_is_neither_resolved_nor_new() -> None:
    sessions = [_session([STEADY, LESION], 0), _session([STEADY], 1),
                _session([STEADY, LESION], 2)]  # fmt: skip
    pairwise = [{g.change for g in _decide(a, b)[0]} for a, b in itertools.pairwise(sessions)]
    assert RESOLVED in pairwise[0] and NEW in pairwise[1]  # what each pair alone shows
    for consistent in (True, False):
        for groups, dseg in _subject(sessions, consistent=consistent).changes:
            assert {g.change for g in groups} == {STABLE}
            assert not np.isin(dseg, [NEW, RESOLVED]).any()


def test_jointly_an_unchanged_lesion_has_one_volume_at_every_session() -> None:
    """The same lesion (same FLAIR) that the network draws larger at the second session."""
    first = _session([STEADY, LESION], 0)
    _, prob, z = _session([STEADY, LESION], 1)
    prob = np.maximum(prob, 0.9 * _ball((28, 28, 20), 3.8))
    second = (label_lesions(prob > 0.5, 3)[0], prob, z)
    independent = _subject([first, second], consistent=False)
    joint = _subject([first, second])
    before, after = _volumes(independent)
    assert after / before > 1.2  # independent answers: the volume grew
    assert {g.change for g in independent.changes[0][0]} == {STABLE}  # ... but no evidence
    assert np.array_equal(joint.labels[0], joint.labels[1])
    assert _volumes(joint)[0] == _volumes(joint)[1]


def test_jointly_a_real_new_lesion_stays_new_and_only_at_its_session() -> None:
    first = _session([STEADY], 0)
    second = _session([STEADY, LESION], 1)
    joint = _subject([first, second])
    groups, dseg = joint.changes[0]
    assert sorted(g.change for g in groups) == [STABLE, NEW]
    assert joint.labels[0][28, 28, 20] == 0 and joint.labels[1][28, 28, 20] > 0
    assert np.array_equal(joint.prob[1][24:33, 24:33, 16:25], second[1][24:33, 24:33, 16:25])
    assert (dseg == NEW).sum() == (second[0] == second[0][28, 28, 20]).sum()


def test_jointly_a_thick_slice_session_weighs_a_ninth_of_a_fine_one() -> None:
    """Weights 1 / (acquired voxel volume)²: 3 mm slices against 1 mm count 1 : 9, sessions of
    one resolution equally."""
    first, second = _session([STEADY, LESION], 0), _session([STEADY, LESION], 1)
    second = (second[0], 0.5 * second[1], second[2])
    centre = (12, 12, 20)
    for resolution, weight in (((1.0, 1.0, 3.0), 1 / 9), ((1.0, 1.0, 1.0), 1.0)):
        joint = _subject([first, second], resolutions=[(1.0, 1.0, 1.0), resolution])
        expected = (first[1][centre] + weight * second[1][centre]) / (1 + weight)
        assert joint.prob[0][centre] == joint.prob[1][centre]
        assert abs(joint.prob[0][centre] - expected) < 1e-6


SMALL = ((28, 28, 20), 1.3, 0.9)  # 7 voxels


def test_a_small_lesion_blurred_by_thick_slices_has_not_resolved_but_a_gone_one_has() -> None:
    """The later session, acquired in 3 mm slices, no longer shows a small lesion clearly and
    the model misses it: the FLAIR compared at matched resolution did not fall."""
    first = _session([STEADY, SMALL], 0)
    blurred = _session([STEADY, (SMALL[0], SMALL[1], 0.05)], 1, slice_mm=3)
    gone = _session([STEADY], 1, slice_mm=3)
    thick = [(1.0, 1.0, 1.0), (1.0, 1.0, 3.0)]

    def changes(second, resolutions, consistent=False):
        groups = _subject([first, second], resolutions, consistent).changes[0][0]
        return sorted(g.change for g in groups)

    assert changes(blurred, None) == [STABLE, RESOLVED]  # compared as if both were 1 mm
    assert changes(blurred, thick) == [STABLE, STABLE]
    assert changes(gone, thick) == [STABLE, RESOLVED]
    # jointly the gone lesion keeps its own answers; the blurred one is kept at both sessions,
    # as the 1 mm session, which counts 9 times as much, shows it
    assert changes(gone, thick, consistent=True) == [STABLE, RESOLVED]
    assert changes(blurred, thick, consistent=True) == [STABLE, STABLE]


def test_a_lesion_outside_the_other_sessions_brain_mask_has_not_resolved() -> None:
    edge = ((28, 28, 20), 3.0, 0.95)
    first = _session([STEADY, edge], 0)
    second = _session([STEADY, (edge[0], edge[1], 0.0)], 1)
    second = (second[0], second[1], np.where(BRAIN, second[2], 0.0))
    cut = BRAIN.copy()
    cut[26:, :, :] = False  # the second session's brain mask leaves the lesion out
    second = (second[0], second[1] * cut, np.where(cut, second[2], 0.0))
    assert RESOLVED in {g.change for g in _subject([first, second]).changes[0][0]}
    kept = _subject([first, second], brains=[BRAIN, cut]).changes[0][0]
    assert {g.change for g in kept} == {STABLE}


def test_the_acquired_resolution_follows_the_slices_into_subject_space() -> None:
    native = np.diag([1.0, 1.0, 3.0, 1.0])  # 3 mm slices along the native third axis
    subject = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]]) * 0.8
    subject[3, 3] = 1.0
    assert np.allclose(acquired_resolution(native, subject), [3.0, 1.0, 1.0])
    assert np.allclose(acquired_resolution(native, np.diag([2.0, 2.0, 2.0, 1.0])), [1, 1, 3])


def test_three_phantom_sessions_through_the_interface_a_missed_lesion_stays(
    phantom_bids, tmp_path
) -> None:
    """A phantom session seen three times (new noise each time), one lesion gone from the
    second session's FLAIR and network answer only: the pair 1-2 alone shows it resolved, but
    with session 3 it is neither resolved at 2 nor new at 3, and jointly it is there at every
    session."""
    anat = phantom_bids / "sub-01" / "ses-01" / "anat"
    truth = phantom_bids / "derivatives" / "truth" / "sub-01" / "ses-01" / "anat"
    flair_img = nib.load(anat / "sub-01_ses-01_FLAIR.nii.gz")
    flair = np.asarray(flair_img.dataobj, np.float32)
    lesions, count = label_lesions(
        np.asarray(nib.load(truth / "sub-01_ses-01_label-lesion_mask.nii.gz").dataobj) > 0, 2
    )
    assert count >= 2
    missed = np.argmax(np.bincount(lesions.ravel())[1:]) + 1  # the largest lesion
    rng = np.random.default_rng(0)
    files: dict[str, list[str]] = {"probseg": [], "flair": []}
    for i in range(3):
        prob = np.where(lesions > 0, 0.95, 0.02).astype(np.float32)
        noisy = flair + rng.normal(0, 0.02 * float(flair.max()), flair.shape).astype(np.float32)
        if i == 1:
            prob[lesions == missed] = 0.1
            noisy[lesions == missed] = np.median(flair[flair > 0])
        for key, data in (("probseg", prob), ("flair", noisy)):
            path = tmp_path / f"{key}{i}.nii.gz"
            nib.save(nib.Nifti1Image(data, flair_img.affine), path)
            files[key].append(str(path))
    brain = str(truth / "sub-01_ses-01_desc-brain_mask.nii.gz")
    native = str(anat / "sub-01_ses-01_FLAIR.nii.gz")

    def run(sessions: int, consistent: bool):
        node = SubjectLesions(
            probseg=files["probseg"][:sessions], flair=files["flair"][:sessions],
            mask=[brain] * sessions, native_flair=[native] * sessions, consistent=consistent,
            min_volume_mm3=0,
        )  # fmt: skip
        cwd = tmp_path / f"{sessions}-{consistent}"
        cwd.mkdir()
        out = node.run(cwd=str(cwd)).outputs
        tables = ensure_list(out.out_table)  # one file comes back as a plain string
        return out, [set(pd.read_csv(t, sep="\t")["class"]) for t in tables]

    assert "resolved" in run(2, False)[1][0]
    for consistent in (True, False):
        out, classes = run(3, consistent)
        assert classes == [{"stable"}, {"stable"}], consistent
        found = (np.asarray(nib.load(out.out_mask[1]).dataobj) > 0)[lesions == missed].mean()
        assert found > 0.9 if consistent else found == 0.0  # jointly, the lesion is there
