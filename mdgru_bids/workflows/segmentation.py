"""Per-session lesion segmentation in subject space, and the results on the session's grid."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mdgru_bids.interfaces.ants import ApplyTransforms
from mdgru_bids.interfaces.lesions import LesionMask
from mdgru_bids.interfaces.segmentation import SegmentLesions

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
    """Resample one session into subject space, run MD-GRU, threshold, and resample back.

    Inputs: flair_preproc, t1w_preproc, brain_mask (session grid), to_subject (session →
    subject, ITK text), subject_reference (the subject-space grid).
    Outputs: subject-space images, brain mask, probseg and lesion labels (for change, the
    lesion tables and the template),
    and the session-grid probseg, labels and lesion mask (for the derivatives).
    """
    workflow = pe.Workflow(name=name)
    workflow.__desc__ = (
        f"Lesions were segmented in subject space with a Multi-Dimensional Gated Recurrent Unit "
        f"network (MD-GRU, Andermatt et al. 2016, 2017) from the "
        f"{'FLAIR and T1w images' if use_t1w else 'FLAIR image'}, z-scored inside the brain "
        f"mask{TTA_DESC if tta else ''}; voxels with lesion probability above {threshold} "
        f"formed lesions (26-connected components) of at least {min_lesion_mm3} mm³. "
        "Probability maps and lesion masks were "
        "resampled back onto each session's own FLAIR grid."
    )
    inputnode = pe.Node(
        niu.IdentityInterface(
            fields=["flair_preproc", "t1w_preproc", "brain_mask", "to_subject", "subject_reference"]
        ),
        name="inputnode",
    )
    outputnode = pe.Node(
        niu.IdentityInterface(
            fields=[
                "subject_flair",
                "subject_t1w",
                "subject_mask",
                "subject_probseg",
                "subject_labels",
                "probseg",
                "labels",
                "mask",
            ]
        ),
        name="outputnode",
    )
    xfm = pe.Node(niu.Merge(1), name="xfm")
    channels = ["flair", "t1w"] if use_t1w else ["flair"]
    images = pe.Node(niu.Merge(len(channels)), name="images")
    segment = pe.Node(
        SegmentLesions(
            model=model, device=device, precision=precision, tta=tta, num_threads=omp_nthreads
        ),
        name="segment",
        n_procs=omp_nthreads,
    )
    to_subject_mask = pe.Node(
        ApplyTransforms(interpolation="nearestNeighbor"), name="to_subject_mask"
    )
    lesions = pe.Node(
        LesionMask(threshold=threshold, min_volume_mm3=min_lesion_mm3), name="lesions"
    )
    back = {
        name: pe.Node(
            ApplyTransforms(interpolation=interp, invert_transform_flags=[True]),
            name=f"{name}_to_session",
        )
        for name, interp in (
            ("probseg", "linear"),
            ("labels", "nearestNeighbor"),
            ("mask", "nearestNeighbor"),
        )
    }
    workflow.connect([
        (inputnode, xfm, [("to_subject", "in1")]),
        (inputnode, to_subject_mask, [("brain_mask", "in_file"),
                                      ("subject_reference", "reference_image")]),
        (xfm, to_subject_mask, [("out", "transforms")]),
        (images, segment, [("out", "in_files")]),
        (to_subject_mask, segment, [("out_file", "mask_file")]),
        (to_subject_mask, outputnode, [("out_file", "subject_mask")]),
        (segment, lesions, [("out_probseg", "probseg")]),
        (segment, outputnode, [("out_probseg", "subject_probseg")]),
        (lesions, outputnode, [("out_labels", "subject_labels")]),
        (segment, back["probseg"], [("out_probseg", "in_file")]),
        (lesions, back["labels"], [("out_labels", "in_file")]),
        (lesions, back["mask"], [("out_mask", "in_file")]),
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
    for name, node in back.items():
        workflow.connect([
            (inputnode, node, [("flair_preproc", "reference_image")]),
            (xfm, node, [("out", "transforms")]),
            (node, outputnode, [("out_file", name)]),
        ])  # fmt: skip
    return workflow
