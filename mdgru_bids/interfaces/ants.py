"""Nipype interfaces over ANTsPy: N4, registration, resampling, brain mask, subject space.

Transform files follow ITK/ANTs (see :mod:`mdgru_bids.transforms`): a registration's
``out_transform`` resamples its moving image onto the fixed grid when given to
:class:`ApplyTransforms` with the fixed image as reference; lists of transforms are in ANTs
order (the last one is applied to the reference grid's points first).

Each interface runs its ANTsPy work in a fresh Python process. ITK reads
ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS once per process, at its first use, so in a process that
already ran ITK (a reused Nipype worker, a test session) ``num_threads`` would silently have no
effect; a fresh process honours it, as the ANTs command-line tools do (starting one costs about
1.5 s, mostly importing ANTsPy). The random seed reaches
ANTs as ANTS_RANDOM_SEED (``random_seed + 1``: ANTs reads 0 as "seed from the clock").
Registrations (Register, BrainMask, SubjectSpace) are bit-for-bit reproducible for a seed only
with ``num_threads=1`` (the default): with more threads ITK combines the threads' parts of
the mutual information in an order that varies, so the same registration ends slightly
differently each time. N4 and resampling give the same result for the same ``num_threads``.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from mdgru_bids.nifti import same_grid, save_like
from mdgru_bids.processes import die_with_parent
from mdgru_bids.transforms import (
    apply_to_points,
    covering_grid,
    invert_linear,
    mask_points,
    read_linear,
    unbiased_subject_space,
    write_linear,
)

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # so the worker imports this very code
MAX_SEED = 2**31 - 2  # ANTs takes a positive C int, and we add one
METRIC_RIM_MM = 6.0  # BrainMask: how far beyond the template's brain the metric looks
LINEAR_SUFFIXES = (".txt", ".tfm", ".mat")
LABEL_INTERPOLATIONS = ("nearestNeighbor", "genericLabel")
#: ANTs' own multi-resolution schedules (antsRegistrationSyN.sh): levels coarse to fine.
LINEAR_ITERATIONS = [1000, 500, 250, 100]
SHRINK_FACTORS = [8, 4, 2, 1]
SMOOTHING_SIGMAS = [3.0, 2.0, 1.0, 0.0]  # voxels
SYN_ITERATIONS = [100, 70, 50, 20]
#: Subject -> template: antsRegistrationSyNQuick.sh's schedule, both stages stopping at the
#: 2x-shrunk level (0 iterations at full resolution; the transform is still written for the
#: full-resolution template). At 1 mm the full-resolution levels cost most of the time and
#: moved template brain points by under a millimetre (benchmarks/bench_template_registration.py).
TEMPLATE_LINEAR_ITERATIONS = [1000, 500, 250, 0]
TEMPLATE_SYN_ITERATIONS = [100, 70, 50, 0]


class _AntsInputSpec(BaseInterfaceInputSpec):
    num_threads = traits.Range(low=1, value=1, usedefault=True, desc="ITK threads")


class _RegistrationInputSpec(_AntsInputSpec):
    random_seed = traits.Range(
        low=0, high=MAX_SEED, value=0, usedefault=True, desc="seed of ANTs' metric sampling"
    )
    iterations = traits.List(
        traits.Int, LINEAR_ITERATIONS, usedefault=True, desc="linear stage: iterations per level"
    )
    shrink_factors = traits.List(
        traits.Int, SHRINK_FACTORS, usedefault=True, desc="linear stage: shrink factor per level"
    )
    smoothing_sigmas = traits.List(
        traits.Float, SMOOTHING_SIGMAS, usedefault=True, desc="linear stage: sigma per level, vox"
    )


class _N4InputSpec(_AntsInputSpec):
    in_file = File(exists=True, mandatory=True, desc="image to correct")
    mask_file = File(exists=True, desc="where to fit the bias field (nonzero voxels)")
    shrink_factor = traits.Range(low=1, value=4, usedefault=True, desc="fit on a coarser grid")
    spline_distance_mm = traits.Float(
        200.0, usedefault=True, desc="B-spline mesh spacing of the bias field (ANTs' default)"
    )


class _N4OutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="bias-corrected image, float32, grid of in_file")


class N4BiasCorrection(SimpleInterface):
    """N4 bias-field correction (ants.n4_bias_field_correction): a smooth multiplicative field
    would otherwise read as lesion or normal tissue depending on where it lies."""

    input_spec = _N4InputSpec
    output_spec = _N4OutputSpec

    def _run_interface(self, runtime):
        if isdefined(self.inputs.mask_file):
            _check_same_grid(self.inputs.mask_file, self.inputs.in_file)
        self._results.update(
            _run_isolated(
                _n4,
                self.inputs.num_threads,
                None,
                in_file=self.inputs.in_file,
                mask_file=_optional(self.inputs.mask_file),
                shrink_factor=self.inputs.shrink_factor,
                spline_distance_mm=self.inputs.spline_distance_mm,
                out_dir=runtime.cwd,
            )
        )
        return runtime


class _RegisterInputSpec(_RegistrationInputSpec):
    fixed_image = File(exists=True, mandatory=True, desc="target: its grid is the output grid")
    moving_image = File(exists=True, mandatory=True, desc="image to align to fixed_image")
    fixed_mask = File(exists=True, desc="where the metric counts, fixed grid (nonzero voxels)")
    moving_mask = File(exists=True, desc="where the metric counts, moving grid")
    transform = traits.Enum("Rigid", "Affine", "SyN", usedefault=True, desc="transform model")
    syn_iterations = traits.List(
        traits.Int, SYN_ITERATIONS, usedefault=True, desc="SyN stage: iterations per level"
    )


class _RegisterOutputSpec(TraitedSpec):
    out_transform = File(
        exists=True, desc="moving → fixed: ITK text (.txt) if linear, composite .h5 for SyN"
    )
    out_inverse_transform = File(exists=True, desc="fixed → moving, same format")
    warped_image = File(exists=True, desc="moving image on the fixed grid (linear), float32")


class Register(SimpleInterface):
    """Register moving_image to fixed_image with ANTs (mutual information, so contrasts may
    differ); SyN is preceded by an affine stage, and both are in its composite transform."""

    input_spec = _RegisterInputSpec
    output_spec = _RegisterOutputSpec

    def _run_interface(self, runtime):
        for mask, image in (
            (self.inputs.fixed_mask, self.inputs.fixed_image),
            (self.inputs.moving_mask, self.inputs.moving_image),
        ):
            if isdefined(mask):
                _check_same_grid(mask, image)
        self._results.update(
            _run_isolated(
                _register,
                self.inputs.num_threads,
                self.inputs.random_seed,
                fixed_image=self.inputs.fixed_image,
                moving_image=self.inputs.moving_image,
                fixed_mask=_optional(self.inputs.fixed_mask),
                moving_mask=_optional(self.inputs.moving_mask),
                transform=self.inputs.transform,
                schedule=_schedule(self.inputs),
                out_dir=runtime.cwd,
                name="moving_to_fixed",
                syn_iterations=list(self.inputs.syn_iterations),
            )
        )
        return runtime


class _ApplyTransformsInputSpec(_AntsInputSpec):
    in_file = File(exists=True, mandatory=True, desc="image to resample")
    reference_image = File(exists=True, mandatory=True, desc="defines the output grid")
    transforms = InputMultiObject(
        File(exists=True), mandatory=True, desc="ANTs order: the last is applied first"
    )
    invert_transform_flags = InputMultiObject(
        traits.Bool, desc="per transform: use its inverse (linear transforms only)"
    )
    interpolation = traits.Enum(
        "linear", *LABEL_INTERPOLATIONS, "bSpline", usedefault=True, desc="ANTs interpolator"
    )
    default_value = traits.Float(0.0, usedefault=True, desc="value outside the input")


class _ApplyTransformsOutputSpec(TraitedSpec):
    out_file = File(
        exists=True,
        desc="on the reference grid; in_file's data type for label interpolation, else float32",
    )


class ApplyTransforms(SimpleInterface):
    """Resample in_file onto reference_image's grid through transforms (ants.apply_transforms)."""

    input_spec = _ApplyTransformsInputSpec
    output_spec = _ApplyTransformsOutputSpec

    def _run_interface(self, runtime):
        flags = self.inputs.invert_transform_flags
        chain = _transform_chain(
            list(self.inputs.transforms), list(flags) if isdefined(flags) else None, runtime.cwd
        )
        self._results.update(
            _run_isolated(
                _apply,
                self.inputs.num_threads,
                None,
                in_file=self.inputs.in_file,
                reference_image=self.inputs.reference_image,
                transforms=chain,
                interpolation=self.inputs.interpolation,
                default_value=self.inputs.default_value,
                out_dir=runtime.cwd,
            )
        )
        return runtime


class _BrainMaskInputSpec(_RegistrationInputSpec):
    in_file = File(exists=True, mandatory=True, desc="a session's FLAIR or T1w")
    template_image = File(exists=True, mandatory=True, desc="template head or brain image")
    template_mask = File(exists=True, mandatory=True, desc="the template's brain mask")


class _BrainMaskOutputSpec(TraitedSpec):
    out_mask = File(exists=True, desc="brain mask, uint8, grid of in_file")
    out_transform = File(exists=True, desc="template → in_file, affine, ITK text")


class BrainMask(SimpleInterface):
    """Brain mask of in_file: the template's mask carried over by an affine registration of
    the template to the image (mutual information, so it works across contrasts; the metric
    counts only within METRIC_RIM_MM of the template's brain, so skull and scalp, or their
    absence from a skull-stripped template, do not pull it), thresholded at 0.5, holes filled."""

    input_spec = _BrainMaskInputSpec
    output_spec = _BrainMaskOutputSpec

    def _run_interface(self, runtime):
        _check_same_grid(self.inputs.template_mask, self.inputs.template_image)
        self._results.update(
            _run_isolated(
                _brain_mask,
                self.inputs.num_threads,
                self.inputs.random_seed,
                in_file=self.inputs.in_file,
                template_image=self.inputs.template_image,
                template_mask=self.inputs.template_mask,
                schedule=_schedule(self.inputs),
                out_dir=runtime.cwd,
            )
        )
        return runtime


class _SubjectSpaceInputSpec(_RegistrationInputSpec):
    in_files = InputMultiObject(
        File(exists=True), mandatory=True, desc="each session's bias-corrected FLAIR, in order"
    )
    in_masks = InputMultiObject(
        File(exists=True), mandatory=True, desc="each session's brain mask, on its FLAIR grid"
    )
    resolution_mm = traits.Float(1.0, usedefault=True, desc="isotropic voxel size of the grid")
    margin_mm = traits.Float(10.0, usedefault=True, desc="room around the brain masks")


class _SubjectSpaceOutputSpec(TraitedSpec):
    out_transforms = traits.List(  # a list even for one session
        File(exists=True), desc="per session: FLAIR → subject space, rigid, ITK text"
    )
    out_reference = File(
        exists=True, desc="subject-space grid; holds the union of the brain masks (uint8)"
    )


class SubjectSpace(SimpleInterface):
    """One subject space for all sessions that favours none (halfway for two): rigid
    registrations of every session's brain (image times brain mask) to the first's, then their
    mean pose (:func:`mdgru_bids.transforms.unbiased_subject_space`), and an isotropic grid
    covering every session's brain mask. With one session it is that session's own space.

    Registering brain-only images, rather than whole heads with the masks limiting the
    metric, starts ANTs from the brains' centres of mass and keeps skull and scalp from
    pulling: on 8 pairs of 3 mm phantom sessions 5-20° apart, masked whole-head registration
    ended 10 and 14 mm (mean) from the true pose in 2, brain-only within one voxel in all."""

    input_spec = _SubjectSpaceInputSpec
    output_spec = _SubjectSpaceOutputSpec

    def _run_interface(self, runtime):
        files, masks = list(self.inputs.in_files), list(self.inputs.in_masks)
        if len(files) != len(masks):
            raise ValueError(f"{len(files)} images but {len(masks)} brain masks")
        for image, mask in zip(files, masks, strict=True):
            _check_same_grid(mask, image)
        self._results.update(
            _run_isolated(
                _subject_space,
                self.inputs.num_threads,
                self.inputs.random_seed,
                in_files=files,
                in_masks=masks,
                resolution_mm=self.inputs.resolution_mm,
                margin_mm=self.inputs.margin_mm,
                schedule=_schedule(self.inputs),
                out_dir=runtime.cwd,
            )
        )
        return runtime


# --- plumbing shared by the interfaces -------------------------------------------------------


def _run_isolated(
    func: Callable[..., dict[str, Any]], num_threads: int, seed: int | None, **kwargs: Any
) -> dict[str, Any]:
    """Run ``func(**kwargs)`` (a function of this module) in a fresh Python process with ITK's
    threads and ANTs' seed set, and return its result or raise its exception.

    A plain subprocess rather than multiprocessing's spawn, which would re-run the caller's
    main script (a user's script without a ``__main__`` guard would run twice).
    """
    env = os.environ | {
        "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": str(num_threads),
        "MDGRU_BIDS_PARENT_PID": str(os.getpid()),
        "PYTHONPATH": os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")])),
    }
    if seed is not None:
        env["ANTS_RANDOM_SEED"] = str(seed + 1)
    with tempfile.TemporaryDirectory(prefix="mdgru-ants-") as tmp:
        job, result = Path(tmp) / "job.pkl", Path(tmp) / "result.pkl"
        job.write_bytes(pickle.dumps((func.__name__, kwargs)))
        code = f"from {__name__} import _worker; import sys; _worker(*sys.argv[1:])"
        done = subprocess.run([sys.executable, "-c", code, str(job), str(result)], env=env)
        if not result.exists():
            raise RuntimeError(
                f"the ANTs worker ({func.__name__}) died, exit code {done.returncode}"
            )
        ok, value = pickle.loads(result.read_bytes())
    if not ok:
        raise value
    return value


def _worker(job: str, result: str) -> None:
    """The fresh process's side of :func:`_run_isolated`; it ends with the process that
    started it, so a killed run leaves no registration writing into its work folder."""
    die_with_parent(int(os.environ["MDGRU_BIDS_PARENT_PID"]))
    name, kwargs = pickle.loads(Path(job).read_bytes())
    try:
        outcome = (True, globals()[name](**kwargs))
    except Exception as err:
        err.add_note(f"(in the ANTs worker)\n{traceback.format_exc()}")
        outcome = (False, err)
    try:
        data = pickle.dumps(outcome)
    except Exception:  # an exception that does not pickle still reports its message
        data = pickle.dumps((False, RuntimeError(f"{type(outcome[1]).__name__}: {outcome[1]}")))
    Path(result).write_bytes(data)


def _optional(value: Any) -> Any:
    return value if isdefined(value) else None


def _schedule(inputs: Any) -> dict[str, tuple]:
    """The linear stage's multi-resolution settings, as ants.registration takes them."""
    levels = (inputs.iterations, inputs.shrink_factors, inputs.smoothing_sigmas)
    if len({len(x) for x in levels}) != 1:
        raise ValueError(
            "iterations, shrink_factors and smoothing_sigmas need one entry per level "
            f"(got {', '.join(str(len(x)) for x in levels)})"
        )
    return {
        "aff_iterations": tuple(inputs.iterations),
        "aff_shrink_factors": tuple(inputs.shrink_factors),
        "aff_smoothing_sigmas": tuple(inputs.smoothing_sigmas),
    }


def _check_same_grid(path: str, like: str) -> None:
    """Refuse a mask that is not on its image's grid (a silent resampling would hide a bug)."""
    if not same_grid(nib.load(path), nib.load(like)):
        raise ValueError(f"{path} is not on the grid of {like}")


def _transform_chain(
    transforms: Sequence[str], invert: Sequence[bool] | None, out_dir: str
) -> list[str]:
    """The transforms as files ANTs applies as they are: inverted linear ones written out."""
    invert = [False] * len(transforms) if invert is None else invert
    if len(invert) != len(transforms):
        raise ValueError(
            f"invert_transform_flags has {len(invert)} entries for {len(transforms)} transforms"
        )
    chain = []
    for i, (path, inverse) in enumerate(zip(transforms, invert, strict=True)):
        if not inverse:
            chain.append(str(path))
        elif Path(path).suffix in LINEAR_SUFFIXES:
            chain.append(str(invert_linear(path, Path(out_dir) / f"inverse{i}.txt")))
        else:
            raise ValueError(
                f"cannot invert {path}: only linear transforms can be; use its inverse file"
            )
    return chain


# --- the work, run in the fresh process ------------------------------------------------------


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


def _n4(
    in_file: str, mask_file: str | None, shrink_factor: int, spline_distance_mm: float, out_dir: str
) -> dict[str, Any]:
    import ants

    corrected = ants.n4_bias_field_correction(
        _read(in_file),
        mask=_read_mask(mask_file),
        shrink_factor=shrink_factor,
        spline_param=spline_distance_mm,
    )
    out = save_like(corrected.numpy(), nib.load(in_file), Path(out_dir) / "corrected.nii.gz")
    return {"out_file": str(out)}


def _register(
    fixed_image: str,
    moving_image: str,
    fixed_mask: str | None,
    moving_mask: str | None,
    transform: str,
    schedule: dict[str, tuple],
    out_dir: str,
    name: str,
    syn_iterations: Sequence[int] = SYN_ITERATIONS,
) -> dict[str, Any]:
    """Register and write ``name.txt``/``name_inverse.txt`` (linear) or ``name.h5``/
    ``name_inverse.h5`` (SyN) and ``name_warped.nii.gz`` into ``out_dir``.

    SyN starts from an affine registration with the same schedule and masks (ANTsPy's own
    SyN preset fixes its affine stage), which its composite transform then includes.
    """
    import ants

    out = Path(out_dir)
    fixed, moving = _read(fixed_image), _read(moving_image)
    common = {
        "mask": _read_mask(fixed_mask),
        "moving_mask": _read_mask(moving_mask),
        "aff_metric": "mattes",
        "syn_metric": "mattes",
    }
    syn = transform == "SyN"
    result = ants.registration(
        fixed,
        moving,
        type_of_transform="Affine" if syn else transform,
        outprefix=str(out / f"{name}_ants_linear_"),
        **schedule,
        **common,
    )
    if syn:
        result = ants.registration(
            fixed,
            moving,
            type_of_transform="SyNOnly",
            initial_transform=result["fwdtransforms"],
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
    warped = save_like(
        result["warpedmovout"].numpy(), nib.load(fixed_image), out / f"{name}_warped.nii.gz"
    )
    for leftover in out.glob(f"{name}_ants_*"):
        leftover.unlink()
    return {
        "out_transform": str(forward),
        "out_inverse_transform": str(inverse),
        "warped_image": str(warped),
    }


def _apply(
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
    out = Path(out_dir) / "resampled.nii.gz"
    return {"out_file": str(save_like(resampled, nib.load(reference_image), out, dtype))}


def _brain_mask(
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
        rim <= METRIC_RIM_MM, template, out / "template_metric_mask.nii.gz", np.uint8
    )
    registered = _register(
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
    out_mask = save_like(mask, nib.load(in_file), out / "brain_mask.nii.gz", np.uint8)
    return {"out_mask": str(out_mask), "out_transform": registered["out_transform"]}


def _subject_space(
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
        _brain_only(image, mask, out / f"session{k + 1}_brain.nii.gz")
        for k, (image, mask) in enumerate(zip(in_files, in_masks, strict=True))
    ]
    to_first = [np.eye(4)]
    for k in range(1, len(in_files)):
        registered = _register(
            brains[0],
            brains[k],
            None,
            None,
            "Rigid",
            schedule,
            out_dir,
            f"session{k + 1}_to_session1",
        )
        to_first.append(read_linear(registered["out_transform"]))
    to_subject = unbiased_subject_space(to_first)
    masks = [nib.load(path) for path in in_masks]
    points = [
        apply_to_points(xfm, mask_points(np.asanyarray(img.dataobj), img.affine))
        for xfm, img in zip(to_subject, masks, strict=True)
    ]
    shape, affine = covering_grid(np.concatenate(points), resolution_mm, margin_mm)
    reference = out / "reference.nii.gz"
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
