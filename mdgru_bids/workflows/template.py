"""The participant's subject space onto the template, for the group level."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mdgru_bids.interfaces.ants import Register
from mdgru_bids.interfaces.images import MeanImage
from mdgru_bids.interfaces.transforms import ChainLinear
from mdgru_bids.registration import TEMPLATE_REGISTRATION_MM, TEMPLATE_SYN_ITERATIONS
from mdgru_bids.workflows.config import WorkflowConfig
from mdgru_bids.workflows.execution import expect_seconds


def init_template_wf(cfg: WorkflowConfig, name: str = "template_wf") -> pe.Workflow:
    """The subject space onto the template: the sessions' subject-space images averaged, then
    registered (SyN) to the template at 2 mm (what the group's frequency maps need; the
    transform still applies to the 1 mm images), starting from the first session's affine
    registration to the template (its brain mask's), carried into subject space.

    Inputs: subject_images (list, subject space), template_to_session (the first session's
    brain-mask affine, template → session FLAIR), session_to_subject (that session → subject).
    Output: subject_to_template (composite .h5).
    """
    workflow = pe.Workflow(name=name)
    workflow.__desc__ = (
        "For the template-space lesion maps, the mean of the sessions' subject-space images "
        "was registered to the template with ANTs (mutual information, SyN, on the template "
        f"resampled to {TEMPLATE_REGISTRATION_MM:g} mm), starting from the affine registration "
        "that gave the first session's brain mask."
    )
    inputnode = pe.Node(
        niu.IdentityInterface(
            fields=["subject_images", "template_to_session", "session_to_subject"]
        ),
        name="inputnode",
    )
    outputnode = pe.Node(niu.IdentityInterface(fields=["subject_to_template"]), name="outputnode")
    mean = pe.Node(MeanImage(), name="subject_mean")
    steps = pe.Node(niu.Merge(2), name="subject_to_template_steps")
    start = pe.Node(ChainLinear(invert=[True, True]), name="affine_start")
    to_template = expect_seconds(
        pe.Node(
            Register(
                transform="SyN",
                iterations=[],
                shrink_factors=[],
                smoothing_sigmas=[],
                syn_iterations=TEMPLATE_SYN_ITERATIONS,
                resolution_mm=TEMPLATE_REGISTRATION_MM,
                random_seed=cfg.seed,
                num_threads=cfg.registration_threads,
                fixed_image=str(cfg.template.t1w),
                fixed_mask=str(cfg.template.brain_mask),
            ),
            name="to_template",
            n_procs=cfg.registration_threads,
        ),
        30,  # one thread, a 1 mm subject (sub-c26 of Lesjak et al. 2017)
    )
    workflow.connect([
        (inputnode, mean, [("subject_images", "in_files")]),
        # points go subject -> session -> template: both steps backwards
        (inputnode, steps, [("session_to_subject", "in1"), ("template_to_session", "in2")]),
        (steps, start, [("out", "in_transforms")]),
        (mean, to_template, [("out_file", "moving_image")]),
        (start, to_template, [("out_transform", "initial_transform")]),
        (to_template, outputnode, [("out_transform", "subject_to_template")]),
    ])  # fmt: skip
    return workflow
