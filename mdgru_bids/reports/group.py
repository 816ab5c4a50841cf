"""The study report ``OUT_DIR/group.html``: who is in, the tables, the figures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mdgru_bids.group.study import Study
from mdgru_bids.reports.render import render


def group_report(study: Study) -> Path:
    """Write ``group.html`` beside the participant reports; returns its path."""
    root = study.output_dir
    participants = [
        {
            "label": label,
            "sessions": len(sessions),
            "report": _report(root, label),
        }
        for label, sessions in study.sessions.items()
    ]
    return render(
        "report_group.html",
        root / "group.html",
        title="mdgru-bids: group",
        participants=participants,
        single_session=study.single_session,
        failed={
            label: {
                "crashes": crashes,
                "report": _report(root, label),
            }
            for label, crashes in study.failed.items()
        },
        missing=study.missing,
        template=study.template,
        frequency_map=_relative(study.frequency_map, root),
        figures={name: _relative(path, root) for name, path in study.figures.items()},
        lesions=_html(study.lesions),
        changes=_html(study.changes),
    )


def _report(root: Path, label: str) -> str | None:
    """The participant report's link, where there is one."""
    name = f"sub-{label}.html"
    return name if (root / name).is_file() else None


def _relative(path: Path | None, root: Path) -> str | None:
    return path.relative_to(root).as_posix() if path is not None else None


def _html(table: pd.DataFrame) -> str:
    return table.to_html(index=False, na_rep="n/a", classes="data", border=0)
