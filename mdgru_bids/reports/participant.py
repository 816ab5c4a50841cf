"""The participant report ``OUT_DIR/sub-X.html``, made from the published derivatives.

Per session: the FLAIR with lesion outlines; per pair of consecutive sessions: the change map
over the later FLAIR and the earlier session's edges over it (the subject-space alignment);
once: the first session's edges over the template. Then the lesion table, the methods text
and any crash of the participant's latest run. Figures go to ``sub-X/figures/``.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path

import pandas as pd

from mdgru_bids.collect import Subject
from mdgru_bids.errors import MissingInputError
from mdgru_bids.group.outputs import (
    SessionOutputs,
    crashes,
    find_sessions,
    published_at,
    template_transform,
)
from mdgru_bids.group.tables import change_rows, lesion_rows
from mdgru_bids.reports import figures
from mdgru_bids.reports.methods import read_boilerplate
from mdgru_bids.reports.render import render
from mdgru_bids.templates import resolve_template

log = logging.getLogger(__name__)


def participant_report(
    output_dir: Path, subject: Subject, templates: Path, nprocs: int = 1
) -> Path:
    """Write ``sub-X.html`` and its figures (on up to ``nprocs`` processes); returns the
    report's path. ``templates``: where the embedded template is built if the outputs are in
    it."""
    label = subject.label
    sessions = find_sessions(output_dir, subject)
    figures_dir = output_dir / f"sub-{label}" / "figures"
    by_label = {s.session: s for s in sessions}
    jobs: list[partial] = []
    panels = []
    for session in sessions:
        previous = session.previous_session()
        panels.append(
            _session_panel(
                session, by_label.get(previous) if previous else None, figures_dir, output_dir, jobs
            )
        )
    template = _template_check(output_dir, label, sessions, figures_dir, templates, jobs)
    figures_dir.mkdir(parents=True, exist_ok=True)  # before processes write into it at once
    figures.draw(jobs, nprocs)
    methods, references = read_boilerplate(output_dir, label)
    path = output_dir / f"sub-{label}.html"
    render(
        "report_participant.html",
        path,
        title=f"mdgru-bids: sub-{label}",
        label=label,
        sessions=panels,
        t1w=any(s.file("preproc_t1w").is_file() for s in sessions),
        table=_table(sessions),
        template=template,
        methods=methods,
        references=references,
        crashes=crashes(output_dir, label, after=published_at(sessions)),
    )
    return path


def _session_panel(
    session: SessionOutputs,
    previous: SessionOutputs | None,
    figures_dir: Path,
    root: Path,
    jobs: list[partial],
) -> dict:
    """A session's part of the report; the figures it shows go to ``jobs``."""
    flair, brain = session.file("preproc_flair"), session.file("brain_mask")
    lesions = figures_dir / f"{session.name}_desc-lesions_FLAIR.svg"
    jobs.append(partial(figures.lesion_mosaic, flair, session.file("lesion_mask"), brain, lesions))
    panel = {
        "name": session.name,
        "session": f"ses-{session.session}" if session.session else "",
        "acq_time": session.acq_time,
        "lesions": _link(lesions, root),
        "previous": None,
        "change": None,
        "coreg": None,
    }
    if previous is None:
        return panel
    change = figures_dir / f"{session.name}_desc-lesionchange_FLAIR.svg"
    coreg = figures_dir / f"{session.name}_desc-coreg_FLAIR.svg"
    jobs += [
        partial(figures.change_mosaic, flair, session.file("change_dseg"), brain, change),
        partial(
            figures.edges_mosaic,
            flair,
            previous.file("preproc_flair"),
            [previous.file("to_subject"), session.file("to_subject")],
            [False, True],
            brain,
            coreg,
        ),
    ]
    panel.update(
        previous=f"ses-{previous.session}",
        change=_link(change, root),
        coreg=_link(coreg, root),
    )
    return panel


def _template_check(
    output_dir: Path,
    label: str,
    sessions: list[SessionOutputs],
    figures_dir: Path,
    templates: Path,
    jobs: list[partial],
) -> dict | None:
    """The first session's edges over the template (its figure goes to ``jobs``), or why
    there are none."""
    found = template_transform(output_dir, label)
    if found is None or not sessions:
        return None
    name, to_template = found
    try:
        template = resolve_template(name, templates)
    except MissingInputError as err:
        log.warning("sub-%s: no template figure: %s", label, err)
        return {"name": name, "missing": str(err)}
    first = sessions[0]
    figure = figures_dir / f"{first.name}_space-{name}_desc-norm_FLAIR.svg"
    jobs.append(
        partial(
            figures.edges_mosaic,
            template.t1w,
            first.file("preproc_flair"),
            [first.file("to_subject"), to_template],
            [False, False],
            template.brain_mask,
            figure,
        )
    )
    sidecar = first.sidecar("template_probseg", name)
    return {
        "name": name,
        "session": first.name,
        "figure": _link(figure, output_dir),
        # how the outputs were made (which template, and why), as their sidecar says
        "about": json.loads(sidecar.read_text()).get("Description") if sidecar.is_file() else None,
    }


def _link(path: Path, root: Path) -> str:
    """A figure's address relative to the report, which lies in OUT_DIR."""
    return path.relative_to(root).as_posix()


def _table(sessions: list[SessionOutputs]) -> pd.DataFrame:
    """Lesions per session, with the change since the previous session beside them."""
    lesions = lesion_rows(sessions)
    changes = change_rows(sessions)
    keep = ["session_id", "previous_session_id", "new", "enlarging", "shrinking", "resolved"]
    table = lesions.merge(changes[keep], on="session_id", how="left")
    table[keep[2:]] = table[keep[2:]].astype("Int64")  # counts stay integers beside n/a
    table = table.astype(object).fillna("n/a")
    return table.drop(columns="participant_id").rename(
        columns={
            "session_id": "session",
            "acq_time": "acquired",
            "lesion_count": "lesions",
            "total_volume_ml": "total volume (mL)",
            "mean_lesion_volume_mm3": "mean lesion volume (mm³)",
            "previous_session_id": "change since",
        }
    )
