"""The no-change rescan kit: a moved, re-gridded, biased, noisy second session whose truth
says nothing changed."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import ants
import nibabel as nib
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mdgru_bids.phantom.rescan import Rescan, bounded_bias_field, make_rescan_dataset
from mdgru_bids.transforms import read_linear, write_linear

SOURCE = Path("sub-01", "ses-01", "anat")


def _source(phantom: Path) -> tuple[Path, Path, Path]:
    anat = phantom / SOURCE
    mask = phantom / "derivatives" / "truth" / SOURCE / "sub-01_ses-01_label-lesion_mask.nii.gz"
    return anat / "sub-01_ses-01_FLAIR.nii.gz", anat / "sub-01_ses-01_T1w.nii.gz", mask


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def rescan_pair(phantom_bids: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    flair, t1w, mask = _source(phantom_bids)
    before = _digest(phantom_bids)
    out = make_rescan_dataset(tmp_path_factory.mktemp("rescan") / "pair", flair, t1w, mask, 3)
    assert _digest(phantom_bids) == before  # the source is only read
    return out


def test_ses_01_is_the_source_and_ses_02_a_moved_new_grid(
    rescan_pair: Path, phantom_bids: Path, tmp_path: Path
) -> None:
    flair, t1w, _ = _source(phantom_bids)
    first = rescan_pair / "sub-01" / "ses-01" / "anat"
    assert (first / "sub-01_ses-01_FLAIR.nii.gz").read_bytes() == flair.read_bytes()
    assert (first / "sub-01_ses-01_T1w.nii.gz").read_bytes() == t1w.read_bytes()
    second_path = rescan_pair / "sub-01" / "ses-02" / "anat" / "sub-01_ses-02_FLAIR.nii.gz"
    second = nib.load(second_path)
    assert not np.allclose(second.affine, nib.load(flair).affine)
    truth = rescan_pair / "derivatives" / "truth" / "sub-01"
    xfm = truth / "ses-02" / "anat" / "sub-01_ses-02_from-FLAIR_to-subject_mode-image_xfm.txt"
    to_subject = read_linear(xfm)
    rotation = Rotation.from_matrix(to_subject[:3, :3])
    assert 0.0 < np.rad2deg(rotation.magnitude()) <= 5.0
    # Read through the true transform, ses-02 lands back on ses-01 (the convention of every
    # truth transform: FLAIR -> subject, here ses-01's scanner space).
    fixed = ants.image_read(str(flair))
    moving = ants.image_read(str(second_path))
    back = ants.apply_transforms(fixed, moving, [str(xfm)]).numpy()
    write_linear(np.linalg.inv(to_subject), tmp_path / "inverse.txt")
    wrong_way = ants.apply_transforms(fixed, moving, [str(tmp_path / "inverse.txt")]).numpy()
    head = fixed.numpy() > 0.1 * np.percentile(fixed.numpy(), 99)
    aligned = np.corrcoef(back[head], fixed.numpy()[head])[0, 1]
    misaligned = np.corrcoef(wrong_way[head], fixed.numpy()[head])[0, 1]
    assert aligned > 0.9 and aligned > misaligned + 0.03, (aligned, misaligned)


def test_truth_says_nothing_changed_and_keeps_the_partial_volume(rescan_pair: Path) -> None:
    truth = rescan_pair / "derivatives" / "truth" / "sub-01"
    change = nib.load(truth / "ses-02" / "anat" / "sub-01_ses-02_desc-lesionchange_dseg.nii.gz")
    labels = np.unique(np.asarray(change.dataobj))
    assert set(labels) == {0, 1}  # background and stable only
    table = np.genfromtxt(truth / "sub-01_desc-rescan_table.tsv", names=True, dtype=None)
    volumes = table["lesion_volume_mm3"]
    assert volumes[0] > 100.0
    assert abs(volumes[1] - volumes[0]) <= 0.01 * volumes[0]
    mask = nib.load(truth / "ses-02" / "anat" / "sub-01_ses-02_label-lesion_mask.nii.gz")
    assert np.array_equal(np.asarray(mask.dataobj) > 0, np.asarray(change.dataobj) == 1)


def test_thick_slices_stack_along_the_axial_axis(phantom_bids: Path, tmp_path: Path) -> None:
    flair, _, mask = _source(phantom_bids)
    out = make_rescan_dataset(tmp_path / "pair", flair, None, mask, 0, Rescan(slice_mm=15.0))
    image = nib.load(out / "sub-01" / "ses-02" / "anat" / "sub-01_ses-02_FLAIR.nii.gz")
    zooms = np.asarray(image.header.get_zooms()[:3])
    source = np.asarray(nib.load(flair).header.get_zooms()[:3])
    assert zooms.max() == pytest.approx(15.0) and np.argmax(zooms) == np.argmax(source)
    assert zooms.min() == pytest.approx(source.min())
    assert not list(out.rglob("*T1w*"))


def test_the_bias_field_stays_within_its_bound() -> None:
    field = bounded_bias_field(np.random.default_rng(0), (20, 24, 16), 0.2)
    assert field.min() >= 1 / 1.2 - 1e-6 and field.max() <= 1.2 + 1e-6
    assert max(field.max() - 1.2, 1 / 1.2 - field.min()) > -1e-6  # it reaches its bound


def test_same_seed_same_bytes(rescan_pair: Path, phantom_bids: Path, tmp_path: Path) -> None:
    flair, t1w, mask = _source(phantom_bids)
    again = make_rescan_dataset(tmp_path / "pair", flair, t1w, mask, 3)
    assert _digest(again) == _digest(rescan_pair)


def test_cli_exit_codes_and_nothing_half_written(phantom_bids: Path, tmp_path: Path) -> None:
    flair, _, mask = _source(phantom_bids)
    cmd = [sys.executable, "-m", "mdgru_bids.cli.phantom"]
    missing = subprocess.run(
        [*cmd, str(tmp_path / "a"), "--rescan-of", str(tmp_path / "none.nii.gz")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 66 and "none.nii.gz" in missing.stderr
    other_grid = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), other_grid)
    wrong = subprocess.run(
        [*cmd, str(tmp_path / "b"), "--rescan-of", str(flair), "--rescan-lesion-mask",
         str(other_grid)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert wrong.returncode == 65 and len(wrong.stderr.strip().splitlines()) == 1
    assert "mask.nii.gz" in wrong.stderr
    usage = subprocess.run(
        [*cmd, str(tmp_path / "c"), "--slice-thickness", "3"], capture_output=True, timeout=120
    )
    assert usage.returncode == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz"]
    done = subprocess.run(
        [*cmd, str(tmp_path / "d"), "--rescan-of", str(flair), "--rescan-lesion-mask", str(mask),
         "--slice-thickness", "12"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    truth = tmp_path / "d" / "derivatives" / "truth" / "sub-01"
    assert (truth / "sub-01_desc-rescan_table.tsv").is_file()
