"""The per-participant workflow: every session, one subject space, lesions and their change."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from nipype.utils.filemanip import ensure_list

from mdgru_bids.collect import Subject
from mdgru_bids.interfaces.ants import (
    TEMPLATE_LINEAR_ITERATIONS,
    TEMPLATE_SYN_ITERATIONS,
    ApplyTransforms,
    Register,
    SubjectSpace,
)
from mdgru_bids.interfaces.images import MeanImage
from mdgru_bids.interfaces.lesions import LesionChange, LesionTable
from mdgru_bids.lesions.change import ChangeThresholds
from mdgru_bids.templates import Template
from mdgru_bids.workflows.anatomical import init_anat_preproc_wf
from mdgru_bids.workflows.outputs import Sinks
from mdgru_bids.workflows.segmentation import init_lesion_seg_wf


@dataclass(frozen=True)
class WorkflowConfig:
    """Everything the workflow builders need beyond the subject's files."""

    bids_dir: Path
    derivatives_dir: Path  # where the data sinks write (a staging folder, published on success)
    model: Path
    model_inputs: tuple[str, ...]
    template: Template
    device: str = "cpu"
    precision: str = "auto"
    omp_nthreads: int = 1  # N4 and the network
    registration_threads: int = 1  # ANTs registrations: 1 repeats exactly, more may not
    seed: int = 0
    threshold: float = 0.5
    min_lesion_mm3: float = 10.0
    change: ChangeThresholds = field(default_factory=ChangeThresholds)
    subject_resolution_mm: float = 1.0


def init_single_subject_wf(subject: Subject, cfg: WorkflowConfig) -> pe.Workflow:
    """All of one participant's processing, sessions in acquisition order."""
    use_t1w = "T1w" in cfg.model_inputs
    n = len(subject.sessions)
    workflow = pe.Workflow(name=f"sub_{subject.label}_wf")
    # Nipype keeps method text on workflows only, so the subject-level steps are described here.
    workflow.__desc__ = " ".join(
        [f"Participant {subject.label} had {n} session(s), processed in acquisition order.",
         _SUBJECT_SPACE_DESC] + ([_CHANGE_DESC.format(t=cfg.change)] if n > 1 else [])
    )  # fmt: skip
    workflow.__postdesc__ = _settings_desc(cfg)
    merged = {key: pe.Node(niu.Merge(n), name=f"merge_{key}") for key in ("flair", "mask", "mean")}
    subject_space = pe.Node(
        SubjectSpace(
            resolution_mm=cfg.subject_resolution_mm,
            random_seed=cfg.seed,
            num_threads=cfg.registration_threads,
        ),
        name="subject_space",
        n_procs=cfg.registration_threads,
    )
    mean = pe.Node(MeanImage(), name="subject_mean")
    to_template = pe.Node(
        Register(
            transform="SyN",
            iterations=TEMPLATE_LINEAR_ITERATIONS,
            syn_iterations=TEMPLATE_SYN_ITERATIONS,
            random_seed=cfg.seed,
            num_threads=cfg.registration_threads,
            fixed_image=str(cfg.template.t1w),
            fixed_mask=str(cfg.template.brain_mask),
        ),
        name="to_template",
        n_procs=cfg.registration_threads,
    )
    workflow.connect([
        (merged["flair"], subject_space, [("out", "in_files")]),
        (merged["mask"], subject_space, [("out", "in_masks")]),
        (merged["mean"], mean, [("out", "in_files")]),
        (mean, to_template, [("out_file", "moving_image")]),
    ])  # fmt: skip
    sinks = Sinks(workflow, cfg, subject)
    sinks.subject_xfm(to_template)

    previous = None
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
            threshold=cfg.threshold,
            min_lesion_mm3=cfg.min_lesion_mm3,
            omp_nthreads=cfg.omp_nthreads,
            name=f"lesion_seg_{tag}_wf",
        )
        table = pe.Node(LesionTable(), name=f"lesion_table_{tag}")
        to_template_space = pe.Node(
            ApplyTransforms(interpolation="linear", reference_image=str(cfg.template.t1w)),
            name=f"probseg_to_template_{tag}",
        )
        workflow.connect([
            (anat, merged["flair"], [("outputnode.flair_preproc", f"in{i + 1}")]),
            (anat, merged["mask"], [("outputnode.brain_mask", f"in{i + 1}")]),
            (seg, merged["mean"], [
                (f"outputnode.subject_{'t1w' if use_t1w else 'flair'}", f"in{i + 1}")]),
            (subject_space, pick, [("out_transforms", "inlist")]),
            (anat, seg, [("outputnode.flair_preproc", "inputnode.flair_preproc"),
                         ("outputnode.t1w_preproc", "inputnode.t1w_preproc"),
                         ("outputnode.brain_mask", "inputnode.brain_mask")]),
            (pick, seg, [("out", "inputnode.to_subject")]),
            (subject_space, seg, [("out_reference", "inputnode.subject_reference")]),
            (seg, table, [("outputnode.labels", "labels"), ("outputnode.probseg", "probseg")]),
            (seg, to_template_space, [("outputnode.subject_probseg", "in_file")]),
            (to_template, to_template_space, [(("out_transform", ensure_list), "transforms")]),
        ])  # fmt: skip
        sinks.session(session, anat, seg, table, pick, to_template_space, use_t1w)
        if previous is not None:
            change = pe.Node(
                LesionChange(
                    min_change_mm3=cfg.change.min_change_mm3,
                    min_change_fraction=cfg.change.min_change_fraction,
                ),
                name=f"lesion_change_{tag}",
            )
            change_to_session = pe.Node(
                ApplyTransforms(interpolation="nearestNeighbor", invert_transform_flags=[True]),
                name=f"change_to_session_{tag}",
            )
            workflow.connect([
                (previous, change, [("outputnode.subject_labels", "previous_labels")]),
                (seg, change, [("outputnode.subject_labels", "current_labels")]),
                (change, table, [("out_table", "change_table")]),
                (change, change_to_session, [("out_dseg", "in_file")]),
                (anat, change_to_session, [("outputnode.flair_preproc", "reference_image")]),
                (pick, change_to_session, [(("out", ensure_list), "transforms")]),
            ])  # fmt: skip
            sinks.change(session, subject.sessions[i - 1], change, change_to_session)
        previous = seg
    return workflow


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
    "connected through overlaps, as after a merge or split, form one group). A group without "
    "an earlier lesion is new, one without a later lesion resolved; otherwise it is enlarging "
    "or shrinking when its volume changed by at least {t.min_change_mm3} mm³ and by at least "
    "{t.min_change_fraction:.0%} of the earlier volume, and stable otherwise."
)
