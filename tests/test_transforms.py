"""Transform files, their convention against ANTs, rigid means and the unbiased subject space."""

from __future__ import annotations

from pathlib import Path

import ants
import nibabel as nib
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mdgru_bids.transforms import (
    apply_to_points,
    covering_grid,
    invert_linear,
    is_rigid,
    mask_points,
    mean_rigid,
    read_linear,
    unbiased_subject_space,
    write_linear,
)

LPS = np.array([-1.0, -1.0, 1.0])


def rigid(degrees: tuple[float, float, float], mm: tuple[float, float, float]) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = Rotation.from_euler("xyz", degrees, degrees=True).as_matrix()
    out[:3, 3] = mm
    return out


def random_rigid(rng: np.random.Generator, degrees: float = 10.0, mm: float = 10.0) -> np.ndarray:
    return rigid(tuple(rng.normal(0, degrees, 3)), tuple(rng.normal(0, mm, 3)))


def angle_deg(matrix: np.ndarray) -> float:
    return float(np.degrees(np.linalg.norm(Rotation.from_matrix(matrix[:3, :3]).as_rotvec())))


def test_text_file_round_trip(tmp_path: Path) -> None:
    matrix = rigid((10, -5, 7), (5, -3, 12))
    matrix[:3, :3] *= [[1.1], [0.9], [1.0]]  # any affine, not only rigid
    path = write_linear(matrix, tmp_path / "xfm.txt")
    assert path.read_text().startswith("#Insight Transform File")
    np.testing.assert_allclose(read_linear(path), matrix, atol=1e-4)  # ITK text: ~6 digits
    inverse = read_linear(invert_linear(path, tmp_path / "inverse.txt"))
    np.testing.assert_allclose(inverse @ matrix, np.eye(4), atol=1e-4)


@pytest.mark.parametrize("suffix", [".txt", ".mat"])
def test_reads_ants_files_with_a_centre_of_rotation(tmp_path: Path, suffix: str) -> None:
    """ITK maps fixed → moving points in LPS about a centre; read_linear is its inverse in RAS."""
    rotation = Rotation.from_euler("xyz", [12, -4, 9], degrees=True).as_matrix()
    itk = ants.create_ants_transform(
        transform_type="AffineTransform",
        dimension=3,
        matrix=rotation,
        translation=[3.0, -2.0, 5.0],
        center=[10.0, -20.0, 5.0],
    )
    path = tmp_path / f"xfm{suffix}"
    ants.write_transform(itk, str(path))
    matrix = read_linear(path)
    for fixed_ras in ([10.0, 20.0, 30.0], [-40.0, 5.0, -12.0]):
        moving_lps = np.array(itk.apply_to_point(tuple(np.array(fixed_ras) * LPS)))
        np.testing.assert_allclose(apply_to_points(matrix, moving_lps * LPS), fixed_ras, atol=1e-4)


def blobs(xyz: np.ndarray) -> np.ndarray:
    """A smooth, asymmetric test object at world points (..., 3)."""
    centres = np.array([[10.0, -5.0, 8.0], [-15.0, 12.0, -6.0]])
    widths = np.array([[9.0, 6.0, 7.0], [5.0, 8.0, 6.0]])
    return sum(
        np.exp(-0.5 * (((xyz - c) / w) ** 2).sum(-1)) * a
        for c, w, a in zip(centres, widths, (1.0, 0.6), strict=True)
    )


def world_grid(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), axis=-1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def test_convention_matches_ants_apply_transforms(tmp_path: Path) -> None:
    """A file from write_linear(A) resamples a moving image onto the fixed grid when A maps
    moving points to fixed ones; the inverse matrix would put the object elsewhere."""
    moved_by = rigid((8, -6, 10), (6, -4, 5))  # moving -> fixed
    fixed_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    fixed_affine[:3, 3] = -40.0
    moving_affine = rigid((0, 0, 15), (-38.0, -45.0, -36.0)) @ np.diag([2.0, 2.5, 2.0, 1.0])
    shape = (41, 41, 41)
    moving = blobs(apply_to_points(moved_by, world_grid(shape, moving_affine).reshape(-1, 3)))
    nib.save(
        nib.Nifti1Image(moving.reshape(shape).astype(np.float32), moving_affine),
        tmp_path / "moving.nii.gz",
    )
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), fixed_affine), tmp_path / "fixed.nii.gz")
    fixed = ants.image_read(str(tmp_path / "fixed.nii.gz"))
    moving_img = ants.image_read(str(tmp_path / "moving.nii.gz"))
    expected = blobs(world_grid(shape, fixed_affine))

    def resampled(matrix: np.ndarray) -> np.ndarray:
        path = write_linear(matrix, tmp_path / "xfm.txt")
        return ants.apply_transforms(fixed, moving_img, [str(path)]).numpy()

    assert np.abs(resampled(moved_by) - expected).max() < 0.05  # linear interpolation, peak 1
    assert np.abs(resampled(np.linalg.inv(moved_by)) - expected).max() > 0.3


def test_read_linear_rejects_other_files(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a transform\n")
    with pytest.raises(ValueError, match=r"notes\.txt: not a single linear"):
        read_linear(path)


def test_identical_sessions_give_the_identity() -> None:
    for out in unbiased_subject_space([np.eye(4)] * 3):
        np.testing.assert_allclose(out, np.eye(4), atol=1e-12)
    x = random_rigid(np.random.default_rng(0))
    np.testing.assert_allclose(mean_rigid([x, x, x]), x, atol=1e-10)


@pytest.mark.parametrize(
    "degrees, mm",
    [((0.1, -0.2, 0.05), (0.3, 0.0, -0.2)), ((12, -8, 6), (10, -6, 4)), ((0, 150, 0), (20, 0, 5))],
)
def test_two_sessions_each_move_halfway(
    degrees: tuple[float, float, float], mm: tuple[float, float, float]
) -> None:
    t = rigid(degrees, mm)
    first, second = unbiased_subject_space([np.eye(4), t])
    np.testing.assert_allclose(second @ second, t, atol=1e-9)  # second moves by half of t
    np.testing.assert_allclose(first, np.linalg.inv(second), atol=1e-9)  # first by half back
    assert angle_deg(second) == pytest.approx(angle_deg(t) / 2, abs=1e-6)
    # Both land on one subject space: session 2 to session 1 is unchanged through it.
    np.testing.assert_allclose(np.linalg.inv(first) @ second, t, atol=1e-9)


def test_subject_space_does_not_depend_on_the_reference_session_or_order() -> None:
    rng = np.random.default_rng(1)
    poses = [random_rigid(rng) for _ in range(4)]  # session -> some scanner world

    def relative_to(ref: int) -> list[np.ndarray]:
        return [np.linalg.inv(poses[ref]) @ p for p in poses]

    by_first = unbiased_subject_space(relative_to(0))
    by_third = unbiased_subject_space(relative_to(2))
    for a, b in zip(by_first, by_third, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-8)
    order = [3, 1, 0, 2]
    shuffled = unbiased_subject_space([relative_to(0)[i] for i in order])
    for got, i in zip(shuffled, order, strict=True):
        np.testing.assert_allclose(got, by_first[i], atol=1e-8)
    np.testing.assert_allclose(mean_rigid(by_first), np.eye(4), atol=1e-8)


def test_mean_rigid_commutes_with_composition() -> None:
    rng = np.random.default_rng(2)
    xs = [random_rigid(rng, degrees=20.0) for _ in range(5)]
    a, b = random_rigid(rng, degrees=30.0), random_rigid(rng, degrees=30.0)
    mean = mean_rigid(xs)
    assert is_rigid(mean)
    np.testing.assert_allclose(mean_rigid([a @ x @ b for x in xs]), a @ mean @ b, atol=1e-8)


def test_mean_rigid_refuses_what_is_not_rigid() -> None:
    with pytest.raises(ValueError, match="at least one"):
        mean_rigid([])
    with pytest.raises(ValueError, match="transform 1 is not rigid"):
        mean_rigid([np.eye(4), np.diag([1.1, 1.0, 1.0, 1.0])])
    with pytest.raises(ValueError, match="not rigid"):
        mean_rigid([np.diag([-1.0, 1.0, 1.0, 1.0])])  # a reflection


def test_covering_grid_spans_points_with_margin() -> None:
    affine = rigid((0, 0, 20), (-30, 10, 5)) @ np.diag([3.0, 3.0, 7.5, 1.0])
    mask = np.zeros((12, 10, 6), bool)
    mask[2:9, 3:8, 1:5] = True
    points = mask_points(mask, affine)
    assert len(points) == mask.sum()
    np.testing.assert_allclose(points[0], apply_to_points(affine, np.array([[2.0, 3.0, 1.0]]))[0])
    shape, grid = covering_grid(points, 2.0, 5.0)
    np.testing.assert_allclose(grid[:3, :3], 2.0 * np.eye(3))
    voxels = apply_to_points(np.linalg.inv(grid), points)
    margin_vox = 5.0 / 2.0
    assert voxels.min() >= margin_vox - 1e-9
    assert (voxels.max(axis=0) <= np.array(shape) - 1 - margin_vox + 1e-9).all()
    assert (voxels.min(axis=0) < margin_vox + 1.0).all()  # no more room than needed
    with pytest.raises(ValueError, match="empty mask"):
        covering_grid(np.empty((0, 3)), 1.0, 5.0)
