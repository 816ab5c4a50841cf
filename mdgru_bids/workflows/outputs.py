"""The derivatives each participant's workflow writes (names: DESIGN.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nipype.pipeline import engine as pe

from mdgru_bids.collect import Session, Subject
from mdgru_bids.interfaces.bids import DerivativesDataSink
from mdgru_bids.interfaces.lesions import CHANGE_DICTIONARY, LESION_DICTIONARY
from mdgru_bids.lesions.change import CHANGE_LABELS

if TYPE_CHECKING:
    from mdgru_bids.workflows.base import WorkflowConfig


def run_settings(cfg: WorkflowConfig) -> dict[str, object]:
    """What a rerun must repeat to give the same outputs, for the image sidecars."""
    return {
        "RandomSeed": cfg.seed,
        "RegistrationThreads": cfg.registration_threads,
        "Deterministic": cfg.registration_threads == 1,
        "N4Threads": cfg.omp_nthreads,
        "NetworkThreads": cfg.omp_nthreads,
        "NetworkDevice": cfg.device,
        "NetworkPrecision": cfg.precision,
    }


class Sinks:
    """Adds data sinks to a participant workflow, with sidecars that link each output to the
    files it was made from (BIDS URIs: ``bids:raw:`` inputs, ``bids::`` our own outputs)."""

    def __init__(self, workflow: pe.Workflow, cfg: WorkflowConfig, subject: Subject) -> None:
        self.workflow, self.cfg, self.subject = workflow, cfg, subject

    def _raw(self, path) -> str:
        return f"bids:raw:{path.relative_to(self.cfg.bids_dir).as_posix()}"

    def _ours(self, session: Session, stem: str) -> str:
        ses = f"ses-{session.label}/" if session.label else ""
        prefix = f"sub-{self.subject.label}_" + (f"ses-{session.label}_" if session.label else "")
        return f"bids::sub-{self.subject.label}/{ses}anat/{prefix}{stem}"

    def _add(self, name: str, source, node: pe.Node, field: str, **inputs) -> None:
        entities = [k for k in ("from", "to", "mode") if k in inputs]
        if "data_dtype" in inputs:  # images: always .nii.gz, whatever the step wrote
            inputs["compress"] = True
            inputs.update(run_settings(self.cfg))
        sink = pe.Node(
            DerivativesDataSink(
                base_directory=str(self.cfg.derivatives_dir),
                source_file=str(source),
                allowed_entities=entities or None,
                **inputs,
            ),
            name=f"ds_{name}",
            run_without_submitting=True,
        )
        self.workflow.connect(node, field, sink, "in_file")

    def subject_xfm(self, to_template: pe.Node) -> None:
        first = self.subject.sessions[0]
        self._add(
            "subject_to_template",
            first.flair,
            to_template,
            "out_transform",
            dismiss_entities=["session"],
            suffix="xfm",
            mode="image",
            **{"from": "subject", "to": self.cfg.template.name},
        )

    def template_description(self) -> str:
        """What a template-space output is, and which template it is in (and why)."""
        template = self.cfg.template
        text = f"Lesion probability resampled into the {template.name} template ({template.origin})"
        return text + (f"; {template.fallback}" if template.fallback else "")

    def session(self, session, anat, seg, table, pick, to_template, use_t1w: bool) -> None:
        tag = session.tag
        template = self.cfg.template
        flair = self._raw(session.flair)  # every unqualified output is on this grid
        preproc = self._ours(session, "desc-preproc_FLAIR.nii.gz")
        probseg = self._ours(session, "label-lesion_probseg.nii.gz")
        image = {"SpatialReference": flair}
        outputs = [
            ("flair", anat, "outputnode.flair_preproc",
             dict(desc="preproc", suffix="FLAIR", data_dtype="float32", Sources=[flair],
                  SkullStripped=False, Description="FLAIR after N4 bias-field correction",
                  **image)),
            ("brain_mask", anat, "outputnode.brain_mask",
             dict(desc="brain", suffix="mask", data_dtype="uint8", Type="Brain", Sources=[flair],
                  Description="Brain mask from the template's, by affine registration",
                  **image)),
            ("probseg", seg, "outputnode.probseg",
             dict(label="lesion", suffix="probseg", data_dtype="float32", Sources=[preproc],
                  Description="Lesion probability from the MD-GRU network", **image)),
            ("lesion_mask", seg, "outputnode.mask",
             dict(label="lesion", suffix="mask", data_dtype="uint8", Type="Lesion",
                  Sources=[probseg], Threshold=self.cfg.threshold,
                  MinimumLesionVolume=self.cfg.min_lesion_mm3,
                  Description="Lesions: probability above the threshold, components of at "
                  "least the minimum volume (mm3)", **image)),
            ("lesion_table", table, "out_table",
             dict(desc="lesions", suffix="table", **LESION_DICTIONARY)),
            ("to_subject", pick, "out",
             dict(suffix="xfm", mode="image", **{"from": "FLAIR", "to": "subject"})),
            ("template_probseg", to_template, "out_file",
             dict(space=template.name, label="lesion", suffix="probseg",
                  data_dtype="float32", Sources=[probseg], SpatialReference=template.uri,
                  Description=self.template_description())),
        ]  # fmt: skip
        if use_t1w:
            outputs.append(
                ("t1w", anat, "outputnode.t1w_preproc",
                 dict(space="FLAIR", desc="preproc", suffix="T1w", data_dtype="float32",
                      SkullStripped=False, Sources=[self._raw(session.t1w), preproc],
                      SpatialReference=preproc,
                      Description="T1w after N4, rigidly registered onto the FLAIR grid"))
            )  # fmt: skip
        for name, node, field, inputs in outputs:
            self._add(f"{name}_{tag}", session.flair, node, field, **inputs)

    def change(self, session, previous, change, change_to_session) -> None:
        tag = session.tag
        sources = [
            self._ours(previous, "label-lesion_probseg.nii.gz"),
            self._ours(session, "label-lesion_probseg.nii.gz"),
        ]
        self._add(
            f"change_dseg_{tag}",
            session.flair,
            change_to_session,
            "out_file",
            desc="lesionchange",
            suffix="dseg",
            data_dtype="uint8",
            Sources=sources,
            Description=f"Lesion change since ses-{previous.label}: "
            + ", ".join(f"{k} {v}" for k, v in CHANGE_LABELS.items()),
        )
        self._add(
            f"change_table_{tag}",
            session.flair,
            change,
            "out_table",
            desc="lesionchange",
            suffix="table",
            **CHANGE_DICTIONARY,
        )
