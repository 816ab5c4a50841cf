"""Lesion change between consecutive sessions."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from nipype.utils.filemanip import ensure_list

from mdgru_bids.interfaces.ants import ApplyTransforms
from mdgru_bids.interfaces.lesions import LesionChange
from mdgru_bids.workflows.config import WorkflowConfig

SESSIONS = ("previous", "current")
PER_SESSION = ("labels", "probseg", "flair", "mask")


def init_lesion_change_wf(cfg: WorkflowConfig, name: str = "lesion_change_wf") -> pe.Workflow:
    """Lesion change between consecutive sessions in subject space, and its map on the later
    session's grid.

    Inputs, per session (previous_*, current_*), in subject space: labels (lesion ids),
    probseg, flair and mask (brain); and flair_preproc (the later session's grid) and
    to_subject (later session → subject).
    Outputs: change_dseg (later session's grid), change_table.
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(
        niu.IdentityInterface(
            fields=[f"{when}_{what}" for when in SESSIONS for what in PER_SESSION]
            + ["flair_preproc", "to_subject"]
        ),
        name="inputnode",
    )
    outputnode = pe.Node(
        niu.IdentityInterface(fields=["change_dseg", "change_table"]), name="outputnode"
    )
    change = pe.Node(
        LesionChange(
            min_change_mm3=cfg.change.min_change_mm3,
            min_change_fraction=cfg.change.min_change_fraction,
            absent_probability=cfg.evidence.absent,
            absent_quantile=cfg.evidence.absent_quantile,
            min_flair_change=cfg.evidence.min_flair_change,
        ),
        name="lesion_change",
    )
    to_session = pe.Node(
        ApplyTransforms(interpolation="nearestNeighbor", invert_transform_flags=[True]),
        name="change_to_session",
    )
    workflow.connect([
        (inputnode, change, [(f"{when}_{what}", f"{when}_{what}")
                             for when in SESSIONS for what in PER_SESSION]),
        (inputnode, to_session, [("flair_preproc", "reference_image"),
                                 (("to_subject", ensure_list), "transforms")]),
        (change, to_session, [("out_dseg", "in_file")]),
        (change, outputnode, [("out_table", "change_table")]),
        (to_session, outputnode, [("out_file", "change_dseg")]),
    ])  # fmt: skip
    return workflow
