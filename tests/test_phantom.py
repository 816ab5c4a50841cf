"""The longitudinal MS phantom: BIDS validity, determinism, truth, and the command line."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nibabel.processing import resample_from_to
from scipy import ndimage

from mdgru_bids.cli.phantom import main
from mdgru_bids.phantom import dataset, make_dataset
from mdgru_bids.phantom.truth import ENLARGING_RATIO, classify

SUBS, SESS = ("01", "02"), ("01", "02")
TRUTH = Path("derivatives", "truth")


def _anat(sub: str, ses: str, name: str) -> Path:
    return Path(f"sub-{sub}", f"ses-{ses}", "anat", f"sub-{sub}_ses-{ses}_{name}")


def _load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def _validate(root: Path) -> dict:
    """What bids-validator-deno reports for a dataset: issues and summary."""
    exe = shutil.which("bids-validator-deno") or str(
        Path(sys.executable).with_name("bids-validator-deno")
    )
    if not Path(exe).exists():
        pytest.skip("bids-validator-deno is not installed (pip install -e '.[test]')")
    done = subprocess.run(
        [exe, str(root), "--format", "json"], capture_output=True, text=True, timeout=300
    )
    return json.loads(done.stdout)


@pytest.mark.parametrize("part", [Path("."), TRUTH], ids=["raw", "truth"])
def test_bids_validator_finds_no_errors(phantom_bids: Path, part: Path) -> None:
    report = _validate(phantom_bids / part)
    assert sorted(report["summary"]["subjects"]) == list(SUBS)
    assert [i for i in report["issues"]["issues"] if i["severity"] == "error"] == []


def test_layout_metadata_and_acquisitions(phantom_bids: Path) -> None:
    desc = json.loads((phantom_bids / "dataset_description.json").read_text())
    assert "Fonov" in " ".join(desc["ReferencesAndLinks"])
    assert "synthetic" in (phantom_bids / "README.md").read_text().lower()
    truth_desc = json.loads((phantom_bids / TRUTH / "dataset_description.json").read_text())
    assert truth_desc["DatasetType"] == "derivative"
    participants = pd.read_csv(phantom_bids / "participants.tsv", sep="\t")
    assert list(participants.participant_id) == ["sub-01", "sub-02"]
    for sub in SUBS:
        sessions = pd.read_csv(phantom_bids / f"sub-{sub}" / f"sub-{sub}_sessions.tsv", sep="\t")
        times = [dt.datetime.fromisoformat(t) for t in sessions.acq_time]
        assert list(sessions.session_id) == ["ses-01", "ses-02"]
        assert (times[1] - times[0]).days >= 120  # months apart
        affines = []
        for ses in SESS:
            flair = nib.load(phantom_bids / _anat(sub, ses, "FLAIR.nii.gz"))
            t1w = nib.load(phantom_bids / _anat(sub, ses, "T1w.nii.gz"))
            zooms = np.array(flair.header.get_zooms())
            assert min(zooms) >= 3.0 - 1e-6 and min(t1w.header.get_zooms()) >= 3.0 - 1e-6
            assert zooms[2] > 2 * zooms[0]  # thick FLAIR slices
            assert flair.get_data_dtype() == np.int16
            affines.append(flair.affine)
            for name in (
                "label-lesion_mask",
                "desc-lesionid_dseg",
                "label-WM_probseg",
                "desc-brain_mask",
            ):
                truth = nib.load(phantom_bids / TRUTH / _anat(sub, ses, f"{name}.nii.gz"))
                assert truth.shape == flair.shape
                assert np.allclose(truth.affine, flair.affine)
        assert not np.allclose(affines[0], affines[1])  # a new head position and grid


def _tree(root: Path, sub: str) -> dict[str, bytes]:
    """Every file of one participant, raw and truth, by relative path."""
    files = [*root.glob(f"sub-{sub}/**/*"), *(root / TRUTH).glob(f"sub-{sub}/**/*")]
    return {str(f.relative_to(root)): f.read_bytes() for f in files if f.is_file()}


def test_same_seed_same_bytes_and_other_seed_other_data(phantom_bids: Path, tmp_path: Path) -> None:
    again = make_dataset(tmp_path / "again", participants=1, sessions=2, seed=0, resolution=3.0)
    assert _tree(again, "01") == _tree(phantom_bids, "01")
    other = make_dataset(tmp_path / "other", participants=1, sessions=1, seed=1, resolution=3.0)
    a = _load(phantom_bids / _anat("01", "01", "FLAIR.nii.gz"))
    b = _load(other / _anat("01", "01", "FLAIR.nii.gz"))
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_lesions_are_bright_on_flair_and_dark_on_t1w(phantom_bids: Path) -> None:
    for sub in SUBS:
        for ses in SESS:
            flair_img = nib.load(phantom_bids / _anat(sub, ses, "FLAIR.nii.gz"))
            flair = flair_img.get_fdata()
            mask_img = nib.load(phantom_bids / TRUTH / _anat(sub, ses, "label-lesion_mask.nii.gz"))
            mask = np.asarray(mask_img.dataobj) > 0
            wm = nib.load(phantom_bids / TRUTH / _anat(sub, ses, "label-WM_probseg.nii.gz"))
            white = (wm.get_fdata() > 0.9) & ~mask
            assert mask.sum() >= 5 and white.sum() > 100
            assert flair[mask].mean() > 1.3 * flair[white].mean()
            t1w = nib.load(phantom_bids / _anat(sub, ses, "T1w.nii.gz"))
            t1 = t1w.get_fdata()
            on_t1 = resample_from_to(mask_img, t1w, order=0).get_fdata() > 0
            wm_t1 = resample_from_to(wm, t1w, order=1).get_fdata() > 0.9
            assert t1[on_t1].mean() < 0.9 * t1[wm_t1 & ~on_t1].mean()


def test_fate_rule() -> None:
    assert classify(0.0, 10.0) == "new"
    assert classify(10.0, 0.0) == "resolved"
    assert classify(10.0, 10.0 * ENLARGING_RATIO) == "enlarging"
    assert classify(10.0 * ENLARGING_RATIO, 10.0) == "shrinking"
    assert classify(10.0, 12.0) == classify(12.0, 10.0) == "stable"


def _volumes(path: Path) -> dict[int, float]:
    """Lesion volumes (mm^3) recomputed from an id map."""
    img = nib.load(path)
    ids = np.asarray(img.dataobj).astype(int)
    voxel = float(np.prod(img.header.get_zooms()))
    counts = np.bincount(ids.ravel())
    return {i: counts[i] * voxel for i in np.flatnonzero(counts) if i > 0}


def test_truth_tables_agree_with_id_maps(phantom_bids: Path) -> None:
    for sub in SUBS:
        volumes, grids = [], []
        for ses in SESS:
            ids_path = phantom_bids / TRUTH / _anat(sub, ses, "desc-lesionid_dseg.nii.gz")
            mask = _load(phantom_bids / TRUTH / _anat(sub, ses, "label-lesion_mask.nii.gz"))
            assert np.array_equal(mask > 0, _load(ids_path) > 0)
            table = pd.read_csv(
                phantom_bids / TRUTH / _anat(sub, ses, "desc-lesions_table.tsv"), sep="\t"
            )
            assert dict(zip(table.lesion_id, table.volume_mm3, strict=True)) == pytest.approx(
                _volumes(ids_path), abs=1e-3
            )
            # Fates are measured on one grid per participant, in subject space.
            common = (
                phantom_bids / TRUTH / _anat(sub, ses, "space-subject_desc-lesionid_dseg.nii.gz")
            )
            volumes.append(_volumes(common))
            grids.append(nib.load(common).affine)
        np.testing.assert_array_equal(grids[0], grids[1])
        fates = pd.read_csv(
            phantom_bids / TRUTH / f"sub-{sub}" / f"sub-{sub}_desc-lesionfate_table.tsv", sep="\t"
        )
        before, after = volumes
        assert set(fates.lesion_id) == before.keys() | after.keys()
        assert set(fates.session_before) == {"ses-01"} and set(fates.session_after) == {"ses-02"}
        for row in fates.itertuples():
            vb, va = before.get(row.lesion_id, 0.0), after.get(row.lesion_id, 0.0)
            assert (row.volume_before_mm3, row.volume_after_mm3) == pytest.approx(
                (vb, va), abs=1e-3
            )
            ratio = va / vb if vb else np.inf
            expected = (
                "new"
                if vb == 0
                else "resolved"
                if va == 0
                else "enlarging"
                if ratio >= ENLARGING_RATIO
                else "shrinking"
                if ratio <= 1 / ENLARGING_RATIO
                else "stable"
            )
            assert row.fate == expected
        assert "new" in set(fates.fate)  # every interval brings a conspicuous new lesion
        assert len(set(fates.fate)) >= 3


def test_the_true_change_map_follows_the_fates(phantom_bids: Path) -> None:
    """ses-02's truth change map: each lesion's voxels by its fate, grown and lost parts only
    where the lesion changed; scored by mdgru-bids-evaluate as the appeared voxels."""
    from mdgru_bids.evaluation import DetectionRule, evaluate, find_pairs
    from mdgru_bids.lesions.change import ENLARGING, NEW, RESOLVED, SHRINKING, STABLE

    truth = phantom_bids / TRUTH
    assert not (truth / _anat("01", "01", "desc-lesionchange_dseg.nii.gz")).exists()
    appeared, enlarging = 0, 0
    for sub in SUBS:
        change = _load(truth / _anat(sub, "02", "desc-lesionchange_dseg.nii.gz"))
        ids = _load(truth / _anat(sub, "02", "desc-lesionid_dseg.nii.gz"))
        fates = pd.read_csv(truth / f"sub-{sub}" / f"sub-{sub}_desc-lesionfate_table.tsv", sep="\t")
        fate = dict(zip(fates.lesion_id, fates.fate, strict=True))
        assert set(np.unique(change[ids > 0])) <= {STABLE, NEW, ENLARGING}
        for label, allowed in ((NEW, {"new"}), (ENLARGING, {"enlarging"}),
                               (STABLE, {"stable", "enlarging", "shrinking"})):  # fmt: skip
            assert {fate[i] for i in np.unique(ids[change == label])} <= allowed
        assert {fate[i] for i in np.unique(ids[ids > 0])} >= {"new"}
        assert (change[ids == 0] != 0).sum() == np.isin(change, (SHRINKING, RESOLVED)).sum()
        new_ids = [i for i, f in fate.items() if f == "new" and (ids == i).any()]
        assert (change[np.isin(ids, new_ids)] == NEW).all()
        appeared += int(np.isin(change, (NEW, ENLARGING)).sum())
        # the earlier lesions sit where the true pose puts them: an enlarging lesion keeps its
        # old part, and a shrinking one's lost part surrounds what is left of it
        for i in (i for i, f in fate.items() if f == "enlarging" and (ids == i).sum() >= 3):
            kept = (change[ids == i] == STABLE).mean()
            assert 0.1 < kept < 0.9, (sub, i, kept)
            enlarging += 1
        for i in (i for i, f in fate.items() if f == "shrinking" and (ids == i).any()):
            near = ndimage.distance_transform_edt(ids != i) <= 3
            assert (change == SHRINKING).any() and near[change == SHRINKING].all()
    assert appeared > 0 and enlarging > 0
    pairs, _ = find_pairs(truth, truth)
    scores = evaluate([p for p in pairs if p.map == "new"], DetectionRule())
    assert (scores.loc[scores.image == "mean", "dice"] == 1.0).all()


def test_cli_refuses_a_non_empty_directory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    code = main([str(target), "--participants", "1", "--sessions", "1", "--resolution", "6"])
    err = capsys.readouterr().err.strip()
    assert code == 64
    assert len(err.splitlines()) == 1 and str(target) in err and "--overwrite" in err
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["busy"]
    # Even --overwrite will not replace a directory that is not a BIDS dataset.
    assert main([str(target), "--overwrite", "--resolution", "6"]) == 64
    assert (target / "notes.txt").read_text() == "keep me"


def test_cli_process_exit_codes(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    cmd = [sys.executable, "-m", "mdgru_bids.cli.phantom"]
    busy = subprocess.run([*cmd, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert busy.returncode == 64 and "not empty" in busy.stderr
    bad = subprocess.run(
        [*cmd, str(tmp_path / "new"), "--participants", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 64 and not (tmp_path / "new").exists()


def test_overwrite_replaces_a_phantom(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    settings = {"participants": 1, "sessions": 1, "resolution": 6.0}
    make_dataset(out, seed=0, **settings)
    first = _load(out / _anat("01", "01", "FLAIR.nii.gz"))
    with pytest.raises(FileExistsError):
        make_dataset(out, seed=1, **settings)
    make_dataset(out, seed=1, overwrite=True, **settings)
    second = _load(out / _anat("01", "01", "FLAIR.nii.gz"))
    assert first.shape != second.shape or not np.array_equal(first, second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no staging left behind


def test_a_failure_leaves_no_partial_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(dataset, "_write_participant", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        make_dataset(tmp_path / "ds", participants=1, sessions=1, resolution=6.0)
    assert list(tmp_path.iterdir()) == []
