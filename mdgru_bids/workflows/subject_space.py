"""One subject space for all of a participant's sessions."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mdgru_bids.interfaces.ants import SubjectSpace
from mdgru_bids.workflows.config import WorkflowConfig
from mdgru_bids.workflows.execution import expect_seconds


def init_subject_space_wf(
    cfg: WorkflowConfig, sessions: int, name: str = "subject_space_wf"
) -> pe.Workflow:
    """One rigid subject space for all sessions (:class:`SubjectSpace`).

    Inputs: flair (the FLAIR images as acquired: mutual information is not misled by their
    bias fields, so this need not wait for N4), brain_mask (lists, one per session, on the
    sessions' grids).
    Outputs: to_subject (list: each session → subject, ITK text), reference (the grid).
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["flair", "brain_mask"]), name="inputnode")
    outputnode = pe.Node(
        niu.IdentityInterface(fields=["to_subject", "reference"]), name="outputnode"
    )
    subject_space = expect_seconds(
        pe.Node(
            SubjectSpace(
                resolution_mm=cfg.subject_resolution_mm,
                random_seed=cfg.seed,
                num_threads=cfg.registration_threads,
            ),
            name="subject_space",
            n_procs=cfg.registration_threads,
        ),
        2 + 35 * (sessions - 1),  # a registration per later session (c26, 1 mm: 31-39 s)
    )
    workflow.connect([
        (inputnode, subject_space, [("flair", "in_files"), ("brain_mask", "in_masks")]),
        (subject_space, outputnode, [("out_transforms", "to_subject"),
                                     ("out_reference", "reference")]),
    ])  # fmt: skip
    return workflow
