"""The derivatives each participant's workflow writes: one data sink per role of
:data:`mdgru_bids.io_spec.OUTPUTS`, with sidecars that link each output to the files it was
made from (BIDS URIs: ``bids:raw:`` inputs, ``bids::`` our own outputs)."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mdgru_bids.collect import Session, Subject
from mdgru_bids.interfaces.bids import DerivativesDataSink
from mdgru_bids.io_spec import OUTPUTS
from mdgru_bids.lesions.change import CHANGE_LABELS
from mdgru_bids.workflows.config import WorkflowConfig, run_settings

#: The inputnode fields of a session's outputs workflow, each the role it writes.
SESSION_ROLES = (
    "preproc_flair", "brain_mask", "probseg", "lesion_mask", "lesion_table", "to_subject",
    "template_probseg",
)  # fmt: skip
T1W_ROLES = ("preproc_t1w",)
CHANGE_ROLES = ("change_dseg", "change_table")


def init_session_outputs_wf(
    cfg: WorkflowConfig,
    subject: Subject,
    session: Session,
    previous: Session | None,
    use_t1w: bool,
    name: str,
) -> pe.Workflow:
    """Data sinks of one session's derivatives.

    Inputnode fields: :data:`SESSION_ROLES`, :data:`T1W_ROLES` with ``use_t1w`` and
    :data:`CHANGE_ROLES` after a ``previous`` session, each the file of that role.
    """
    roles = SESSION_ROLES + (T1W_ROLES if use_t1w else ()) + (CHANGE_ROLES if previous else ())
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=list(roles)), name="inputnode")
    fields = _session_sidecars(cfg, subject, session, previous)
    for role in roles:
        sink = _sink(cfg, role, session.flair, fields[role])
        workflow.connect(inputnode, role, sink, "in_file")
    return workflow


def init_subject_outputs_wf(cfg: WorkflowConfig, subject: Subject, name: str) -> pe.Workflow:
    """Data sinks of the participant's own (not per-session) derivatives.

    Inputnode field: ``subject_to_template``, the subject → template transform.
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["subject_to_template"]), name="inputnode")
    sink = _sink(cfg, "subject_to_template", subject.sessions[0].flair, {})
    sink.inputs.dismiss_entities = ["session"]
    workflow.connect(inputnode, "subject_to_template", sink, "in_file")
    return workflow


def template_description(cfg: WorkflowConfig) -> str:
    """What a template-space output is, and which template it is in (and why)."""
    template = cfg.template
    text = f"Lesion probability resampled into the {template.name} template ({template.origin})"
    return text + (f"; {template.fallback}" if template.fallback else "")


def _sink(cfg: WorkflowConfig, role: str, source: Path, fields: dict) -> pe.Node:
    """A data sink for ``role``: its table entry's name and sidecar, plus ``fields``."""
    output = OUTPUTS[role]
    inputs = output.values(template=cfg.template.name) | dict(output.sidecar) | fields
    linked = [k for k, _ in output.entities if k in ("from", "to", "mode")]
    if output.dtype:  # images: always .nii.gz, whatever the step wrote
        inputs |= {"data_dtype": output.dtype, "compress": True} | run_settings(cfg)
    # in a worker, not in the main process (fMRIPrep runs its sinks there): compressing a 1 mm
    # image takes about a second, and there it held up the start of every other job
    return pe.Node(
        DerivativesDataSink(
            base_directory=str(cfg.derivatives_dir),
            source_file=str(source),
            allowed_entities=linked or None,
            **inputs,
        ),
        name=f"ds_{role}",
    )


def _session_sidecars(
    cfg: WorkflowConfig, subject: Subject, session: Session, previous: Session | None
) -> dict[str, dict]:
    """The sidecar fields of each role that depend on the run: sources, grids, thresholds."""

    def ours(role: str, of: Session = session) -> str:
        return OUTPUTS[role].uri(subject.label, of.label)

    def raw(path: Path) -> str:
        return f"bids:raw:{path.relative_to(cfg.bids_dir).as_posix()}"

    flair = raw(session.flair)  # every output without a space- is on this grid
    image = {"SpatialReference": flair}
    fields = {
        "preproc_flair": {"Sources": [flair], **image},
        "brain_mask": {"Sources": [flair], **image},
        "probseg": {"Sources": [ours("preproc_flair")], **image},
        "lesion_mask": {
            "Sources": [ours("probseg")],
            "Threshold": cfg.threshold,
            "MinimumLesionVolume": cfg.min_lesion_mm3,
            **image,
        },
        "lesion_table": {},
        "to_subject": {},
        "template_probseg": {
            "Sources": [ours("probseg")],
            "SpatialReference": cfg.template.uri,
            "Description": template_description(cfg),
        },
    }
    if session.t1w is not None:
        fields["preproc_t1w"] = {
            "Sources": [raw(session.t1w), ours("preproc_flair")],
            "SpatialReference": ours("preproc_flair"),
        }
    if previous is not None:
        fields["change_dseg"] = {
            "Sources": [ours("probseg", previous), ours("probseg")],
            "Description": f"Lesion change since ses-{previous.label}: "
            + ", ".join(f"{k} {v}" for k, v in CHANGE_LABELS.items()),
        }
        fields["change_table"] = {}
    return fields
