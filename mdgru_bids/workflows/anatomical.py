"""Per-session anatomical preprocessing on the session's own FLAIR grid."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from nipype.utils.filemanip import ensure_list

from mdgru_bids.interfaces.ants import ApplyTransforms, BrainMask, N4BiasCorrection, Register
from mdgru_bids.workflows.execution import expect_seconds


def init_anat_preproc_wf(
    *,
    use_t1w: bool,
    omp_nthreads: int,
    seed: int,
    registration_threads: int = 1,
    name: str = "anat_preproc_wf",
) -> pe.Workflow:
    """Mask the brain, bias-correct the FLAIR (N4) inside it, and bring the T1w onto the FLAIR
    grid, bias-corrected there.

    N4 runs with ``omp_nthreads`` threads; the registrations with ``registration_threads``
    (1, the default, is what makes them repeat exactly: see :mod:`mdgru_bids.interfaces.ants`).

    The brain mask comes from the template's mask, carried over by an affine registration of
    the template to the FLAIR as acquired (mutual information, which a smooth bias field does
    not mislead); N4 then fits the bias field inside that mask only, where it matters, once.
    The T1w is registered as acquired too, resampled onto the FLAIR grid and corrected there
    inside the same mask: one N4 per image, each on brain voxels only.

    Inputs: flair, t1w, template, template_mask. Outputs: flair_preproc, brain_mask,
    template_to_flair (the brain mask's affine, ITK text), t1w_preproc (T1w resampled onto the
    FLAIR grid) and t1w_to_flair (rigid, ITK text).
    """
    workflow = pe.Workflow(name=name)
    workflow.__desc__ = (
        "Each session's brain mask was obtained by affine registration of the template brain "
        "mask to the FLAIR (mutual information), and the FLAIR was corrected for intensity "
        "non-uniformity with N4 (Tustison et al. 2010, ANTsPy) inside that mask."
        + (
            " The session's T1-weighted image was rigidly registered to the FLAIR, resampled "
            "onto the FLAIR grid and bias-corrected there the same way."
            if use_t1w
            else ""
        )
    )
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["flair", "t1w", "template", "template_mask"]),
        name="inputnode",
    )
    outputnode = pe.Node(
        niu.IdentityInterface(
            fields=[
                "flair_preproc",
                "brain_mask",
                "template_to_flair",
                "t1w_preproc",
                "t1w_to_flair",
            ]
        ),
        name="outputnode",
    )
    # expected seconds: one thread, a 1 mm session (sub-c26 of Lesjak et al. 2017)
    brain_mask = expect_seconds(
        pe.Node(
            BrainMask(random_seed=seed, num_threads=registration_threads),
            name="brain_mask",
            n_procs=registration_threads,
        ),
        15,
    )
    n4_flair = expect_seconds(
        pe.Node(N4BiasCorrection(num_threads=omp_nthreads), name="n4_flair", n_procs=omp_nthreads),
        12,
    )
    workflow.connect([
        (inputnode, brain_mask, [("flair", "in_file"),
                                 ("template", "template_image"),
                                 ("template_mask", "template_mask")]),
        (inputnode, n4_flair, [("flair", "in_file")]),
        (brain_mask, n4_flair, [("out_mask", "mask_file")]),
        (n4_flair, outputnode, [("out_file", "flair_preproc")]),
        (brain_mask, outputnode, [("out_mask", "brain_mask"),
                                  ("out_transform", "template_to_flair")]),
    ])  # fmt: skip
    if not use_t1w:
        return workflow

    t1w_to_flair = expect_seconds(
        pe.Node(
            Register(transform="Rigid", random_seed=seed, num_threads=registration_threads),
            name="t1w_to_flair",
            n_procs=registration_threads,
        ),
        10,  # not profiled: a rigid registration kept to the brain
    )
    t1w_resample = pe.Node(ApplyTransforms(interpolation="linear"), name="t1w_resample")
    n4_t1w = expect_seconds(
        pe.Node(N4BiasCorrection(num_threads=omp_nthreads), name="n4_t1w", n_procs=omp_nthreads),
        12,
    )
    workflow.connect([
        (inputnode, t1w_to_flair, [("t1w", "moving_image")]),
        (n4_flair, t1w_to_flair, [("out_file", "fixed_image")]),
        (brain_mask, t1w_to_flair, [("out_mask", "fixed_mask")]),
        (inputnode, t1w_resample, [("t1w", "in_file")]),
        (n4_flair, t1w_resample, [("out_file", "reference_image")]),
        (t1w_to_flair, t1w_resample, [(("out_transform", ensure_list), "transforms")]),
        (t1w_resample, n4_t1w, [("out_file", "in_file")]),
        (brain_mask, n4_t1w, [("out_mask", "mask_file")]),
        (n4_t1w, outputnode, [("out_file", "t1w_preproc")]),
        (t1w_to_flair, outputnode, [("out_transform", "t1w_to_flair")]),
    ])  # fmt: skip
    return workflow
