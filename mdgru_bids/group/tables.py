"""Study tables from the participants' lesion and change tables: one row per session, and one
per pair of consecutive sessions, with BIDS data dictionaries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mdgru_bids.atomic import replacing
from mdgru_bids.group.outputs import SessionOutputs

DAYS_PER_YEAR = 365.25
CHANGE_CLASSES = ("new", "enlarging", "shrinking", "resolved", "stable")
_IDS = {
    "participant_id": {"Description": "Participant"},
    "session_id": {"Description": "Session (n/a in a dataset without sessions)"},
}
LESIONS_DICTIONARY = {
    **_IDS,
    "acq_time": {"Description": "Acquisition time of the session (sessions.tsv)"},
    "lesion_count": {
        "Description": "Number of lesions: rows of the session's lesion table (lesions in "
        "subject space; the tiniest may vanish from a coarse session-grid mask)"
    },
    "total_volume_ml": {
        "Description": "Total lesion volume: the sum of the lesion table's partial volumes "
        "(subject space)",
        "Units": "mL",
    },
    "mean_lesion_volume_mm3": {
        "Description": "Mean volume of one lesion (n/a without lesions)",
        "Units": "mm^3",
    },
}
CHANGES_DICTIONARY = {
    **_IDS,
    "previous_session_id": {"Description": "The earlier session of the pair"},
    "days": {
        "Description": "Days between the two sessions' acquisition times (n/a without them)",
        "Units": "days",
    },
    **{
        name: {"Description": f"Number of {name} lesions (groups of overlapping lesions)"}
        for name in CHANGE_CLASSES
    },
    "volume_change_ml": {
        "Description": "Change of total lesion volume, measured in subject space",
        "Units": "mL",
    },
    "new_per_year": {"Description": "new / (days / 365.25); n/a without days"},
    "enlarging_per_year": {"Description": "enlarging / (days / 365.25); n/a without days"},
    "volume_change_ml_per_year": {
        "Description": "volume_change_ml / (days / 365.25); n/a without days",
        "Units": "mL/year",
    },
}


def _ids(session: SessionOutputs) -> dict[str, str]:
    return {
        "participant_id": f"sub-{session.subject}",
        "session_id": f"ses-{session.session}" if session.session else "n/a",
    }


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", na_values="n/a")


def lesion_rows(sessions: list[SessionOutputs]) -> pd.DataFrame:
    """Lesion count and volumes per session, from each session's lesion table."""
    rows = []
    for session in sessions:
        volumes = _read(session.lesion_table)["volume_mm3"]
        rows.append({
            **_ids(session),
            "acq_time": session.acq_time,
            "lesion_count": len(volumes),
            "total_volume_ml": round(float(volumes.sum()) / 1000.0, 4),
            "mean_lesion_volume_mm3": round(float(volumes.mean()), 2) if len(volumes) else np.nan,
        })  # fmt: skip
    return pd.DataFrame(rows, columns=list(LESIONS_DICTIONARY))


def change_rows(sessions: list[SessionOutputs]) -> pd.DataFrame:
    """Lesion change per pair of consecutive sessions, from the later session's change table."""
    times = {s.session: s.acq_time for s in sessions}
    rows = []
    for session in sessions:
        if not session.change_table.is_file():
            continue
        table = _read(session.change_table)
        previous = session.previous_session()
        days = _days(times.get(previous), session.acq_time)
        counts = {name: int((table["class"] == name).sum()) for name in CHANGE_CLASSES}
        change_ml = float(table["volume_change_mm3"].sum()) / 1000.0
        rows.append({
            **_ids(session),
            "previous_session_id": f"ses-{previous}" if previous else "n/a",
            "days": days,
            **counts,
            "volume_change_ml": round(change_ml, 4),
            "new_per_year": _per_year(counts["new"], days),
            "enlarging_per_year": _per_year(counts["enlarging"], days),
            "volume_change_ml_per_year": _per_year(change_ml, days),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=list(CHANGES_DICTIONARY))


def _days(earlier: str | None, later: str | None) -> float:
    if not earlier or not later:
        return np.nan
    return round((pd.Timestamp(later) - pd.Timestamp(earlier)) / pd.Timedelta(days=1), 2)


def _per_year(value: float, days: float) -> float:
    return round(value * DAYS_PER_YEAR / days, 4) if days > 0 else np.nan


def write_table(table: pd.DataFrame, path: Path, dictionary: dict) -> None:
    """A TSV (``n/a`` for missing values) and its JSON data dictionary, each written atomically."""
    with replacing(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
    with replacing(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(dictionary, indent=2) + "\n")
