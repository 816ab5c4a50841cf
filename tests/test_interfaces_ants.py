"""The ANTsPy interfaces as Nipype nodes on the 3 mm phantom: registration accuracy and
reproducibility, resampling, N4, brain masks and the subject space."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import ants
import nibabel as nib
import numpy as np
import pytest
from nipype.pipeline import engine as pe
from scipy.spatial.transform import Rotation

from mdgru_bids.interfaces.ants import (
    ApplyTransforms,
    BrainMask,
    N4BiasCorrection,
    Register,
    SubjectSpace,
)
from mdgru_bids.interfaces.transforms import ChainLinear
from mdgru_bids.lesions.metrics import dice
from mdgru_bids.transforms import (
    apply_to_points,
    invert_linear,
    is_rigid,
    mask_points,
    mean_rigid,
    read_linear,
    write_linear,
)

#: A short multi-resolution schedule: enough for 3 mm images, and fast.
FAST = {"iterations": [100, 50, 20], "shrink_factors": [4, 2, 1], "smoothing_sigmas": [2, 1, 0]}


def anat(root: Path, sub: str, ses: str, suffix: str) -> str:
    return str(root / f"sub-{sub}" / f"ses-{ses}" / "anat" / f"sub-{sub}_ses-{ses}_{suffix}.nii.gz")


def truth(root: Path, sub: str, ses: str, suffix: str) -> str:
    return anat(root / "derivatives" / "truth", sub, ses, suffix)


def run(interface: Any, tmp_path: Path, name: str) -> Any:
    """Run an interface as a Nipype node in ``tmp_path``; its outputs."""
    return pe.Node(interface, name=name, base_dir=str(tmp_path)).run().outputs


def load(path: str) -> np.ndarray:
    return np.asanyarray(nib.load(path).dataobj)


def test_register_recovers_a_known_rigid_motion_reproducibly(
    phantom_bids: Path, tmp_path: Path
) -> None:
    image = anat(phantom_bids, "01", "01", "T1w")
    brain = nib.load(truth(phantom_bids, "01", "01", "desc-brain_mask"))
    points = mask_points(np.asanyarray(brain.dataobj), brain.affine)
    centre = points.mean(axis=0)
    motion = np.eye(4)  # 5-9 degrees per axis about the brain's centre, and 4-6 mm
    motion[:3, :3] = Rotation.from_euler("xyz", [7, -5, 9], degrees=True).as_matrix()
    motion[:3, 3] = centre + np.array([5.0, -4.0, 6.0]) - motion[:3, :3] @ centre
    moved = run(
        ApplyTransforms(
            in_file=image,
            reference_image=image,
            transforms=[str(write_linear(motion, tmp_path / "motion.txt"))],
        ),
        tmp_path,
        "move",
    ).out_file

    def register(name: str) -> Any:
        return run(
            Register(fixed_image=image, moving_image=moved, random_seed=7, **FAST), tmp_path, name
        )

    first, again = register("register"), register("register_again")
    recovered = read_linear(first.out_transform)  # moved -> original
    error = np.linalg.norm(apply_to_points(recovered @ motion, points) - points, axis=1)
    voxel = min(nib.load(image).header.get_zooms())
    assert error.max() < voxel, f"max error {error.max():.2f} mm"
    assert error.mean() < voxel / 3
    assert is_rigid(recovered)
    np.testing.assert_allclose(
        read_linear(first.out_inverse_transform) @ recovered, np.eye(4), atol=1e-4
    )
    assert Path(first.out_transform).read_text() == Path(again.out_transform).read_text()
    # Bit-identical at full precision too (the text file keeps six digits).
    np.testing.assert_array_equal(load(first.warped_image), load(again.warped_image))
    assert nib.load(first.warped_image).shape == nib.load(image).shape


def test_register_on_a_coarser_fixed_grid_still_maps_the_full_resolution(
    phantom_bids: Path, tmp_path: Path
) -> None:
    """resolution_mm registers on the fixed image resampled (as the template registration
    does): the transform is in world coordinates, and the warped image on the fixed grid."""
    image = anat(phantom_bids, "01", "01", "T1w")
    brain = nib.load(truth(phantom_bids, "01", "01", "desc-brain_mask"))
    points = mask_points(np.asanyarray(brain.dataobj), brain.affine)
    motion = np.eye(4)
    motion[:3, 3] = [4.0, -3.0, 5.0]
    moved = str(write_linear(motion, tmp_path / "motion.txt"))
    moved = run(
        ApplyTransforms(in_file=image, reference_image=image, transforms=[moved]),
        tmp_path,
        "move",
    ).out_file
    out = run(
        Register(
            fixed_image=image,
            moving_image=moved,
            iterations=[100, 50],
            shrink_factors=[2, 1],
            smoothing_sigmas=[1, 0],
            resolution_mm=4.5,
        ),
        tmp_path,
        "register_coarse",
    )
    error = np.linalg.norm(
        apply_to_points(read_linear(out.out_transform) @ motion, points) - points, axis=1
    )
    assert error.mean() < 1.5, f"mean error {error.mean():.2f} mm"  # half a 3 mm voxel
    assert nib.load(out.warped_image).shape == nib.load(image).shape


def test_apply_transforms_inverts_text_transforms_and_keeps_label_types(
    phantom_bids: Path, tmp_path: Path
) -> None:
    mask = truth(phantom_bids, "01", "01", "desc-brain_mask")
    reference = anat(phantom_bids, "01", "02", "FLAIR")
    shift = np.eye(4)
    shift[:3, 3] = [4.0, -3.0, 2.0]
    xfm = write_linear(shift, tmp_path / "shift.txt")
    out = run(
        ApplyTransforms(
            in_file=mask,
            reference_image=reference,
            transforms=[str(xfm)],
            invert_transform_flags=[True],
            interpolation="nearestNeighbor",
        ),
        tmp_path,
        "resample",
    ).out_file
    expected = ants.apply_transforms(
        ants.image_read(reference),
        ants.image_read(mask),
        [str(invert_linear(xfm, tmp_path / "shift_inverse.txt"))],
        interpolator="nearestNeighbor",
    ).numpy()
    img = nib.load(out)
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.affine, nib.load(reference).affine)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), expected)
    with pytest.raises(ValueError, match="1 entries for 2 transforms"):
        ApplyTransforms(
            in_file=mask,
            reference_image=reference,
            transforms=[str(xfm), str(xfm)],
            invert_transform_flags=[True],
        ).run(cwd=str(tmp_path))


def test_n4_removes_most_of_a_smooth_bias_field(phantom_bids: Path, tmp_path: Path) -> None:
    flair = nib.load(anat(phantom_bids, "01", "01", "FLAIR"))
    brain = load(truth(phantom_bids, "01", "01", "desc-brain_mask")) > 0
    wm = load(truth(phantom_bids, "01", "01", "label-WM_probseg")) > 0.9  # fractions
    ijk = np.stack(np.meshgrid(*map(np.arange, flair.shape), indexing="ij"), axis=-1)
    x, y, z = np.moveaxis(apply_to_points(flair.affine, ijk.reshape(-1, 3)), -1, 0)
    bias = np.exp(0.4 * x / 80 + 0.3 * y / 100 - 0.3 * (z / 60) ** 2).reshape(flair.shape)
    biased = tmp_path / "biased.nii.gz"
    nib.save(nib.Nifti1Image((flair.get_fdata() * bias).astype(np.float32), flair.affine), biased)
    mask = tmp_path / "brain.nii.gz"
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), flair.affine), mask)
    out = run(N4BiasCorrection(in_file=str(biased), mask_file=str(mask)), tmp_path, "n4").out_file

    def cv(data: np.ndarray, where: np.ndarray) -> float:
        return float(data[where].std() / data[where].mean())

    before, after = nib.load(biased).get_fdata(), nib.load(out)
    assert after.get_data_dtype() == np.float32
    assert after.shape == flair.shape
    np.testing.assert_allclose(after.affine, flair.affine)
    assert cv(after.get_fdata(), wm) < 0.5 * cv(before, wm)
    assert cv(after.get_fdata(), brain) < 0.8 * cv(before, brain)


def test_brain_mask_from_a_template_matches_the_truth(
    phantom_bids: Path, mni_template: tuple[Path, Path], tmp_path: Path
) -> None:
    flair = anat(phantom_bids, "01", "01", "FLAIR")
    template, template_mask = mni_template
    out = run(
        BrainMask(
            in_file=flair, template_image=str(template), template_mask=str(template_mask), **FAST
        ),
        tmp_path,
        "brain_mask",
    )
    mask = nib.load(out.out_mask)
    assert mask.get_data_dtype() == np.uint8
    np.testing.assert_allclose(mask.affine, nib.load(flair).affine)
    score = dice(
        np.asanyarray(mask.dataobj), load(truth(phantom_bids, "01", "01", "desc-brain_mask"))
    )
    assert score > 0.85, f"Dice {score:.3f}"
    assert read_linear(out.out_transform).shape == (4, 4)


def test_subject_space_aligns_two_sessions_halfway(phantom_bids: Path, tmp_path: Path) -> None:
    flairs = [anat(phantom_bids, "01", s, "FLAIR") for s in ("01", "02")]
    masks = [truth(phantom_bids, "01", s, "desc-brain_mask") for s in ("01", "02")]
    out = run(
        SubjectSpace(in_files=flairs, in_masks=masks, resolution_mm=3.0, **FAST),
        tmp_path,
        "subject_space",
    )
    xfms = [read_linear(path) for path in out.out_transforms]
    assert len(xfms) == 2 and all(is_rigid(x) for x in xfms)
    np.testing.assert_allclose(mean_rigid(xfms), np.eye(4), atol=1e-3)  # favours no session
    reference = nib.load(out.out_reference)
    assert reference.header.get_zooms() == (3.0, 3.0, 3.0)
    fixed = ants.image_read(out.out_reference)
    moved = []
    for mask, xfm, path in zip(masks, xfms, out.out_transforms, strict=True):
        img = nib.load(mask)
        voxels = apply_to_points(
            np.linalg.inv(reference.affine) @ xfm,
            mask_points(np.asanyarray(img.dataobj), img.affine),
        )
        assert voxels.min() >= 0 and (voxels <= np.array(reference.shape) - 1).all()
        resampled = ants.apply_transforms(fixed, ants.image_read(mask), [path]).numpy() >= 0.5
        moved.append(resampled)
    union = np.asanyarray(reference.dataobj) > 0
    assert not (moved[0] & ~union).any() and not (moved[1] & ~union).any()
    score = dice(moved[0], moved[1])
    assert score > 0.8, f"Dice {score:.3f}"


def test_subject_space_of_one_session_is_its_own_space(phantom_bids: Path, tmp_path: Path) -> None:
    flair = anat(phantom_bids, "02", "01", "FLAIR")
    mask = truth(phantom_bids, "02", "01", "desc-brain_mask")
    out = run(
        SubjectSpace(in_files=[flair], in_masks=[mask], resolution_mm=3.0, margin_mm=6.0),
        tmp_path,
        "subject_space",
    )
    (xfm,) = out.out_transforms
    np.testing.assert_allclose(read_linear(xfm), np.eye(4), atol=1e-6)
    img, reference = nib.load(mask), nib.load(out.out_reference)
    points = mask_points(np.asanyarray(img.dataobj), img.affine)
    low = apply_to_points(reference.affine, np.zeros((1, 3)))[0]
    high = apply_to_points(reference.affine, np.array(reference.shape, float)[None] - 1)[0]
    np.testing.assert_allclose(low, points.min(axis=0) - 6.0, atol=3.0)
    np.testing.assert_allclose(high, points.max(axis=0) + 6.0, atol=3.0)


def test_register_syn_writes_a_composite_transform_with_its_inverse(
    phantom_bids: Path, tmp_path: Path
) -> None:
    fixed = anat(phantom_bids, "01", "01", "T1w")
    moving = anat(phantom_bids, "02", "01", "T1w")
    out = run(
        Register(
            fixed_image=fixed,
            moving_image=moving,
            transform="SyN",
            syn_iterations=[20, 10, 0],
            **FAST,
        ),
        tmp_path,
        "register_syn",
    )
    assert out.out_transform.endswith(".h5") and out.out_inverse_transform.endswith(".h5")
    again = ants.apply_transforms(
        ants.image_read(fixed), ants.image_read(moving), [out.out_transform]
    ).numpy()
    warped = load(out.warped_image)
    assert np.abs(again - warped).max() < 0.01 * warped.max()  # the affine is in the composite
    with pytest.raises(ValueError, match="only linear transforms"):
        ApplyTransforms(
            in_file=moving,
            reference_image=fixed,
            transforms=[out.out_transform],
            invert_transform_flags=[True],
        ).run(cwd=str(tmp_path))


def test_chain_composes_in_the_order_points_pass(tmp_path: Path) -> None:
    # as the template registration starts: subject -> session -> template, both backwards
    session_to_subject, template_to_session = np.eye(4), np.eye(4)
    session_to_subject[:3, :3] = Rotation.from_euler("xyz", [10, -5, 20], degrees=True).as_matrix()
    session_to_subject[:3, 3] = [4.0, -2.0, 7.0]
    template_to_session[:3, :3] = (
        np.diag([1.1, 0.9, 1.05]) @ Rotation.from_euler("z", 30, degrees=True).as_matrix()
    )
    template_to_session[:3, 3] = [-10.0, 5.0, 3.0]
    files = [str(write_linear(m, tmp_path / f"{k}.txt"))
             for k, m in enumerate((session_to_subject, template_to_session))]  # fmt: skip
    out = run(ChainLinear(in_transforms=files, invert=[True, True]), tmp_path, "chain")
    expected = np.linalg.inv(template_to_session) @ np.linalg.inv(session_to_subject)
    np.testing.assert_allclose(read_linear(out.out_transform), expected, atol=1e-4)


def test_syn_without_linear_levels_starts_from_a_chained_initial_transform(
    phantom_bids: Path, tmp_path: Path
) -> None:
    fixed = anat(phantom_bids, "01", "01", "T1w")
    img = nib.load(fixed)
    shift = np.array([30.0, -20.0, 10.0])  # the same head 36 mm away in the world
    moved = img.affine.copy()
    moved[:3, 3] += shift
    moving = str(tmp_path / "moving.nii.gz")
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), moved), moving)
    # moving -> fixed is -shift, given as two steps of the chain, the second one backwards
    half = np.eye(4)
    half[:3, 3] = -shift / 2
    steps = [str(write_linear(half, tmp_path / "half.txt")),
             str(write_linear(np.linalg.inv(half), tmp_path / "back.txt"))]  # fmt: skip
    start = run(ChainLinear(in_transforms=steps, invert=[False, True]), tmp_path, "chain")
    assert np.allclose(read_linear(start.out_transform)[:3, 3], -shift, atol=1e-4)
    register = {
        "fixed_image": fixed,
        "moving_image": moving,
        "transform": "SyN",
        "syn_iterations": [10, 0, 0],
        "iterations": [],
        "shrink_factors": [],
        "smoothing_sigmas": [],
    }
    with pytest.raises(RuntimeError, match="needs SyN and an initial_transform"):
        run(Register(**register), tmp_path, "no_start")
    out = run(Register(**register, initial_transform=start.out_transform), tmp_path, "syn")
    warped = ants.apply_transforms(
        ants.image_read(fixed), ants.image_read(moving), [out.out_transform]
    ).numpy()
    unmoved = ants.resample_image_to_target(ants.image_read(moving), ants.image_read(fixed))
    truth_image = img.get_fdata()
    inside = truth_image > 0.1 * truth_image.max()

    def similarity(image: np.ndarray) -> float:
        return float(np.corrcoef(image[inside], truth_image[inside])[0, 1])

    assert similarity(unmoved.numpy()) < 0.3  # where a start-less SyN would begin
    assert similarity(warped) > 0.9  # the start is in the composite transform


def test_user_errors_are_one_clear_line(phantom_bids: Path, tmp_path: Path) -> None:
    flair = anat(phantom_bids, "01", "01", "FLAIR")
    other_grid = truth(phantom_bids, "01", "02", "desc-brain_mask")
    with pytest.raises(ValueError, match="is not on the grid of"):
        N4BiasCorrection(in_file=flair, mask_file=other_grid).run(cwd=str(tmp_path))
    with pytest.raises(ValueError, match=r"one entry per level \(got 3, 2, 3\)"):
        Register(fixed_image=flair, moving_image=flair, **(FAST | {"shrink_factors": [2, 1]})).run(
            cwd=str(tmp_path)
        )


def test_a_registration_in_a_worker_repeats_one_in_a_fresh_process(
    phantom_bids: Path, tmp_path: Path
) -> None:
    """A process whose ITK thread count was fixed before ITK loaded (the app's workers) runs
    one-thread registrations in itself, the seed passed as --random-seed, one after another
    as a worker does; a fresh process, given the seed as ANTS_RANDOM_SEED, computes the same
    bits, and another seed does not."""
    schedule = {"aff_iterations": (100, 50, 20), "aff_shrink_factors": (4, 2, 1),
                "aff_smoothing_sigmas": (2.0, 1.0, 0.0)}  # fmt: skip
    kwargs = {
        "fixed_image": anat(phantom_bids, "01", "01", "FLAIR"),
        "moving_image": anat(phantom_bids, "01", "02", "FLAIR"),
        "fixed_mask": None,
        "moving_mask": None,
        "transform": "Rigid",
        "schedule": schedule,
        "name": "moving_to_fixed",
    }
    folders = {name: tmp_path / name for name in ("worker", "fresh", "worker_seed8")}
    code = f"""
import sys
from mdgru_bids import processes, registration
processes.fix_itk_threads(1)
kwargs = {kwargs!r}
processes.run_ants(registration.register, 1, 8, out_dir={str(folders["worker_seed8"])!r}, **kwargs)
assert "ants" in sys.modules, "the registration did not run in this process"
processes.run_ants(registration.register, 1, 7, out_dir={str(folders["worker"])!r}, **kwargs)
processes.run_isolated(registration.register, 1, 7, out_dir={str(folders["fresh"])!r}, **kwargs)
"""
    for folder in folders.values():
        folder.mkdir()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    warped = {name: load(str(f / "moving_to_fixed_warped.nii")) for name, f in folders.items()}
    assert (folders["worker"] / "moving_to_fixed.txt").read_text() == (
        folders["fresh"] / "moving_to_fixed.txt"
    ).read_text()
    np.testing.assert_array_equal(warped["worker"], warped["fresh"])
    assert not np.array_equal(warped["worker"], warped["worker_seed8"])
