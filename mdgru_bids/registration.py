"""Registration, bias correction and resampling with ANTsPy: plain functions on image files,
each writing its results into ``out_dir`` and returning their paths by output name.

Transform files follow ITK/ANTs (see :mod:`mdgru_bids.transforms`): a registration's
``out_transform`` resamples its moving image onto the fixed grid when given to
:func:`apply_transforms` with the fixed image as reference; lists of transforms are in ANTs
order (the last one is applied to the reference grid's points first).

ITK reads its thread count (ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS) from the environment once
per process, so :mod:`mdgru_bids.interfaces.ants` runs registrations and N4 where ITK has the
thread count they ask for (:func:`mdgru_bids.processes.run_ants`), with ANTs' seed set.
Registrations are bit-for-bit reproducible for a seed only with one thread: with more, ITK
combines the threads' parts of the mutual information in an order that varies. N4 gives the
same result for the same thread count, resampling for any.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from mdgru_bids.nifti import save_like, work_name
from mdgru_bids.transforms import (
    apply_to_points,
    covering_grid,
    invert_linear,
    mask_points,
    read_linear,
    unbiased_subject_space,
    write_linear,
)

METRIC_RIM_MM = 6.0  # BrainMask: how far beyond the template's brain the metric looks
LABEL_INTERPOLATIONS = ("nearestNeighbor", "genericLabel")
#: ANTs' own multi-resolution schedules (antsRegistrationSyN.sh): levels coarse to fine. The
#: full-resolution level is affordable only where a fixed mask keeps the metric to the brain:
#: for a rigid 1 mm rescan pair it then took a fifth of the time it takes on the whole grid
#: (the whole registration 19 s against 94 s, the same pose to 0.01 mm). subject_space keeps
#: only that level to the mask: on coarser levels a mask shrinks to little and large motions
#: were lost (3 mm phantoms).
LINEAR_ITERATIONS = [1000, 500, 250, 100]
SHRINK_FACTORS = [8, 4, 2, 1]
SMOOTHING_SIGMAS = [3.0, 2.0, 1.0, 0.0]  # voxels
#: BrainMask has no fixed mask (the brain is what it looks for), so it stops at the 2x-shrunk
#: level: on a real 1 mm FLAIR the mask then agreed with the full schedule's at Dice 0.993, in
#: a fifth of the time (27 s against 123 s).
BRAIN_MASK_ITERATIONS = [1000, 500, 250]
BRAIN_MASK_SHRINK_FACTORS = [8, 4, 2]
BRAIN_MASK_SMOOTHING_SIGMAS = [3.0, 2.0, 1.0]
#: SubjectSpace's full-resolution level (the last) converges within 20 iterations: on a real
#: 1 mm rescan pair the pose was the same as with 100 (0.019 mm mean error against the truth),
#: the registration 12 s instead of 18 s.
SUBJECT_SPACE_ITERATIONS = [1000, 500, 250, 20]
SYN_ITERATIONS = [100, 70, 50, 20]
#: Subject -> template on the template resampled to 2 mm (what the group's frequency maps need;
#: the transform still applies at 1 mm), with antsRegistrationSyNQuick.sh's levels down to
#: 2 mm (8, 4 and 2 mm voxels). Registering the 1 mm images with no iterations at 1 mm cost
#: three times as much: ANTs still builds every level and writes a 1 mm displacement field.
#: There is no affine stage: SyN starts from the brain mask's affine registration to the
#: template, which already did that work (on c26: correlation with the template brain 0.700
#: against 0.698 after a 6 s affine stage of its own). Few iterations at 4 and 2 mm: on a real
#: 1 mm subject (sub-c26 of Lesjak et al. 2017 and its rescan, from the brain mask's affine,
#: one thread) 100x20x5 took 29.7 s against 54.5 s for 100x40x10, moved template brain points
#: by 0.19 mm on average from where 100x40x10 puts them (95th percentile 0.39 mm, a fifth of a
#: group map's 2 mm voxel), and the correlation of the warped subject with the template brain
#: went from 0.700 to 0.692 (the affine alone: 0.56; converged at 2 mm: 0.70). On a 1 mm
#: phantom the template brain carried onto the subject matched its true brain as well
#: (Dice 0.985 against 0.9846) in 34 s against 54 s (bench_template_registration.py).
TEMPLATE_REGISTRATION_MM = 2.0
TEMPLATE_SYN_ITERATIONS = [100, 20, 5]


#: N4's iterations per fitting level (ANTs' default) and the tolerance at which a level stops:
#: 1e-4 rather than ANTsPy's 1e-7, which runs every iteration. In the brain of a real 1 mm
#: FLAIR (sub-c26, Lesjak et al. 2017) the field then differed by at most 0.12 % (1st-99th
#: percentile of the ratio 0.9997-1.0004), in 12.8 s against 23.2 s on one thread.
N4_CONVERGENCE = {"iters": [50, 50, 50, 50], "tol": 1e-4}


def _label_dtype(path: str) -> np.dtype:
    """The stored integer type of a label image, or float32 if it holds (scaled) reals."""
    img = nib.load(path)
    dtype = img.get_data_dtype()
    scaled = getattr(img.dataobj, "slope", 1.0) != 1.0 or getattr(img.dataobj, "inter", 0.0) != 0
    return np.dtype(np.float32) if scaled or not np.issubdtype(dtype, np.integer) else dtype


def _read(path: str) -> Any:
    """A 3-D float image as ANTsPy reads it."""
    import ants

    img = ants.image_read(str(path))
    if img.dimension != 3:
        raise ValueError(f"{path}: expected a 3-D image, got {img.dimension}-D")
    return img.clone("float")


def _read_mask(path: str | None) -> Any:
    """Nonzero voxels as a 0/1 ANTsPy image, or None."""
    if path is None:
        return None
    img = _read(path)
    return img.new_image_like((img.numpy() != 0).astype(np.float32))


def n4(
    in_file: str,
    mask_file: str | None,
    shrink_factor: int,
    spline_distance_mm: float,
    convergence: dict[str, Any],
    out_dir: str,
) -> dict[str, Any]:
    import ants

    corrected = ants.n4_bias_field_correction(
        _read(in_file),
        mask=_read_mask(mask_file),
        shrink_factor=shrink_factor,
        spline_param=spline_distance_mm,
        convergence=convergence,
    )
    out = save_like(corrected.numpy(), nib.load(in_file), Path(out_dir) / work_name("corrected"))
    return {"out_file": str(out)}


def register(
    fixed_image: str,
    moving_image: str,
    fixed_mask: str | None,
    moving_mask: str | None,
    transform: str,
    schedule: dict[str, tuple],
    out_dir: str,
    name: str,
    syn_iterations: Sequence[int] = SYN_ITERATIONS,
    resolution_mm: float | None = None,
    initial_transform: str | None = None,
) -> dict[str, Any]:
    """Register and write ``name.txt``/``name_inverse.txt`` (linear) or ``name.h5``/
    ``name_inverse.h5`` (SyN) and ``name_warped.nii`` into ``out_dir``.

    SyN starts from an affine registration with the same schedule and masks (ANTsPy's own
    SyN preset fixes its affine stage), which its composite transform then includes; with an
    empty schedule it starts from ``initial_transform`` alone. SyN's
    levels are ANTsPy's: one per entry of ``syn_iterations``, halving the voxel size down to
    the fixed image's own. With ``resolution_mm`` the fixed image and its mask are resampled
    to that voxel size first (the moving image is sampled at its points as it is); transforms
    are in world coordinates, so they apply to the originals. A linear ``initial_transform``
    (moving -> fixed, as this writes them) is where ANTs starts, and part of the result.
    """
    import ants

    out = Path(out_dir)
    full_fixed, moving = _read(fixed_image), _read(moving_image)
    fixed, mask = full_fixed, _read_mask(fixed_mask)
    if resolution_mm is not None:
        fixed = _coarse(full_fixed, resolution_mm, 0)
        mask = None if mask is None else _coarse(mask, resolution_mm, 1)
    common = {
        "mask": mask,
        "moving_mask": _read_mask(moving_mask),
        "aff_metric": "mattes",
        "syn_metric": "mattes",
    }
    syn = transform == "SyN"
    start = None if initial_transform is None else [initial_transform]
    if schedule["aff_iterations"]:
        result = ants.registration(
            fixed,
            moving,
            type_of_transform="Affine" if syn else transform,
            initial_transform=start,
            outprefix=str(out / f"{name}_ants_linear_"),
            **schedule,
            **common,
        )
        start = result["fwdtransforms"]
    if syn:
        result = ants.registration(
            fixed,
            moving,
            type_of_transform="SyNOnly",
            initial_transform=start,
            outprefix=str(out / f"{name}_ants_syn_"),
            reg_iterations=tuple(syn_iterations),
            write_composite_transform=True,
            **common,
        )
        forward, inverse = out / f"{name}.h5", out / f"{name}_inverse.h5"
        Path(result["fwdtransforms"]).replace(forward)
        Path(result["invtransforms"]).replace(inverse)
    else:
        (mat,) = result["fwdtransforms"]
        forward = write_linear(read_linear(mat), out / f"{name}.txt")
        inverse = invert_linear(forward, out / f"{name}_inverse.txt")
    warped = (
        ants.apply_transforms(full_fixed, moving, [str(forward)])
        if resolution_mm is not None  # the moving image on the fixed image's own grid
        else result["warpedmovout"]
    )
    warped_path = out / work_name(f"{name}_warped")
    warped_file = save_like(warped.numpy(), nib.load(fixed_image), warped_path)
    for leftover in out.glob(f"{name}_ants_*"):
        leftover.unlink()
    return {
        "out_transform": str(forward),
        "out_inverse_transform": str(inverse),
        "warped_image": str(warped_file),
    }


def _coarse(img: Any, voxel_mm: float, interpolation: int) -> Any:
    """``img`` resampled to isotropic ``voxel_mm`` voxels (ANTs: 0 linear, 1 nearest)."""
    import ants

    return ants.resample_image(img, (voxel_mm,) * 3, use_voxels=False, interp_type=interpolation)


def apply_transforms(
    in_file: str,
    reference_image: str,
    transforms: Sequence[str],
    interpolation: str,
    default_value: float,
    out_dir: str,
) -> dict[str, Any]:
    import ants

    resampled = ants.apply_transforms(
        _read(reference_image),
        _read(in_file),
        list(transforms),
        interpolator=interpolation,
        whichtoinvert=[False] * len(transforms),
        defaultvalue=default_value,
    ).numpy()
    dtype = _label_dtype(in_file) if interpolation in LABEL_INTERPOLATIONS else np.float32
    if np.issubdtype(dtype, np.integer):
        resampled = np.rint(resampled)
    out = Path(out_dir) / work_name("resampled", dtype)
    return {"out_file": str(save_like(resampled, nib.load(reference_image), out, dtype))}


def brain_mask(
    in_file: str,
    template_image: str,
    template_mask: str,
    schedule: dict[str, tuple],
    out_dir: str,
) -> dict[str, Any]:
    import ants
    from scipy import ndimage

    out = Path(out_dir)
    template = nib.load(template_mask)
    brain = np.asanyarray(template.dataobj) > 0
    rim = ndimage.distance_transform_edt(~brain, sampling=template.header.get_zooms()[:3])
    metric_mask = save_like(
        rim <= METRIC_RIM_MM, template, out / work_name("template_metric_mask", np.uint8), np.uint8
    )
    registered = register(
        in_file, template_image, None, str(metric_mask), "Affine", schedule, out_dir, "template"
    )
    warped = ants.apply_transforms(
        _read(in_file),
        _read_mask(template_mask),
        [registered["out_transform"]],
        interpolator="linear",
        whichtoinvert=[False],
    ).numpy()
    mask = ndimage.binary_fill_holes(warped >= 0.5)
    out_mask = save_like(mask, nib.load(in_file), out / work_name("brain_mask", np.uint8), np.uint8)
    return {"out_mask": str(out_mask), "out_transform": registered["out_transform"]}


def subject_space(
    in_files: Sequence[str],
    in_masks: Sequence[str],
    resolution_mm: float,
    margin_mm: float,
    schedule: dict[str, tuple],
    out_dir: str,
) -> dict[str, Any]:
    import ants

    out = Path(out_dir)
    brains = [
        _brain_only(image, mask, out / work_name(f"session{k + 1}_brain"))
        for k, (image, mask) in enumerate(zip(in_files, in_masks, strict=True))
    ]
    to_first = [np.eye(4)]
    for k in range(1, len(in_files)):
        name, coarse = f"session{k + 1}_to_session1", None
        if len(schedule["aff_iterations"]) > 1:  # the coarse levels on the whole grid
            levels = {key: value[:-1] for key, value in schedule.items()}
            coarse = register(
                brains[0], brains[k], None, None, "Rigid", levels, out_dir, f"{name}_coarse"
            )
        registered = register(  # the finest level kept to the brain, which makes it cheap
            brains[0],
            brains[k],
            in_masks[0],
            None,
            "Rigid",
            {key: value[-1:] for key, value in schedule.items()},
            out_dir,
            name,
            initial_transform=coarse and coarse["out_transform"],
        )
        to_first.append(read_linear(registered["out_transform"]))
    to_subject = unbiased_subject_space(to_first)
    masks = [nib.load(path) for path in in_masks]
    points = [
        apply_to_points(xfm, mask_points(np.asanyarray(img.dataobj), img.affine))
        for xfm, img in zip(to_subject, masks, strict=True)
    ]
    shape, affine = covering_grid(np.concatenate(points), resolution_mm, margin_mm)
    reference = out / work_name("reference", np.uint8)
    grid = nib.Nifti1Image(np.zeros(shape, np.uint8), affine)
    save_like(np.zeros(shape), grid, reference, np.uint8)  # the grid ANTs resamples onto
    transforms = [
        write_linear(xfm, out / f"session{k + 1}_to_subject.txt")
        for k, xfm in enumerate(to_subject)
    ]
    fixed = _read(str(reference))
    union = np.zeros(shape, bool)
    for mask, xfm in zip(in_masks, transforms, strict=True):
        moved = ants.apply_transforms(fixed, _read_mask(mask), [str(xfm)], whichtoinvert=[False])
        union |= moved.numpy() >= 0.5
    save_like(union, grid, reference, np.uint8)
    return {"out_transforms": [str(t) for t in transforms], "out_reference": str(reference)}


def _brain_only(image: str, mask: str, path: Path) -> str:
    """The image with everything outside its brain mask set to 0, as float32."""
    img = nib.load(image)
    inside = np.asanyarray(nib.load(mask).dataobj) > 0
    return str(save_like(img.get_fdata(dtype=np.float32) * inside, img, path))
