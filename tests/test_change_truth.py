"""Phantom truth in subject space, and what it checks: lesion change classification against
the fate table, and the subject-space registration against the true head poses."""

from __future__ import annotations

from pathlib import Path

import ants
import nibabel as nib
import numpy as np
import pandas as pd
from nipype.pipeline import engine as pe
from scipy import ndimage

from mdgru_bids.interfaces.ants import SubjectSpace
from mdgru_bids.lesions.change import (
    NEW,
    RESOLVED,
    ChangeThresholds,
    change_map,
    match_lesions,
)
from mdgru_bids.lesions.components import label_lesions
from mdgru_bids.lesions.metrics import dice
from mdgru_bids.phantom.truth import ENLARGING_RATIO
from mdgru_bids.transforms import apply_to_points, invert_linear, is_rigid, mask_points, read_linear
from tests.test_interfaces_ants import FAST

SUBS, SESS = ("01", "02"), ("01", "02")
TRUTH = Path("derivatives", "truth")


def truth(root: Path, sub: str, ses: str, name: str) -> Path:
    return root / TRUTH / f"sub-{sub}" / f"ses-{ses}" / "anat" / f"sub-{sub}_ses-{ses}_{name}"


def flair(root: Path, sub: str, ses: str) -> str:
    return str(root / f"sub-{sub}" / f"ses-{ses}" / "anat" / f"sub-{sub}_ses-{ses}_FLAIR.nii.gz")


def to_subject(root: Path, sub: str, ses: str) -> np.ndarray:
    return read_linear(truth(root, sub, ses, "from-FLAIR_to-subject_mode-image_xfm.txt"))


def subject_ids(root: Path, sub: str, ses: str) -> nib.Nifti1Image:
    return nib.load(truth(root, sub, ses, "space-subject_desc-lesionid_dseg.nii.gz"))


def ids_of(img: nib.Nifti1Image) -> np.ndarray:
    return np.asarray(img.dataobj).astype(int)


def rules_may_differ(before: float, after: float, t: ChangeThresholds) -> bool:
    """Where the app's rule (a change of at least min_change_mm3 and min_change_fraction of
    the earlier volume) and the fate table's (volume ratio ENLARGING_RATIO either way) can
    disagree about a lesion present at both sessions: ratios between the two thresholds."""
    ratio = after / before
    up = sorted((1 + t.min_change_fraction, ENLARGING_RATIO))
    down = sorted((1 - t.min_change_fraction, 1 / ENLARGING_RATIO))
    small = abs(after - before) < t.min_change_mm3
    return up[0] <= ratio <= up[1] or down[0] <= ratio <= down[1] or small


def test_change_classification_agrees_with_the_fate_table(phantom_bids: Path) -> None:
    """mdgru-bids' change classification on perfect lesion masks in one space: each lesion
    group is one true lesion (matched by overlap), with the table's volumes, and its class is
    the table's fate wherever the two documented rules agree."""
    thresholds = ChangeThresholds()  # the app's defaults
    agreed, differed = set(), 0
    for sub in SUBS:
        before_img, after_img = (subject_ids(phantom_bids, sub, s) for s in SESS)
        assert np.allclose(before_img.affine, after_img.affine)  # one grid for the participant
        before, after = ids_of(before_img), ids_of(after_img)
        fates = pd.read_csv(
            phantom_bids / TRUTH / f"sub-{sub}" / f"sub-{sub}_desc-lesionfate_table.tsv", sep="\t"
        ).set_index("lesion_id")
        labels = [label_lesions(ids > 0)[0] for ids in (before, after)]
        voxel = float(np.prod(before_img.header.get_zooms()))
        groups = match_lesions(*labels, voxel, thresholds)
        classified = {}
        for group in groups:
            lesions = set(np.unique(before[np.isin(labels[0], group.previous)])) | set(
                np.unique(after[np.isin(labels[1], group.current)])
            )
            assert len(lesions) == 1, f"sub-{sub}: group {group} holds lesions {lesions}"
            (lesion,) = lesions
            row = fates.loc[lesion]
            assert (group.previous_mm3, group.current_mm3) == (
                row.volume_before_mm3,
                row.volume_after_mm3,
            )
            classified[lesion] = group.name
            if group.name == row.fate:
                agreed.add(row.fate)
            else:
                differed += 1
                assert rules_may_differ(group.previous_mm3, group.current_mm3, thresholds), (
                    f"sub-{sub} lesion {lesion}: {group.name}, table says {row.fate}"
                )
        assert sorted(classified) == sorted(fates.index)
        dseg = change_map(*labels, groups)
        new = fates.index[fates.fate == "new"]
        resolved = fates.index[fates.fate == "resolved"]
        np.testing.assert_array_equal(dseg == NEW, np.isin(after, new))
        np.testing.assert_array_equal(dseg == RESOLVED, np.isin(before, resolved))
    assert agreed >= {"new", "enlarging", "shrinking", "stable", "resolved"}
    assert differed <= 2  # seed 0: one stable lesion grew 81 -> 108 mm³ (x1.33)


def centroids(img: nib.Nifti1Image) -> dict[int, np.ndarray]:
    """Lesion id -> centroid in world mm."""
    ids = ids_of(img)
    present = [int(i) for i in np.unique(ids) if i > 0]
    voxels = np.array(ndimage.center_of_mass(np.ones_like(ids), ids, present)).reshape(-1, 3)
    return dict(zip(present, apply_to_points(img.affine, voxels), strict=True))


def test_true_transforms_carry_flair_truth_onto_the_subject_grid(
    phantom_bids: Path, tmp_path: Path
) -> None:
    """The written transform is FLAIR world -> subject world, in mdgru-bids' convention: read
    back it moves FLAIR-grid lesion centroids onto their subject-grid centroids, and ANTs
    resamples the FLAIR truth onto the subject grid with the file as it is."""
    for sub in SUBS:
        for ses in SESS:
            xfm = truth(phantom_bids, sub, ses, "from-FLAIR_to-subject_mode-image_xfm.txt")
            matrix = read_linear(xfm)
            assert is_rigid(matrix)
            on_flair = nib.load(truth(phantom_bids, sub, ses, "desc-lesionid_dseg.nii.gz"))
            on_subject = subject_ids(phantom_bids, sub, ses)
            a, b = centroids(on_flair), centroids(on_subject)
            shared = sorted(a.keys() & b.keys())
            assert len(shared) >= 3
            points = np.array([a[i] for i in shared])
            target = np.array([b[i] for i in shared])

            def error(m: np.ndarray, points=points, target=target) -> float:
                return float(np.linalg.norm(apply_to_points(m, points) - target, axis=1).mean())

            # within a FLAIR voxel (3 mm in plane, 7.5-9 mm slices), far closer than reversed
            assert error(matrix) < 3.0 < error(np.linalg.inv(matrix)) / 2
            reference = ants.image_read(str(on_subject.get_filename()))
            moving = ants.image_read(str(on_flair.get_filename()))
            inverse = invert_linear(xfm, tmp_path / f"{sub}_{ses}_inverse.txt")
            scores = [
                dice(
                    ants.apply_transforms(
                        reference, moving, [str(x)], interpolator="nearestNeighbor"
                    ).numpy()
                    > 0,
                    ids_of(on_subject) > 0,
                )
                for x in (xfm, inverse)
            ]
            assert scores[0] > 0.3 and scores[1] < scores[0] / 3, scores


def test_subject_space_recovers_the_true_relative_pose(phantom_bids: Path, tmp_path: Path) -> None:
    """SubjectSpace's session 2 -> session 1 pose equals the true one, composed from the
    phantom's transforms, to within a FLAIR voxel at every brain voxel of session 2."""
    for sub in SUBS:
        masks = [str(truth(phantom_bids, sub, s, "desc-brain_mask.nii.gz")) for s in SESS]
        flairs = [flair(phantom_bids, sub, s) for s in SESS]
        out = (
            pe.Node(
                SubjectSpace(in_files=flairs, in_masks=masks, resolution_mm=3.0, **FAST),
                name=f"subject_space_{sub}",
                base_dir=str(tmp_path),
            )
            .run()
            .outputs
        )
        app = [read_linear(path) for path in out.out_transforms]
        found = np.linalg.inv(app[0]) @ app[1]
        true = np.linalg.inv(to_subject(phantom_bids, sub, "01")) @ to_subject(
            phantom_bids, sub, "02"
        )
        brain = nib.load(masks[1])
        points = mask_points(np.asanyarray(brain.dataobj), brain.affine)
        error = np.linalg.norm(
            apply_to_points(found, points) - apply_to_points(true, points), axis=1
        )
        voxel = min(min(nib.load(f).header.get_zooms()) for f in flairs)
        moved = np.linalg.norm(points - apply_to_points(true, points), axis=1)
        assert moved.mean() > 2 * voxel  # the head really moved between the sessions
        assert error.max() < voxel, f"sub-{sub}: max error {error.max():.2f} mm"
        assert error.mean() < voxel / 3, f"sub-{sub}: mean error {error.mean():.2f} mm"
