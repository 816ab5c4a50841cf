"""Nipype interfaces over :mod:`mdgru_bids.registration`: N4, registration, resampling,
brain mask, subject space.

Each interface checks its inputs and runs its function with ITK's thread count and ANTs' seed
set (:func:`mdgru_bids.processes.run_ants`): ITK reads ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS
once per process, at its first use, so the function runs in the app's Nipype worker, whose
ITK has one thread, when ``num_threads`` is 1, and otherwise in a fresh Python process
(about 3.5 s, mostly importing ANTsPy), as the ANTs command-line tools would. The random seed
reaches ANTs as ``random_seed + 1`` (ANTs reads 0 as "seed from the clock").
Registrations (Register, BrainMask, SubjectSpace) are bit-for-bit reproducible for a seed only
with ``num_threads=1`` (the default), in a worker or apart alike.

ApplyTransforms always resamples in the calling process, with whatever thread count ITK has
there, because resampling gives the same voxels for any thread count (checked on a 1 mm FLAIR:
1, 2 and the default) and a fresh process cost more than the resampling (about 2 s of a 3.5 s
step, a dozen of them per two-session run).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from mdgru_bids import registration
from mdgru_bids.nifti import same_grid
from mdgru_bids.processes import run_ants
from mdgru_bids.registration import (
    BRAIN_MASK_ITERATIONS,
    BRAIN_MASK_SHRINK_FACTORS,
    BRAIN_MASK_SMOOTHING_SIGMAS,
    LABEL_INTERPOLATIONS,
    LINEAR_ITERATIONS,
    N4_CONVERGENCE,
    SHRINK_FACTORS,
    SMOOTHING_SIGMAS,
    SUBJECT_SPACE_ITERATIONS,
    SYN_ITERATIONS,
)
from mdgru_bids.transforms import invert_linear

MAX_SEED = 2**31 - 2  # ANTs takes a positive C int, and we add one
LINEAR_SUFFIXES = (".txt", ".tfm", ".mat")


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
    iterations = traits.List(
        traits.Int, N4_CONVERGENCE["iters"], usedefault=True, desc="per fitting level"
    )
    tolerance = traits.Float(
        N4_CONVERGENCE["tol"], usedefault=True, desc="a level stops when it changes less"
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
            run_ants(
                registration.n4,
                self.inputs.num_threads,
                None,
                in_file=self.inputs.in_file,
                mask_file=_optional(self.inputs.mask_file),
                shrink_factor=self.inputs.shrink_factor,
                spline_distance_mm=self.inputs.spline_distance_mm,
                convergence={"iters": self.inputs.iterations, "tol": self.inputs.tolerance},
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
    resolution_mm = traits.Float(
        desc="register on the fixed image resampled to this voxel size (the transforms still "
        "apply at full resolution)"
    )
    initial_transform = File(
        exists=True,
        desc="linear, moving → fixed (as out_transform): where ANTs starts; part of the result",
    )


class _RegisterOutputSpec(TraitedSpec):
    out_transform = File(
        exists=True, desc="moving → fixed: ITK text (.txt) if linear, composite .h5 for SyN"
    )
    out_inverse_transform = File(exists=True, desc="fixed → moving, same format")
    warped_image = File(exists=True, desc="moving image on the fixed grid (linear), float32")


class Register(SimpleInterface):
    """Register moving_image to fixed_image with ANTs (mutual information, so contrasts may
    differ); SyN is preceded by an affine stage (none with empty ``iterations``: it then starts
    from ``initial_transform``), and both are in its composite transform."""

    input_spec = _RegisterInputSpec
    output_spec = _RegisterOutputSpec

    def _run_interface(self, runtime):
        for mask, image in (
            (self.inputs.fixed_mask, self.inputs.fixed_image),
            (self.inputs.moving_mask, self.inputs.moving_image),
        ):
            if isdefined(mask):
                _check_same_grid(mask, image)
        if not self.inputs.iterations and not (
            self.inputs.transform == "SyN" and isdefined(self.inputs.initial_transform)
        ):
            raise ValueError(
                f"a {self.inputs.transform} registration without linear levels needs SyN and "
                "an initial_transform"
            )
        self._results.update(
            run_ants(
                registration.register,
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
                resolution_mm=_optional(self.inputs.resolution_mm),
                initial_transform=_optional(self.inputs.initial_transform),
            )
        )
        return runtime


class _ApplyTransformsInputSpec(BaseInterfaceInputSpec):
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
            registration.apply_transforms(
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
    iterations = traits.List(traits.Int, BRAIN_MASK_ITERATIONS, usedefault=True, desc="per level")
    shrink_factors = traits.List(
        traits.Int, BRAIN_MASK_SHRINK_FACTORS, usedefault=True, desc="shrink factor per level"
    )
    smoothing_sigmas = traits.List(
        traits.Float, BRAIN_MASK_SMOOTHING_SIGMAS, usedefault=True, desc="sigma per level, vox"
    )
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
            run_ants(
                registration.brain_mask,
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
        File(exists=True), mandatory=True, desc="each session's FLAIR, in order"
    )
    in_masks = InputMultiObject(
        File(exists=True), mandatory=True, desc="each session's brain mask, on its FLAIR grid"
    )
    iterations = traits.List(
        traits.Int, SUBJECT_SPACE_ITERATIONS, usedefault=True, desc="per level (the last: masked)"
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
    registrations of every session's brain (image times brain mask) to the first's (the finest
    level kept to the first's brain mask, which makes it cheap at full resolution; the coarser
    ones on the whole grid, where a mask would shrink to little and lose large motions), then their
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
            run_ants(
                registration.subject_space,
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
