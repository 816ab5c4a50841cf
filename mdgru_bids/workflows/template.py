"""The participant's subject space onto the template, for the group level."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mdgru_bids.interfaces.ants import Register
from mdgru_bids.interfaces.images import MeanImage
from mdgru_bids.registration import (
    TEMPLATE_LINEAR_ITERATIONS,
    TEMPLATE_REGISTRATION_MM,
    TEMPLATE_SHRINK_FACTORS,
    TEMPLATE_SMOOTHING_SIGMAS,
    TEMPLATE_SYN_ITERATIONS,
)
from mdgru_bids.workflows.config import WorkflowConfig


def init_template_wf(cfg: WorkflowConfig, name: str = "template_wf") -> pe.Workflow:
    """The subject space onto the template: the sessions' subject-space images averaged, then
    registered (affine + SyN) to the template at 2 mm (what the group's frequency maps need;
    the transform still applies to the 1 mm images).

    Inputs: subject_images (list, subject space). Output: subject_to_template (composite .h5).
    """
    workflow = pe.Workflow(name=name)
    workflow.__desc__ = (
        "For the template-space lesion maps, the mean of the sessions' subject-space images "
        "was registered to the template with ANTs (mutual information; affine, then SyN), "
        f"on the template resampled to {TEMPLATE_REGISTRATION_MM:g} mm."
    )
    inputnode = pe.Node(niu.IdentityInterface(fields=["subject_images"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["subject_to_template"]), name="outputnode")
    mean = pe.Node(MeanImage(), name="subject_mean")
    to_template = pe.Node(
        Register(
            transform="SyN",
            iterations=TEMPLATE_LINEAR_ITERATIONS,
            shrink_factors=TEMPLATE_SHRINK_FACTORS,
            smoothing_sigmas=TEMPLATE_SMOOTHING_SIGMAS,
            syn_iterations=TEMPLATE_SYN_ITERATIONS,
            resolution_mm=TEMPLATE_REGISTRATION_MM,
            random_seed=cfg.seed,
            num_threads=cfg.registration_threads,
            fixed_image=str(cfg.template.t1w),
            fixed_mask=str(cfg.template.brain_mask),
        ),
        name="to_template",
        n_procs=cfg.registration_threads,
    )
    workflow.connect([
        (inputnode, mean, [("subject_images", "in_files")]),
        (mean, to_template, [("out_file", "moving_image")]),
        (to_template, outputnode, [("out_transform", "subject_to_template")]),
    ])  # fmt: skip
    return workflow
