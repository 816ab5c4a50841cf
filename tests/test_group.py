"""The group level: tables and map as plain functions on small hand-made outputs, then the
command on a phantom study's real participant outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from mdgru_bids.cli.run import main
from mdgru_bids.collect import Session, Subject
from mdgru_bids.group.maps import lesion_frequency
from mdgru_bids.group.outputs import find_sessions
from mdgru_bids.group.tables import (
    CHANGES_DICTIONARY,
    LESIONS_DICTIONARY,
    change_rows,
    lesion_rows,
    write_table,
)

if TYPE_CHECKING:
    from tests.study import StudyRun

pytest_plugins = ["tests.study"]  # the shared study run

TEMPLATE = "MNI152NLin2009cAsym"


# --- hand-made participant outputs -------------------------------------------------------------


def _anat(out: Path, sub: str, ses: str) -> Path:
    anat = out / f"sub-{sub}" / f"ses-{ses}" / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    return anat


def _lesions(out: Path, sub: str, ses: str, volumes: list[float]) -> None:
    table = pd.DataFrame({"lesion_id": range(1, len(volumes) + 1), "volume_mm3": volumes})
    path = _anat(out, sub, ses) / f"sub-{sub}_ses-{ses}_desc-lesions_table.tsv"
    table.to_csv(path, sep="\t", index=False)


def _change(out: Path, sub: str, ses: str, previous: str, classes: dict[str, float]) -> None:
    """A change table with one group per class, ``classes`` = {class: volume change}."""
    anat = _anat(out, sub, ses)
    rows = pd.DataFrame({"class": list(classes), "volume_change_mm3": list(classes.values())})
    rows.to_csv(anat / f"sub-{sub}_ses-{ses}_desc-lesionchange_table.tsv", sep="\t", index=False)
    sources = [f"bids::sub-{sub}/ses-{s}/anat/sub-{sub}_ses-{s}_label-lesion_probseg.nii.gz"
               for s in (previous, ses)]  # fmt: skip
    (anat / f"sub-{sub}_ses-{ses}_desc-lesionchange_dseg.json").write_text(
        json.dumps({"Sources": sources})
    )


def _subject(label: str, times: dict[str | None, str | None]) -> Subject:
    return Subject(
        label, tuple(Session(ses, Path(f"{ses}.nii.gz"), None, t) for ses, t in times.items())
    )


def test_lesion_rows_count_lesions_and_their_volumes(tmp_path: Path) -> None:
    _lesions(tmp_path, "01", "01", [10.0, 30.0, 500.0])
    _lesions(tmp_path, "01", "02", [])
    subject = _subject("01", {"01": "2020-01-01T10:00:00", "02": None, "03": None})
    sessions = find_sessions(tmp_path, subject)
    assert [s.session for s in sessions] == ["01", "02"]  # ses-03 has no outputs
    rows = lesion_rows(sessions)
    assert rows["lesion_count"].tolist() == [3, 0]
    assert rows["total_volume_ml"].tolist() == [0.54, 0.0]
    assert rows["mean_lesion_volume_mm3"].iloc[0] == 180.0
    assert np.isnan(rows["mean_lesion_volume_mm3"].iloc[1])
    assert rows["session_id"].tolist() == ["ses-01", "ses-02"]


def test_a_dataset_without_sessions_has_one_row_and_no_change(tmp_path: Path) -> None:
    anat = tmp_path / "sub-01" / "anat"
    anat.mkdir(parents=True)
    table = pd.DataFrame({"lesion_id": [1], "volume_mm3": [5.0]})
    table.to_csv(anat / "sub-01_desc-lesions_table.tsv", sep="\t", index=False)
    sessions = find_sessions(tmp_path, _subject("01", {None: "2020-01-01T00:00:00"}))
    rows = lesion_rows(sessions)
    assert rows["session_id"].tolist() == ["n/a"] and rows["lesion_count"].tolist() == [1]
    assert change_rows(sessions).empty


def test_change_rows_days_and_annual_rates(tmp_path: Path) -> None:
    for ses in ("01", "02", "03", "04"):
        _lesions(tmp_path, "01", ses, [10.0])
    # ses-03 was compared with ses-01 (a re-run without ses-02): its sidecar says so
    _change(tmp_path, "01", "02", "01", {"new": 20.0, "stable": 0.0})
    _change(tmp_path, "01", "03", "01",
            {"new": 10.0, "enlarging": 40.0, "shrinking": -20.0, "resolved": -30.0})  # fmt: skip
    _change(tmp_path, "01", "04", "03", {"new": 10.0})
    subject = _subject(
        "01",
        {"01": "2020-01-01T00:00:00", "02": "2020-07-01T12:00:00", "03": "2021-12-31T12:00:00",
         "04": None},
    )  # fmt: skip
    rows = change_rows(find_sessions(tmp_path, subject)).set_index("session_id")
    assert rows.loc["ses-02", "previous_session_id"] == "ses-01"
    assert rows.loc["ses-02", "days"] == 182.5
    assert rows.loc["ses-03", "previous_session_id"] == "ses-01"
    assert rows.loc["ses-03", "days"] == 730.5  # two years of 365.25 days, from ses-01
    counts = rows.loc["ses-03", ["new", "enlarging", "shrinking", "resolved", "stable"]]
    assert counts.tolist() == [1, 1, 1, 1, 0]
    assert rows.loc["ses-03", "volume_change_ml"] == 0.0
    assert rows.loc["ses-03", "new_per_year"] == 0.5
    assert rows.loc["ses-03", "enlarging_per_year"] == 0.5
    assert rows.loc["ses-02", "volume_change_ml_per_year"] == pytest.approx(0.04, abs=1e-4)
    assert np.isnan(rows.loc["ses-04", "days"]) and np.isnan(rows.loc["ses-04", "new_per_year"])
    assert "ses-01" not in rows.index


def test_tables_are_written_with_n_a_and_a_data_dictionary(tmp_path: Path) -> None:
    _lesions(tmp_path, "01", "01", [])
    rows = lesion_rows(find_sessions(tmp_path, _subject("01", {"01": None})))
    write_table(rows, tmp_path / "group" / "lesions.tsv", LESIONS_DICTIONARY)
    text = (tmp_path / "group" / "lesions.tsv").read_text().splitlines()
    assert text[1].split("\t") == ["sub-01", "ses-01", "n/a", "0", "0.0", "n/a"]
    dictionary = json.loads((tmp_path / "group" / "lesions.json").read_text())
    assert list(dictionary) == text[0].split("\t")


def test_frequency_map_counts_each_participant_once_at_their_latest_session(
    tmp_path: Path,
) -> None:
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    maps = {("01", "01"): [0.9, 0.9, 0.0, 0.0], ("01", "02"): [0.0, 0.9, 0.9, 0.0],
            ("02", "01"): [0.0, 0.6, 0.0, 0.4]}  # fmt: skip
    for (sub, ses), values in maps.items():
        _lesions(tmp_path, sub, ses, [])
        anat = _anat(tmp_path, sub, ses)
        image = nib.Nifti1Image(np.array(values, dtype=np.float32).reshape(4, 1, 1), affine)
        nib.save(image, anat / f"sub-{sub}_ses-{ses}_space-{TEMPLATE}_label-lesion_probseg.nii.gz")
        threshold = {"01": 0.5, "02": 0.3}[sub]
        (anat / f"sub-{sub}_ses-{ses}_label-lesion_mask.json").write_text(
            json.dumps({"Threshold": threshold})
        )
    participants = [
        find_sessions(tmp_path, _subject("01", {"01": None, "02": None})),
        find_sessions(tmp_path, _subject("02", {"01": None})),
    ]
    image, sources = lesion_frequency(participants, TEMPLATE)
    assert np.asarray(image.dataobj).ravel().tolist() == [0.0, 1.0, 0.5, 0.5]
    assert [p.name.split("_space")[0] for p in sources] == ["sub-01_ses-02", "sub-02_ses-01"]
    assert lesion_frequency(participants, "OtherTemplate") is None


# --- the command on a phantom study ------------------------------------------------------------


def test_group_level_runs_on_the_participant_outputs(study: StudyRun) -> None:
    assert study.group.returncode == 0, study.group.stderr[-3000:]
    for name in ("lesions.tsv", "lesions.json", "changes.tsv", "changes.json",
                 f"space-{TEMPLATE}_label-lesion_probseg.nii.gz",
                 f"space-{TEMPLATE}_label-lesion_probseg.json"):  # fmt: skip
        assert (study.out / "group" / name).is_file(), name
    assert (study.out / "group.html").is_file()
    assert "sub-03" in study.group.stderr  # the failed participant is named in the log


def test_lesion_table_matches_the_lesion_masks(study: StudyRun) -> None:
    table = pd.read_csv(study.out / "group" / "lesions.tsv", sep="\t", na_values="n/a")
    assert list(zip(table.participant_id, table.session_id, strict=True)) == [
        ("sub-01", "ses-01"), ("sub-01", "ses-02"), ("sub-02", "ses-01")
    ]  # fmt: skip
    assert table["lesion_count"].sum() > 0, "no lesions: the tiny model's output moved?"
    for row in table.itertuples():
        sub, ses = row.participant_id, row.session_id
        mask = nib.load(study.out / sub / ses / "anat" / f"{sub}_{ses}_label-lesion_mask.nii.gz")
        voxel_mm3 = float(np.prod(mask.header.get_zooms()[:3]))
        mask_ml = np.count_nonzero(np.asanyarray(mask.dataobj)) * voxel_mm3 / 1000
        lesions = pd.read_csv(
            study.out / sub / ses / "anat" / f"{sub}_{ses}_desc-lesions_table.tsv", sep="\t"
        )
        assert row.lesion_count == len(lesions)
        # Partial volumes in subject space: the table's sum, close to (never equal to) the
        # thresholded voxels of the session's coarse grid.
        assert row.total_volume_ml == pytest.approx(lesions["volume_mm3"].sum() / 1000, abs=1e-3)
        assert row.total_volume_ml == pytest.approx(mask_ml, rel=0.3)
        times = pd.read_csv(study.bids / sub / f"{sub}_sessions.tsv", sep="\t")
        assert row.acq_time == times.set_index("session_id").loc[ses, "acq_time"]
    dictionary = json.loads((study.out / "group" / "lesions.json").read_text())
    assert list(dictionary) == list(table.columns)


def test_change_table_matches_the_change_tables(study: StudyRun) -> None:
    table = pd.read_csv(study.out / "group" / "changes.tsv", sep="\t")
    assert len(table) == 1, "one pair of consecutive sessions: sub-01 ses-01 → ses-02"
    (row,) = table.itertuples()
    assert (row.participant_id, row.session_id, row.previous_session_id) == (
        "sub-01", "ses-02", "ses-01"
    )  # fmt: skip
    times = pd.read_csv(study.bids / "sub-01" / "sub-01_sessions.tsv", sep="\t")
    when = pd.to_datetime(times.set_index("session_id")["acq_time"])
    days = (when["ses-02"] - when["ses-01"]).total_seconds() / 86400
    assert row.days == pytest.approx(days, abs=0.01)
    change = pd.read_csv(
        study.out / "sub-01" / "ses-02" / "anat" / "sub-01_ses-02_desc-lesionchange_table.tsv",
        sep="\t",
    )
    counts = change["class"].value_counts()
    for name in ("new", "enlarging", "shrinking", "resolved", "stable"):
        assert getattr(row, name) == counts.get(name, 0), name
    volume_ml = change["volume_change_mm3"].sum() / 1000
    assert row.volume_change_ml == pytest.approx(volume_ml, abs=1e-3)
    assert row.new_per_year == pytest.approx(counts.get("new", 0) / (days / 365.25), rel=1e-3)
    assert row.volume_change_ml_per_year == pytest.approx(volume_ml / (days / 365.25), rel=1e-3)
    dictionary = json.loads((study.out / "group" / "changes.json").read_text())
    assert list(dictionary) == list(table.columns) == list(CHANGES_DICTIONARY)


def test_frequency_map_is_a_fraction_of_the_participants(
    study: StudyRun, templateflow_home: Path
) -> None:
    path = study.out / "group" / f"space-{TEMPLATE}_label-lesion_probseg.nii.gz"
    image = nib.load(path)
    template = nib.load(templateflow_home / f"tpl-{TEMPLATE}" / f"tpl-{TEMPLATE}_res-01_T1w.nii.gz")
    assert image.shape == template.shape and np.allclose(image.affine, template.affine)
    values = set(np.unique(np.asarray(image.dataobj)).tolist())
    assert values <= {0.0, 0.5, 1.0} and len(values) > 1  # two participants with outputs
    sidecar = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["NumberOfParticipants"] == 2
    assert all((study.out / s.removeprefix("bids::")).is_file() for s in sidecar["Sources"])


def test_group_report_says_who_has_one_session_and_who_failed(study: StudyRun) -> None:
    html = " ".join((study.out / "group.html").read_text().split())
    assert "With one session only, so without lesion change: sub-02." in html
    assert "sub-03 failed" in html and "sub_03_wf.lesion_seg_ses_01_wf.segment" in html


def test_outputs_with_reports_and_group_are_valid_bids(study: StudyRun) -> None:
    exe = Path(sys.executable).parent / "bids-validator-deno"
    done = subprocess.run([str(exe), "--json", str(study.out)], capture_output=True, text=True)
    issues = json.loads(done.stdout)["issues"]["issues"]
    assert [(i["code"], i.get("location")) for i in issues if i["severity"] == "error"] == []


def test_group_level_without_participant_outputs_exits_66(
    capsys, phantom_bids: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert main([str(phantom_bids), str(out), "group"]) == 66
    assert "holds no mdgru-bids derivatives" in capsys.readouterr().err
    assert not out.exists(), "the group level creates no output folder"
    out.mkdir()
    (out / "dataset_description.json").write_text("{}")
    assert main([str(phantom_bids), str(out), "group", "-w", str(tmp_path / "work")]) == 66
    err = capsys.readouterr().err.strip()
    assert err.startswith("mdgru-bids: error: no participant outputs") and "\n" not in err
    assert not (tmp_path / "work").exists()
