"""The registration functions alone, without Nipype or a worker process."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.spatial.transform import Rotation

from mdgru_bids import registration
from mdgru_bids.transforms import apply_to_points, mask_points, read_linear, write_linear
from tests.test_interfaces_ants import FAST, anat, truth

SCHEDULE = {
    "aff_iterations": tuple(FAST["iterations"]),
    "aff_shrink_factors": tuple(FAST["shrink_factors"]),
    "aff_smoothing_sigmas": tuple(FAST["smoothing_sigmas"]),
}


def test_subject_space_lies_halfway_between_two_sessions(
    phantom_bids: Path, tmp_path: Path
) -> None:
    image, mask = (
        anat(phantom_bids, "01", "01", "FLAIR"),
        truth(phantom_bids, "01", "01", "desc-brain_mask"),
    )
    brain = nib.load(mask)
    points = mask_points(np.asanyarray(brain.dataobj), brain.affine)
    centre = points.mean(axis=0)
    motion = np.eye(4)
    motion[:3, :3] = Rotation.from_euler("xyz", [6, 0, -4], degrees=True).as_matrix()
    motion[:3, 3] = centre + np.array([4.0, 0.0, -3.0]) - motion[:3, :3] @ centre
    xfm = str(write_linear(motion, tmp_path / "motion.txt"))
    moved = registration.apply_transforms(image, image, [xfm], "linear", 0.0, str(tmp_path))[
        "out_file"
    ]
    moved_mask = Path(tmp_path / "mask2")
    moved_mask.mkdir()
    moved_mask = registration.apply_transforms(
        mask, mask, [xfm], "nearestNeighbor", 0.0, str(moved_mask)
    )["out_file"]
    assert nib.load(moved_mask).get_data_dtype() == brain.get_data_dtype()

    out = registration.subject_space(
        [image, moved], [mask, moved_mask], 2.0, 10.0, SCHEDULE, str(tmp_path)
    )
    first, second = (read_linear(t) for t in out["out_transforms"])
    # a brain point of session 1 and the same point seen in session 2 land on one subject point
    # (ITK resamples points the other way round: the transforms map subject -> session)
    on_first = apply_to_points(np.linalg.inv(first), points)
    on_second = apply_to_points(np.linalg.inv(second) @ np.linalg.inv(motion), points)
    assert np.linalg.norm(on_first - on_second, axis=1).max() < 2.0
    # halfway: each session moved about as far as the other
    moved_first = np.linalg.norm(on_first - points, axis=1).mean()
    moved_second = np.linalg.norm(
        on_second - apply_to_points(np.linalg.inv(motion), points), axis=1
    ).mean()
    assert abs(moved_first - moved_second) < 1.0
    reference = nib.load(out["out_reference"])
    assert np.allclose(reference.header.get_zooms(), 2.0)
    assert np.asanyarray(reference.dataobj).any()
