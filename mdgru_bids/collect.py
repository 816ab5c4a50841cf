"""Finding each participant's sessions and images in a BIDS dataset (pybids), and refusing
inputs we cannot process before any work starts."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from mdgru_bids.errors import (
    BadDataError,
    InvalidBIDSError,
    MissingInputError,
    NothingSelectedError,
    UsageError,
)

log = logging.getLogger(__name__)

#: Default pybids queries; a --bids-filter-file updates them per modality.
QUERIES = {
    "flair": {"datatype": "anat", "suffix": "FLAIR", "extension": [".nii", ".nii.gz"]},
    "t1w": {"datatype": "anat", "suffix": "T1w", "extension": [".nii", ".nii.gz"], "ceagent": None},
}


@dataclass(frozen=True)
class Session:
    label: str | None  # None in a dataset without sessions
    flair: Path
    t1w: Path | None
    acq_time: str | None = None

    @property
    def tag(self) -> str:
        """A node-name-safe tag ('ses_01', or 'nosession' in a dataset without sessions)."""
        return f"ses_{self.label}" if self.label is not None else "nosession"


@dataclass(frozen=True)
class Subject:
    label: str
    sessions: tuple[Session, ...]


def load_layout(bids_dir: Path):
    """A pybids layout of a dataset root; one-line errors for what is not a BIDS dataset."""
    from bids import BIDSLayout

    if not bids_dir.is_dir():
        raise MissingInputError(f"BIDS_DIR {bids_dir} does not exist or is not a directory")
    if not (bids_dir / "dataset_description.json").is_file():
        raise InvalidBIDSError(
            f"{bids_dir} is not a BIDS dataset (no dataset_description.json): "
            "point BIDS_DIR at the dataset root"
        )
    try:
        layout = BIDSLayout(str(bids_dir), validate=False, derivatives=False)
    except Exception as err:  # pybids raises many kinds for broken datasets
        raise InvalidBIDSError(f"{bids_dir} cannot be read as BIDS ({err})") from None
    _check_entities(layout, bids_dir)
    return layout


def _check_entities(layout, bids_dir: Path) -> None:
    """Every image's entities as its path inside the dataset gives them: pybids (0.22) matches
    entities in the absolute path, so a folder above the dataset named like ``..._ses-01``
    gives every file that session, and later sessions vanish without an error."""
    from bids.layout import parse_file_entities

    for image in layout.get(extension=[".nii", ".nii.gz"]):
        inside = Path(image.path).relative_to(layout.root)
        expected = parse_file_entities("/" + inside.as_posix())
        found = image.get_entities()
        for key in sorted(expected.keys() | found.keys()):
            if str(expected.get(key)) != str(found.get(key)):
                raise UsageError(
                    f"BIDS_DIR {bids_dir}: pybids reads {key} {found.get(key)} for {inside} "
                    "from a folder name above the dataset; rename or move that folder"
                )


def read_filter_file(path: Path | None) -> dict:
    """Per-modality pybids filters from a --bids-filter-file, merged over QUERIES."""
    queries = {k: dict(v) for k, v in QUERIES.items()}
    if path is None:
        return queries
    try:
        user = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UsageError(f"--bids-filter-file {path} is not readable JSON ({err})") from None
    unknown = set(user) - set(queries)
    if unknown or not all(isinstance(v, dict) for v in user.values()):
        raise UsageError(
            f"--bids-filter-file {path}: expected an object with keys from {sorted(queries)}, "
            "each an object of BIDS entities"
        )
    for key, value in user.items():
        queries[key].update(value)
    return queries


def collect_subjects(
    layout,
    participant_labels: list[str] | None,
    session_labels: list[str] | None = None,
    queries: dict | None = None,
) -> list[Subject]:
    """The participants and sessions to process, sessions in acquisition order."""
    queries = queries or QUERIES
    available = sorted(layout.get_subjects())
    wanted = [p.removeprefix("sub-") for p in participant_labels or available]
    missing = sorted(set(wanted) - set(available))
    if missing:
        raise MissingInputError(
            f"participant(s) {', '.join(missing)} not found in {layout.root} "
            f"(available: {', '.join(available) or 'none'})"
        )
    subjects = []
    for label in wanted:
        sessions = _collect_sessions(layout, label, session_labels, queries)
        if not sessions and session_labels:
            raise NothingSelectedError(
                f"--session-label {' '.join(session_labels)} selected no session of sub-{label} "
                f"(it has: {', '.join(layout.get_sessions(subject=label)) or 'none'})"
            )
        if not sessions:
            raise MissingInputError(
                f"sub-{label} has no FLAIR image matching {queries['flair']} in {layout.root}: "
                "every processed session needs a FLAIR"
            )
        subjects.append(Subject(label, tuple(sessions)))
    if not subjects:
        raise NothingSelectedError("the participant and session filters selected nothing")
    return subjects


def _collect_sessions(
    layout, subject: str, session_labels: list[str] | None, queries: dict
) -> list[Session]:
    labels: list[str | None] = sorted(layout.get_sessions(subject=subject)) or [None]
    if session_labels:
        labels = [s for s in labels if s in {x.removeprefix("ses-") for x in session_labels}]
    times = _acquisition_times(Path(layout.root), subject)
    sessions = []
    for ses in labels:
        extra = {"session": ses} if ses is not None else {}
        flair = _first(layout, subject, queries["flair"], extra)
        if flair is None:
            log.warning("sub-%s ses-%s has no FLAIR; the session is skipped", subject, ses)
            continue
        t1w = _first(layout, subject, queries["t1w"], extra)
        sessions.append(Session(ses, flair, t1w, times.get(ses)))
    # Order by acquisition time where every session has one, else by label.
    if sessions and all(s.acq_time for s in sessions):
        sessions.sort(key=lambda s: pd.Timestamp(s.acq_time))
    return sessions


def _first(layout, subject: str, query: dict, extra: dict) -> Path | None:
    files = sorted(layout.get(subject=subject, return_type="file", **query, **extra))
    if len(files) > 1:
        log.warning(
            "several images match %s for sub-%s %s; using %s",
            query.get("suffix"),
            subject,
            extra,
            Path(files[0]).name,
        )
    return Path(files[0]) if files else None


def _acquisition_times(root: Path, subject: str) -> dict[str | None, str]:
    tsv = root / f"sub-{subject}" / f"sub-{subject}_sessions.tsv"
    if not tsv.is_file():
        return {}
    table = pd.read_csv(tsv, sep="\t", dtype=str)
    if "acq_time" not in table or "session_id" not in table:
        return {}
    return {
        str(row.session_id).removeprefix("ses-"): str(row.acq_time)
        for row in table.itertuples()
        if isinstance(row.acq_time, str) and row.acq_time != "n/a"
    }


def check_image(path: Path) -> None:
    """Refuse an image the pipeline cannot use, naming the file and what is wrong with it."""
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # nibabel raises many kinds for damaged files
        raise BadDataError(f"{path} cannot be read as NIfTI ({err}): replace the file") from None
    shape = data.shape
    if len(shape) == 4 and shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise BadDataError(f"{path} is {data.ndim}-D {shape}; a 3-D anatomical image is needed")
    if min(data.shape) < 2:
        raise BadDataError(f"{path} has shape {shape}: it is not a volume")
    if not np.isfinite(data).all():
        raise BadDataError(f"{path} contains NaN or infinite values: fix or re-export the image")
    if not np.any(data):
        raise BadDataError(f"{path} is empty (all zeros): re-export the image")


def validate_bids(bids_dir: Path) -> None:
    """Run the BIDS validator (bids-validator-deno); any error stops the run (exit 16)."""
    exe = shutil.which("bids-validator-deno") or str(
        Path(sys.executable).parent / "bids-validator-deno"
    )
    if not Path(exe).exists():
        log.warning("bids-validator-deno is not installed; the input was not validated")
        return
    out = subprocess.run([exe, "--json", str(bids_dir)], capture_output=True, text=True)
    try:
        issues = json.loads(out.stdout)["issues"]["issues"]
    except (json.JSONDecodeError, KeyError):
        raise InvalidBIDSError(
            f"the BIDS validator could not read {bids_dir}: {out.stderr.strip()[:200]}"
        ) from None
    errors = [i for i in issues if i.get("severity") == "error"]
    if errors:
        first = errors[0]
        raise InvalidBIDSError(
            f"{bids_dir} is not valid BIDS: {len(errors)} error(s), first {first['code']} at "
            f"{first.get('location', '?')} (run bids-validator-deno {bids_dir} for all, or "
            "pass --skip-bids-validation)"
        )
