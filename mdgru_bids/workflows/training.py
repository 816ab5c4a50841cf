"""Training data prepared exactly as the participant workflow prepares images for the network."""

from __future__ import annotations

from pathlib import Path

from nipype import config as nipype_config
from nipype.pipeline import engine as pe

from mdgru_bids.collect import Session
from mdgru_bids.errors import BadDataError
from mdgru_bids.interfaces.ants import ApplyTransforms, SubjectSpace
from mdgru_bids.templates import Template
from mdgru_bids.workflows.anatomical import init_anat_preproc_wf
from mdgru_bids.workflows.execution import multiproc

#: The images a training case consists of: each is the output of the node ``<field>_to_subject``.
CASE_FIELDS = ("flair", "t1w", "mask", "label")


def init_training_case_wf(
    session: Session,
    label_file: str,
    *,
    use_t1w: bool,
    template: Template,
    omp_nthreads: int,
    seed: int,
    name: str,
) -> pe.Workflow:
    """One labelled session: the participant preprocessing, then its own 1 mm subject space.

    A participant with one session gets a subject space placed at that session's pose on an
    isotropic 1 mm grid around the brain, so training images are resampled exactly like the
    images the network later segments. The manual mask travels with the FLAIR (linear
    interpolation; the loader thresholds it at 0.5, which keeps partial-volume edges honest on
    thick-slice FLAIRs).
    """
    workflow = pe.Workflow(name=name)
    anat = init_anat_preproc_wf(use_t1w=use_t1w, omp_nthreads=omp_nthreads, seed=seed)
    anat.inputs.inputnode.flair = str(session.flair)
    anat.inputs.inputnode.t1w = str(session.t1w) if use_t1w else None
    anat.inputs.inputnode.template = str(template.t1w)
    anat.inputs.inputnode.template_mask = str(template.brain_mask)
    space = pe.Node(SubjectSpace(random_seed=seed), name="subject_space")  # one thread: repeats
    workflow.connect([
        (anat, space, [("outputnode.flair_preproc", "in_files"),
                       ("outputnode.brain_mask", "in_masks")]),
    ])  # fmt: skip
    sources = {"flair": "flair_preproc", "mask": "brain_mask", "label": None}
    if use_t1w:
        sources["t1w"] = "t1w_preproc"
    for field, source in sources.items():
        resample = pe.Node(
            ApplyTransforms(interpolation="nearestNeighbor" if field == "mask" else "linear"),
            name=f"{field}_to_subject",
        )
        if source is None:
            resample.inputs.in_file = label_file
        else:
            workflow.connect(anat, f"outputnode.{source}", resample, "in_file")
        workflow.connect([
            (space, resample, [("out_transforms", "transforms"),
                               ("out_reference", "reference_image")]),
        ])  # fmt: skip
    return workflow


def case_files(graph) -> dict[str, dict[str, str]]:
    """Each case workflow's images, by workflow name, from the graph ``Workflow.run`` returns."""
    cases: dict[str, dict[str, str]] = {}
    for node in graph.nodes():
        field = node.name.removesuffix("_to_subject")
        if field in CASE_FIELDS:
            case = node._hierarchy.split(".")[-1]
            cases.setdefault(case, {})[field] = node.result.outputs.out_file
    return cases


def prepare_cases(
    sessions: dict[str, tuple[Session, Path]],
    work_dir: Path,
    *,
    use_t1w: bool,
    template: Template,
    omp_nthreads: int,
    seed: int,
    plugin_args: dict,
) -> dict[str, dict[str, str]]:
    """Run the preprocessing of every case (``name -> (session, manual mask)``), cached in
    ``work_dir``; each case's subject-space image files by :data:`CASE_FIELDS`."""
    work_dir.mkdir(parents=True, exist_ok=True)
    nipype_config.update_config({
        "execution": {"crashdump_dir": str(work_dir / "logs"), "crashfile_format": "txt",
                      "poll_sleep_duration": 0.01, "hash_method": "content"},
        "monitoring": {"enabled": False},
    })  # fmt: skip
    workflow = pe.Workflow(name="training_data_wf", base_dir=str(work_dir))
    for name, (session, label) in sessions.items():
        workflow.add_nodes([
            init_training_case_wf(
                session, str(label), use_t1w=use_t1w, template=template,
                omp_nthreads=omp_nthreads, seed=seed, name=_node_name(name),
            )
        ])  # fmt: skip
    try:
        graph = workflow.run(plugin=multiproc(plugin_args))
    except RuntimeError as err:
        raise BadDataError(
            f"preprocessing the training data failed ({str(err).splitlines()[0]}); crash files "
            f"are in {work_dir / 'logs'}"
        ) from None
    results = case_files(graph)
    return {name: results[_node_name(name)] for name in sessions}


def _node_name(name: str) -> str:
    return "case_" + "".join(c if c.isalnum() else "_" for c in name)
