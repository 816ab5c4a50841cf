"""The group level: which participants have outputs, the study tables, the frequency map and
the group figures, all written under ``OUT_DIR/group``."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mdgru_bids.collect import Subject
from mdgru_bids.errors import MissingInputError
from mdgru_bids.group import plots
from mdgru_bids.group.maps import lesion_frequency, write_frequency
from mdgru_bids.group.outputs import (
    Crash,
    SessionOutputs,
    crashes,
    find_sessions,
    template_transform,
)
from mdgru_bids.group.tables import (
    CHANGES_DICTIONARY,
    LESIONS_DICTIONARY,
    change_rows,
    lesion_rows,
    write_table,
)
from mdgru_bids.io_spec import OUTPUTS
from mdgru_bids.templates import DEFAULT_TEMPLATE, Template, resolve_template

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Study:
    output_dir: Path
    template: str
    sessions: dict[str, list[SessionOutputs]]  # participants with outputs
    failed: dict[str, list[Crash]]  # no outputs, and crash files of their run
    missing: list[str]  # no outputs and no crash files: not processed (yet)
    lesions: pd.DataFrame
    changes: pd.DataFrame
    frequency_map: Path | None
    figures: dict[str, Path]

    @property
    def single_session(self) -> list[str]:
        return [label for label, sessions in self.sessions.items() if len(sessions) == 1]


def group_analysis(
    output_dir: Path, subjects: list[Subject], template: str | None, templates: Path
) -> Study:
    """Tables, frequency map and figures from the participants' outputs in ``output_dir``.

    ``template`` None: the template the participants' outputs are in. An embedded template
    the figure shows is built in ``templates``.
    """
    found = {s.label: find_sessions(output_dir, s) for s in subjects}
    sessions = {label: found[label] for label in found if found[label]}
    if not sessions:
        raise MissingInputError(
            f"no participant outputs in {output_dir}: run the participant level first"
        )
    template = template or _template_of_outputs(output_dir, list(sessions))
    without = [label for label in found if label not in sessions]
    failed = {label: crashes(output_dir, label) for label in without}
    failed = {label: crash for label, crash in failed.items() if crash}
    missing = [label for label in without if label not in failed]
    for label in failed:
        log.warning("sub-%s failed (crash files in %s); it is left out", label, output_dir / "logs")
    if missing:
        log.warning("no outputs for %s; left out", ", ".join(f"sub-{label}" for label in missing))

    group = output_dir / "group"
    lesions = pd.concat([lesion_rows(s) for s in sessions.values()], ignore_index=True)
    changes = pd.concat([change_rows(s) for s in sessions.values()], ignore_index=True)
    write_table(lesions, OUTPUTS["group_lesions"].dataset_file(output_dir), LESIONS_DICTIONARY)
    write_table(changes, OUTPUTS["group_changes"].dataset_file(output_dir), CHANGES_DICTIONARY)
    figures = {
        "trajectories": plots.trajectories(lesions, group / "figures" / "lesion_volume.svg"),
        "distributions": plots.distributions(
            lesions, changes, group / "figures" / "distributions.svg"
        ),
    }
    frequency_path = None
    frequency = lesion_frequency(list(sessions.values()), template)
    if frequency is None:
        log.warning("no participant has lesion maps in %s; no frequency map", template)
    else:
        image, sources = frequency
        frequency_path = OUTPUTS["group_frequency"].dataset_file(output_dir, template=template)
        write_frequency(image, sources, output_dir, frequency_path)
        if np.any(image.dataobj):  # an empty map has nothing to show
            figures["frequency"] = plots.frequency_map(
                image,
                _template(template, templates),
                group / "figures" / f"space-{template}_frequency.svg",
            )
    return Study(
        output_dir, template, sessions, failed, missing, lesions, changes, frequency_path, figures
    )


def _template_of_outputs(output_dir: Path, labels: list[str]) -> str:
    """The template most participants were brought into (the participant level may have fallen
    back to the embedded one); the default where none was."""
    used = Counter(found[0] for label in labels if (found := template_transform(output_dir, label)))
    if not used:
        return DEFAULT_TEMPLATE
    name = used.most_common(1)[0][0]
    if len(used) > 1:
        log.warning(
            "participants are in different templates (%s); the frequency map is in %s: pass "
            "--template to choose, or re-run the others",
            ", ".join(f"{n}: {count}" for n, count in used.items()),
            name,
        )
    return name


def _template(name: str, templates: Path) -> Template | None:
    try:
        return resolve_template(name, templates)
    except MissingInputError as err:
        log.warning("the frequency map is shown without its template: %s", err)
        return None
