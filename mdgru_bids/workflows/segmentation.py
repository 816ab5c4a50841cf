"""Per-session lesion segmentation in subject space, and the results on the session's grid."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from nipype.utils.filemanip import ensure_list

from mdgru_bids.interfaces.ants import ApplyTransforms
from mdgru_bids.interfaces.segmentation import SegmentLesions
from mdgru_bids.workflows.execution import expect_seconds

TTA_DESC = " (lesion probabilities averaged over the image and its three mirror images)"


def init_lesion_seg_wf(
    *,
    use_t1w: bool,
    model: str,
    device: str,
    precision: str,
    tta: bool,
    threshold: float,
    min_lesion_mm3: float,
    omp_nthreads: int,
    name: str = "lesion_seg_wf",
) -> pe.Workflow:
    """Resample one session into subject space and run MD-GRU.

    Inputs: flair_preproc, t1w_preproc, brain_mask (session grid), to_subject (session →
    subject, ITK text), subject_reference (the subject-space grid).
    Outputs: subject-space images, brain mask and the network's probseg (for SubjectLesions,
    which draws every session's lesions at once, and for the template).
    """
    workflow = pe.Workflow(name=name)
    workflow.__desc__ = (
        f"Lesions were segmented in subject space with a Multi-Dimensional Gated Recurrent Unit "
        f"network (MD-GRU, Andermatt et al. 2016, 2017) from the "
        f"{'FLAIR and T1w images' if use_t1w else 'FLAIR image'}, z-scored over the brain "
        f"mask voxels with signal{TTA_DESC if tta else ''}; voxels with lesion probability "
        f"above {threshold} formed lesions (26-connected components) of at least "
        f"{min_lesion_mm3} mm³. Probability maps and lesion masks were resampled back onto "
        "each session's own FLAIR grid."
    )
    inputnode = pe.Node(
        niu.IdentityInterface(
            fields=["flair_preproc", "t1w_preproc", "brain_mask", "to_subject", "subject_reference"]
        ),
        name="inputnode",
    )
    outputnode = pe.Node(
        niu.IdentityInterface(
            fields=["subject_flair", "subject_t1w", "subject_mask", "subject_probseg"]
        ),
        name="outputnode",
    )
    xfm = pe.Node(niu.Merge(1), name="xfm")
    channels = ["flair", "t1w"] if use_t1w else ["flair"]
    images = pe.Node(niu.Merge(len(channels)), name="images")
    segment = expect_seconds(
        pe.Node(
            SegmentLesions(
                model=model, device=device, precision=precision, tta=tta, num_threads=omp_nthreads
            ),
            name="segment",
            n_procs=omp_nthreads,
        ),
        12 * (4 if tta else 1),  # one thread, a 1 mm session; TTA runs four orientations
    )
    to_subject_mask = pe.Node(
        ApplyTransforms(interpolation="nearestNeighbor"), name="to_subject_mask"
    )
    workflow.connect([
        (inputnode, xfm, [("to_subject", "in1")]),
        (inputnode, to_subject_mask, [("brain_mask", "in_file"),
                                      ("subject_reference", "reference_image")]),
        (xfm, to_subject_mask, [("out", "transforms")]),
        (images, segment, [("out", "in_files")]),
        (to_subject_mask, segment, [("out_file", "mask_file")]),
        (to_subject_mask, outputnode, [("out_file", "subject_mask")]),
        (segment, outputnode, [("out_probseg", "subject_probseg")]),
    ])  # fmt: skip
    for i, channel in enumerate(channels, start=1):
        resample = pe.Node(ApplyTransforms(interpolation="linear"), name=f"to_subject_{channel}")
        workflow.connect([
            (inputnode, resample, [(f"{channel}_preproc", "in_file"),
                                   ("subject_reference", "reference_image")]),
            (xfm, resample, [("out", "transforms")]),
            (resample, images, [("out_file", f"in{i}")]),
            (resample, outputnode, [("out_file", f"subject_{channel}")]),
        ])  # fmt: skip
    return workflow


def init_lesions_to_session_wf(name: str = "lesions_to_session_wf") -> pe.Workflow:
    """A session's lesions (subject space, from SubjectLesions) onto its own FLAIR grid.

    Inputs: flair_preproc (the session's grid), to_subject (session → subject, ITK text),
    probseg and mask in subject space. Outputs: the same on the session's grid.
    """
    workflow = pe.Workflow(name=name)
    maps = (("probseg", "linear"), ("mask", "nearestNeighbor"))
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["flair_preproc", "to_subject", *(m for m, _ in maps)]),
        name="inputnode",
    )
    outputnode = pe.Node(niu.IdentityInterface(fields=[m for m, _ in maps]), name="outputnode")
    for what, interpolation in maps:
        node = pe.Node(
            ApplyTransforms(interpolation=interpolation, invert_transform_flags=[True]),
            name=f"{what}_to_session",
        )
        workflow.connect([
            (inputnode, node, [("flair_preproc", "reference_image"), (what, "in_file"),
                               (("to_subject", ensure_list), "transforms")]),
            (node, outputnode, [("out_file", what)]),
        ])  # fmt: skip
    return workflow
