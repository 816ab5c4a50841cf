"""Reading a participant's published derivatives back: which sessions have outputs, in which
order, what each change map was compared against, and the crash files of failed runs.

Reports and group tables are made from what is in OUT_DIR, never from the work folder, so they
describe exactly the derivatives a user has.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bids.layout import parse_file_entities

from mdgru_bids.collect import Subject
from mdgru_bids.io_spec import OUTPUTS


@dataclass(frozen=True)
class SessionOutputs:
    """One session's derivatives of one participant."""

    output_dir: Path
    subject: str
    session: str | None  # None in a dataset without sessions
    acq_time: str | None

    @property
    def name(self) -> str:
        """The BIDS file-name prefix, e.g. ``sub-01_ses-02``."""
        return f"sub-{self.subject}" + (f"_ses-{self.session}" if self.session else "")

    def file(self, role: str, template: str = "") -> Path:
        """This session's derivative of ``role`` (:data:`mdgru_bids.io_spec.OUTPUTS`)."""
        return OUTPUTS[role].path(self.output_dir, self.subject, self.session, template=template)

    def sidecar(self, role: str, template: str = "") -> Path:
        """The JSON sidecar of this session's derivative of ``role``."""
        path = self.file(role, template)
        return path.with_name(path.name.removesuffix(OUTPUTS[role].extension) + ".json")

    @property
    def lesion_table(self) -> Path:
        return self.file("lesion_table")

    @property
    def change_table(self) -> Path:
        return self.file("change_table")

    def previous_session(self) -> str | None:
        """The session this one's change map compares with, as its sidecar's Sources say (so
        a re-run on a subset of sessions cannot mislead); None for a first session."""
        sidecar = self.sidecar("change_dseg")
        if not sidecar.is_file():
            return None
        for source in json.loads(sidecar.read_text()).get("Sources", []):
            session = parse_file_entities(source.split(":")[-1]).get("session")
            if session is not None and session != self.session:
                return str(session)
        return None


def find_sessions(output_dir: Path, subject: Subject) -> list[SessionOutputs]:
    """The participant's sessions that have published outputs, in acquisition order."""
    found = [
        SessionOutputs(output_dir, subject.label, s.label, s.acq_time) for s in subject.sessions
    ]
    return [s for s in found if s.lesion_table.is_file()]


def template_transform(output_dir: Path, label: str) -> tuple[str, Path] | None:
    """The participant's subject → template transform and the template's name, if any."""
    spec = OUTPUTS["subject_to_template"]
    for path in sorted((output_dir / f"sub-{label}" / "anat").glob(spec.pattern())):
        return str(parse_file_entities(path.name)["to"]), path
    return None


@dataclass(frozen=True)
class Crash:
    """A Nipype crash file: the node that failed and the last line of its error."""

    path: Path
    node: str
    error: str
    text: str


def crashes(output_dir: Path, label: str, after: float = 0.0) -> list[Crash]:
    """The participant's crash files in OUT_DIR/logs written after ``after`` (a time stamp).

    A participant's outputs are published only when all of its steps succeeded, so crash files
    older than its outputs belong to earlier, failed runs and are not errors of these outputs.
    """
    found = []
    for path in sorted((output_dir / "logs").glob("crash-*.txt")):
        if path.stat().st_mtime <= after:
            continue
        text = path.read_text(errors="replace")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        node = lines[0].removeprefix("Node: ") if lines else ""
        if node.startswith(f"sub_{label}_wf."):
            found.append(Crash(path, node, lines[-1], text))
    return found


def published_at(sessions: list[SessionOutputs]) -> float:
    """When the participant's outputs were last published (0 when there are none)."""
    return max((s.lesion_table.stat().st_mtime for s in sessions), default=0.0)
