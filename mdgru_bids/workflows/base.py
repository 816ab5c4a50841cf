"""The per-participant workflow: every session, one subject space, lesions and their change."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from nipype.utils.filemanip import ensure_list

from mdgru_bids.collect import Subject
from mdgru_bids.interfaces.ants import ApplyTransforms
from mdgru_bids.interfaces.lesions import LesionTable, SubjectLesions
from mdgru_bids.lesions.longitudinal import CHANGE_RULES, RING_REACH
from mdgru_bids.workflows.anatomical import init_anat_preproc_wf
from mdgru_bids.workflows.config import WorkflowConfig
from mdgru_bids.workflows.outputs import init_session_outputs_wf, init_subject_outputs_wf
from mdgru_bids.workflows.segmentation import init_lesion_seg_wf, init_lesions_to_session_wf
from mdgru_bids.workflows.subject_space import init_subject_space_wf
from mdgru_bids.workflows.template import init_template_wf


def init_single_subject_wf(subject: Subject, cfg: WorkflowConfig) -> pe.Workflow:
    """All of one participant's processing, sessions in acquisition order: per session
    preprocessing and segmentation, one subject space, change between consecutive sessions,
    the template registration, and the data sinks."""
    use_t1w = "T1w" in cfg.model_inputs
    n = len(subject.sessions)
    workflow = pe.Workflow(name=f"sub_{subject.label}_wf")
    # Nipype keeps method text on workflows only, so the subject-level steps are described here.
    workflow.__desc__ = " ".join(
        [f"Participant {subject.label} had {n} session(s), processed in acquisition order.",
         _SUBJECT_SPACE_DESC]
        + ([_change_desc(cfg)] + ([_JOINT_DESC] if cfg.consistent else []) if n > 1 else [])
    )  # fmt: skip
    workflow.__postdesc__ = _settings_desc(cfg)
    merged = {
        key: pe.Node(niu.Merge(n), name=f"merge_{key}")
        for key in ("flair", "mask", "mean", "subject_probseg", "subject_flair", "subject_mask")
    }
    subject_space = init_subject_space_wf(cfg, n)
    subject_space.inputs.inputnode.flair = [str(session.flair) for session in subject.sessions]
    template = init_template_wf(cfg)
    subject_outputs = init_subject_outputs_wf(cfg, subject, name="outputs_subject_wf")
    lesions = pe.Node(
        SubjectLesions(
            threshold=cfg.threshold,
            min_volume_mm3=cfg.min_lesion_mm3,
            consistent=cfg.consistent,
            min_change_mm3=cfg.change.min_change_mm3,
            min_change_fraction=cfg.change.min_change_fraction,
            absent_probability=cfg.evidence.absent,
            absent_quantile=cfg.evidence.absent_quantile,
            min_flair_change=cfg.evidence.min_flair_change,
        ),
        name="subject_lesions",
    )
    workflow.connect([
        (merged["mask"], subject_space, [("out", "inputnode.brain_mask")]),
        (merged["mean"], template, [("out", "inputnode.subject_images")]),
        (template, subject_outputs, [
            ("outputnode.subject_to_template", "inputnode.subject_to_template")]),
        (merged["flair"], lesions, [("out", "native_flair")]),
        (merged["subject_probseg"], lesions, [("out", "probseg")]),
        (merged["subject_flair"], lesions, [("out", "flair")]),
        (merged["subject_mask"], lesions, [("out", "mask")]),
    ])  # fmt: skip

    for i, session in enumerate(subject.sessions):
        tag = session.tag
        anat = init_anat_preproc_wf(
            use_t1w=use_t1w,
            omp_nthreads=cfg.omp_nthreads,
            seed=cfg.seed,
            registration_threads=cfg.registration_threads,
            name=f"anat_preproc_{tag}_wf",
        )
        anat.inputs.inputnode.flair = str(session.flair)
        anat.inputs.inputnode.t1w = str(session.t1w) if use_t1w else None
        anat.inputs.inputnode.template = str(cfg.template.t1w)
        anat.inputs.inputnode.template_mask = str(cfg.template.brain_mask)
        pick = pe.Node(niu.Select(index=i), name=f"to_subject_{tag}")
        seg = init_lesion_seg_wf(
            use_t1w=use_t1w,
            model=str(cfg.model),
            device=cfg.device,
            precision=cfg.precision,
            tta=cfg.tta,
            threshold=cfg.threshold,
            min_lesion_mm3=cfg.min_lesion_mm3,
            omp_nthreads=cfg.omp_nthreads,
            name=f"lesion_seg_{tag}_wf",
        )
        mine = {
            what: pe.Node(niu.Select(index=i), name=f"lesion_{what}_{tag}")
            for what in ("probseg", "labels", "mask")
        }
        to_session = init_lesions_to_session_wf(name=f"lesions_to_session_{tag}_wf")
        table = pe.Node(LesionTable(), name=f"lesion_table_{tag}")
        to_template_space = pe.Node(
            ApplyTransforms(interpolation="linear", reference_image=str(cfg.template.t1w)),
            name=f"probseg_to_template_{tag}",
        )
        outputs = init_session_outputs_wf(
            cfg, subject, session, subject.sessions[i - 1] if i else None, use_t1w,
            name=f"outputs_{tag}_wf",
        )  # fmt: skip
        workflow.connect([
            (anat, merged["flair"], [("outputnode.flair_preproc", f"in{i + 1}")]),
            (anat, merged["mask"], [("outputnode.brain_mask", f"in{i + 1}")]),
            (seg, merged["mean"], [
                (f"outputnode.subject_{'t1w' if use_t1w else 'flair'}", f"in{i + 1}")]),
            *[(seg, merged[f"subject_{what}"], [(f"outputnode.subject_{what}", f"in{i + 1}")])
              for what in ("probseg", "flair", "mask")],
            *[(lesions, node, [(f"out_{what}", "inlist")]) for what, node in mine.items()],
            *[(mine[what], to_session, [("out", f"inputnode.{what}")])
              for what in ("probseg", "mask")],
            (anat, to_session, [("outputnode.flair_preproc", "inputnode.flair_preproc")]),
            (pick, to_session, [("out", "inputnode.to_subject")]),
            (subject_space, pick, [("outputnode.to_subject", "inlist")]),
            (anat, seg, [("outputnode.flair_preproc", "inputnode.flair_preproc"),
                         ("outputnode.t1w_preproc", "inputnode.t1w_preproc"),
                         ("outputnode.brain_mask", "inputnode.brain_mask")]),
            (pick, seg, [("out", "inputnode.to_subject")]),
            (subject_space, seg, [("outputnode.reference", "inputnode.subject_reference")]),
            (mine["labels"], table, [("out", "labels")]),
            (mine["probseg"], table, [("out", "probseg")]),
            (pick, table, [("out", "to_subject")]),
            (mine["probseg"], to_template_space, [("out", "in_file")]),
            (template, to_template_space, [
                (("outputnode.subject_to_template", ensure_list), "transforms")]),
            (anat, outputs, [("outputnode.flair_preproc", "inputnode.preproc_flair"),
                             ("outputnode.brain_mask", "inputnode.brain_mask")]),
            (to_session, outputs, [("outputnode.probseg", "inputnode.probseg"),
                                   ("outputnode.mask", "inputnode.lesion_mask")]),
            (table, outputs, [("out_table", "inputnode.lesion_table")]),
            (pick, outputs, [("out", "inputnode.to_subject")]),
            (to_template_space, outputs, [("out_file", "inputnode.template_probseg")]),
        ])  # fmt: skip
        if use_t1w:
            workflow.connect(anat, "outputnode.t1w_preproc", outputs, "inputnode.preproc_t1w")
        if i == 0:
            workflow.connect([
                (anat, template, [
                    ("outputnode.template_to_flair", "inputnode.template_to_session")]),
                (pick, template, [("out", "inputnode.session_to_subject")]),
            ])  # fmt: skip
        if i:
            change = {
                key: pe.Node(niu.Select(index=i - 1), name=f"change_{key}_{tag}")
                for key in ("dseg", "table")
            }
            change_to_session = pe.Node(
                ApplyTransforms(interpolation="nearestNeighbor", invert_transform_flags=[True]),
                name=f"change_to_session_{tag}",
            )
            workflow.connect([
                (lesions, change["dseg"], [("out_dseg", "inlist")]),
                (lesions, change["table"], [("out_table", "inlist")]),
                (change["dseg"], change_to_session, [("out", "in_file")]),
                (anat, change_to_session, [("outputnode.flair_preproc", "reference_image")]),
                (pick, change_to_session, [(("out", ensure_list), "transforms")]),
                (change["table"], table, [("out", "change_table")]),
                (change_to_session, outputs, [("out_file", "inputnode.change_dseg")]),
                (change["table"], outputs, [("out", "inputnode.change_table")]),
            ])  # fmt: skip
    return workflow


def _change_desc(cfg: WorkflowConfig) -> str:
    """The methods sentence of the change rule in use."""
    rule = _EVIDENCE_DESC if cfg.evidence != CHANGE_RULES["difference"] else _DIFFERENCE_DESC
    return _CHANGE_DESC + " " + rule.format(t=cfg.change, e=cfg.evidence)


def _settings_desc(cfg: WorkflowConfig) -> str:
    """The methods sentence that lets a reader repeat the run."""
    repeat = (
        "so a rerun with these settings on the same machine gives identical outputs"
        if cfg.registration_threads == 1
        else "more than one, so registrations, and the outputs that depend on them, can "
        "differ slightly between runs"
    )
    return (
        f"Processing used random seed {cfg.seed}. ANTs registrations ran with "
        f"{cfg.registration_threads} ITK thread(s), {repeat}; N4 ran with {cfg.omp_nthreads} "
        f"thread(s) and the network on {cfg.device} in {cfg.precision} arithmetic with "
        f"{cfg.omp_nthreads} thread(s)."
    )


_SUBJECT_SPACE_DESC = (
    "All sessions were brought into one subject space without favouring any of them: each "
    "session was rigidly registered to the first, and the subject space was placed at the mean "
    "of those poses (Karcher mean of rigid transforms), so that every image is resampled "
    "exactly once."
)
_CHANGE_DESC = (
    "Lesions of consecutive sessions were matched by overlap in subject space (lesions "
    "connected through overlaps, as after a merge or split, form one group). Lesion volumes "
    "are partial volumes in subject space: the lesion probability summed over the lesion and "
    "its immediate neighbours (for a group, over the same footprint in both sessions)."
)
_EVIDENCE_DESC = (
    "A change was called only with evidence from both sessions: a group without an earlier "
    "lesion is new, and one without a later lesion resolved, only where the other session's "
    "lesion probability stayed below {e.absent} over at least {e.absent_quantile:.0%} of the "
    "lesion's voxels and the FLAIR (robust z-score in the brain) rose, or fell, there by at "
    "least {e.min_flair_change} on average, and by as much more than in the lesion-free "
    f"tissue up to {RING_REACH} voxels around the group, the two FLAIR images compared at the "
    "coarser session's resolution (the finer one blurred to match) and a voxel outside a "
    "session's brain mask never counting as absent there; a group is enlarging or shrinking "
    "when its partial volume changed by at least {t.min_change_mm3} mm³ and by at least "
    "{t.min_change_fraction:.0%} of the earlier volume, with that evidence in the grown or lost "
    "voxels; every other group is stable."
)
_DIFFERENCE_DESC = (
    "Change was taken from the thresholded masks alone: a group without an earlier lesion is "
    "new, one without a later lesion resolved; otherwise it is enlarging or shrinking when its "
    "partial volume changed by at least {t.min_change_mm3} mm³ and by at least "
    "{t.min_change_fraction:.0%} of the earlier volume, and stable otherwise."
)
_JOINT_DESC = (
    "Sessions were segmented jointly: outside the lesion groups found changed (grown by two "
    "voxels), every session's lesion probability was replaced by the mean of all sessions' "
    "probabilities, each weighted by 1 / (its acquired voxel volume)², and lesions and change "
    "were then drawn again from these probabilities, so a lesion that did not change has the "
    "same extent and volume at every session. A lesion seen at an earlier session was never "
    "called new, nor one seen again at a later session resolved."
)
