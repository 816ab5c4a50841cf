"""Evaluation metrics on hand-made arrays with known answers, and mdgru-bids-evaluate."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from mdgru_bids.cli.evaluate import main
from mdgru_bids.lesions.metrics import (
    ANY_OVERLAP,
    DetectionRule,
    absolute_volume_difference,
    dice,
    hd95,
    lesion_detection,
    recall_by_size,
)

MSSEG = DetectionRule()


def approx6(value: float) -> object:
    """The TSV keeps six significant digits."""
    return pytest.approx(value, rel=1e-5)


def cube(shape: tuple[int, int, int], corner: tuple[int, int, int], side: int) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[tuple(slice(c, c + side) for c in corner)] = True
    return mask


def test_dice_and_volume_difference_of_shifted_cubes() -> None:
    a = cube((20, 20, 20), (2, 2, 2), 10)
    b = cube((20, 20, 20), (4, 2, 2), 10)  # shifted by 2 of 10 voxels: 800 shared of 1000
    assert dice(a, b) == pytest.approx(0.8)
    assert dice(a, a) == 1.0 and dice(a, ~a) == 0.0
    small = cube((20, 20, 20), (2, 2, 2), 3)  # 27 voxels against 1000
    assert absolute_volume_difference(small, a) == pytest.approx(97.3)
    assert absolute_volume_difference(a, small) == pytest.approx(100 * 973 / 27)
    assert math.isnan(absolute_volume_difference(a, np.zeros_like(a)))


def test_hd95_is_the_95th_percentile_in_mm() -> None:
    # Two parallel 10x10 plates 3 voxels apart along an axis of 2 mm voxels: every boundary
    # distance is 6 mm. One stray voxel 20 mm away is 1 of 101 and leaves the 95th percentile
    # alone, where the plain Hausdorff distance would be 20 mm.
    a = np.zeros((20, 12, 12), bool)
    a[2, 1:11, 1:11] = True
    b = np.roll(a, 3, axis=0)
    assert hd95(a, b, (2.0, 1.0, 1.0)) == pytest.approx(6.0)
    a[15, 5, 5] = True
    assert hd95(a, b, (2.0, 1.0, 1.0)) == pytest.approx(6.0)
    assert hd95(b, a, (2.0, 1.0, 1.0)) == pytest.approx(6.0)
    assert hd95(b, b, (2.0, 1.0, 1.0)) == 0.0
    assert math.isnan(hd95(a, np.zeros_like(a), (1.0, 1.0, 1.0)))
    assert math.isnan(hd95(np.zeros_like(a), np.zeros_like(a), (1.0, 1.0, 1.0)))


def test_hd95_matches_brute_force_on_random_blobs() -> None:
    rng = np.random.default_rng(3)
    spacing = (1.0, 1.5, 3.0)

    def blob() -> np.ndarray:
        return ndimage.gaussian_filter(rng.standard_normal((24, 20, 12)), 2.0) > 0.15

    def boundary_mm(mask: np.ndarray) -> np.ndarray:
        inner = ndimage.binary_erosion(mask, ndimage.generate_binary_structure(3, 1))
        return np.argwhere(mask & ~inner) * np.array(spacing)

    for _ in range(3):
        a, b = blob(), blob()
        d = cdist(boundary_mm(a), boundary_mm(b))
        expected = max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95))
        assert hd95(a, b, spacing) == pytest.approx(expected)


def lesions_scene() -> tuple[np.ndarray, np.ndarray]:
    """Truth: three 27-voxel cubes. Prediction: the first exactly, 18 voxels of the second,
    a false lesion, a large blob that grazes the third by 3 voxels, and a 2-voxel speck."""
    shape = (40, 40, 40)
    truth = cube(shape, (2, 2, 2), 3) | cube(shape, (2, 20, 2), 3) | cube(shape, (20, 20, 20), 3)
    pred = cube(shape, (2, 2, 2), 3) | cube(shape, (2, 20, 2), 3)
    pred[4, 20:23, 2:5] = False  # 18 of the second lesion's 27 voxels
    pred |= cube(shape, (30, 2, 30), 3)  # false lesion
    pred |= cube(shape, (23, 20, 20), 4)  # 64-voxel blob, outside the truth ...
    pred[22, 20, 20:23] = True  # ... but for a 3-voxel rim on the third lesion
    pred[35, 35, 35:37] = True  # 2 mm³: below the 3 mm³ minimum of MSSEG
    return pred, truth


def test_lesion_detection_as_msseg_and_by_any_overlap() -> None:
    pred, truth = lesions_scene()
    # MSSEG: the third lesion is covered 3/27 > 10%, but by a blob 61/64 outside the truth.
    found = lesion_detection(pred, truth, 1.0, MSSEG)
    assert (found.truth_lesions, found.predicted_lesions) == (3, 4)
    assert (found.detected, found.correct) == (2, 2)
    assert found.recall == pytest.approx(2 / 3)
    assert found.precision == pytest.approx(1 / 2)
    assert found.f1 == pytest.approx(4 / 7)
    # Any overlap: the grazed lesion is found, the blob counts, and so does the speck (as false).
    found = lesion_detection(pred, truth, 1.0, ANY_OVERLAP)
    assert (found.truth_lesions, found.predicted_lesions) == (3, 5)
    assert (found.detected, found.correct) == (3, 3)
    assert found.f1 == pytest.approx(2 * 0.6 / 1.6)
    # A larger voxel lifts the speck above 3 mm³, and it becomes a false lesion for MSSEG too.
    assert lesion_detection(pred, truth, 2.0, MSSEG).predicted_lesions == 5


def test_recall_by_size_counts_truth_lesions_per_bin() -> None:
    shape = (40, 40, 40)
    truth = cube(shape, (2, 2, 2), 2) | cube(shape, (10, 10, 10), 3) | cube(shape, (20, 2, 2), 5)
    truth |= cube(shape, (2, 20, 20), 6)  # 8, 27, 125 and 216 mm³
    pred = cube(shape, (10, 10, 10), 3) | cube(shape, (2, 20, 20), 6)
    bins = recall_by_size(pred, truth, 1.0, MSSEG, ((0, 10), (10, 30), (30, 100), (100, 1e9)))
    assert bins == [(0, 1), (1, 1), (0, 0), (1, 2)]
    found = lesion_detection(pred, truth, 1.0, MSSEG)
    assert sum(d for d, _ in bins) == found.detected and sum(n for _, n in bins) == 4


def test_lesion_detection_edge_cases() -> None:
    shape = (20, 20, 20)
    a, b = cube(shape, (2, 2, 2), 3), cube(shape, (2, 6, 2), 3)
    bridge = a | b
    bridge[2, 5, 2] = True  # one predicted lesion spanning two truth lesions
    found = lesion_detection(bridge, a | b, 1.0, MSSEG)
    assert (found.detected, found.correct, found.f1) == (2, 1, 1.0)
    empty = np.zeros(shape, bool)
    found = lesion_detection(a, empty, 1.0, MSSEG)  # nothing to find, one false lesion
    assert math.isnan(found.recall) and found.precision == 0.0 and math.isnan(found.f1)
    found = lesion_detection(empty, a, 1.0, MSSEG)  # one missed lesion
    assert found.recall == 0.0 and math.isnan(found.precision)
    diagonal = np.zeros(shape, bool)
    diagonal[[5, 6], [5, 6], [5, 6]] = True  # corner neighbours: one lesion (26-connected)
    assert lesion_detection(diagonal, diagonal, 1.0, ANY_OVERLAP).truth_lesions == 1


# --- the command ---------------------------------------------------------------------------

AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])


def put(root: Path, sub: str, ses: str, name: str, data: np.ndarray, affine=AFFINE) -> Path:
    path = root / f"sub-{sub}" / f"ses-{ses}" / "anat" / f"sub-{sub}_ses-{ses}_{name}.nii.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.uint8), affine), path)
    return path


@pytest.fixture
def datasets(tmp_path: Path) -> tuple[Path, Path]:
    """Predictions and truth for sub-01 (two sessions, change at ses-02) and truth alone for
    sub-02; predicted lesions at ses-01 are the truth's, at ses-02 the scene above."""
    pred_dir, truth_dir = tmp_path / "pred", tmp_path / "truth"
    pred, truth = lesions_scene()
    put(pred_dir, "01", "01", "label-lesion_mask", truth)
    put(truth_dir, "01", "01", "label-lesion_mask", truth)
    put(pred_dir, "01", "02", "label-lesion_mask", pred)
    put(truth_dir, "01", "02", "desc-manual_label-lesion_mask", truth)
    change = np.zeros(truth.shape, np.uint8)
    change[truth] = 1  # stable ...
    change[20:23, 20:23, 20:23] = 2  # ... but for one new lesion
    change[2, 20:23, 2:5] = 3  # and an enlarged rim of another
    change[30:33, 30:33, 2:5] = 4  # shrinking: lost, not appeared
    put(pred_dir, "01", "02", "desc-lesionchange_dseg", change)
    put(pred_dir, "01", "02", "space-MNI152NLin2009cAsym_label-lesion_mask", pred)  # not read
    put(truth_dir, "01", "02", "label-newlesion_mask", cube(truth.shape, (20, 20, 20), 3))
    put(truth_dir, "02", "01", "label-lesion_mask", truth)
    return pred_dir, truth_dir


def test_cli_writes_per_image_and_summary_rows(
    datasets: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pred_dir, truth_dir = datasets
    out = tmp_path / "scores.tsv"
    assert main([str(pred_dir), str(truth_dir), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "sub-02_ses-01_label-lesion_mask.nii.gz has no prediction" in captured.err
    assert "median" in captured.out and "sub-01_ses-02" in captured.out  # the readable table
    table = pd.read_csv(out, sep="\t", na_values="n/a")
    assert list(table.image) == [
        "sub-01_ses-01", "sub-01_ses-02", "mean", "median",  # lesion
        "sub-01_ses-02", "mean", "median",  # new
    ]  # fmt: skip
    assert list(table["map"]) == ["lesion"] * 4 + ["new"] * 3
    perfect, scene = table.iloc[0], table.iloc[1]
    assert (perfect.dice, perfect.lesion_f1, perfect.hd95_mm, perfect.avd_percent) == (1, 1, 0, 0)
    pred, truth = lesions_scene()
    assert scene.dice == approx6(dice(pred, truth))
    assert scene.lesion_f1 == approx6(0.5)  # 12 mm³ voxels: the speck is a false lesion
    assert scene.truth_mm3 == approx6(81 * 12.0)  # 2 x 2 x 3 mm voxels
    assert scene.hd95_mm == approx6(hd95(pred, truth, (2.0, 2.0, 3.0)))
    assert table.iloc[2].dice == approx6((1 + scene.dice) / 2)
    new = table.iloc[4]  # appeared = new (27 voxels) + enlarging rim (9) against 27
    assert new.dice == approx6(2 * 27 / (36 + 27))
    assert (new.truth_lesions, new.predicted_lesions, new.detected_lesions) == (1, 2, 1)
    assert new.lesion_precision == approx6(0.5) and new.lesion_recall == 1.0


def test_folders_named_like_entities_above_the_maps_do_not_count(
    datasets: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    pred_dir, truth_dir = datasets
    moved = [d.rename(tmp_path / f"{d.name}_ses-02") for d in (pred_dir, truth_dir)]
    assert main([str(moved[0]), str(moved[1])]) == 0
    images = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert images[:2] == ["sub-01_ses-01", "sub-01_ses-02"]


def test_cli_prints_tsv_without_out(datasets: tuple[Path, Path], capsys) -> None:
    pred_dir, truth_dir = datasets
    assert main([str(pred_dir), str(truth_dir), "--detection", "any-overlap"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split("\t")[:3] == ["image", "map", "dice"]
    assert len(out) == 8  # header, 3 images, 2 x (mean, median)


def test_cli_errors_are_one_line_with_bids_app_codes(
    datasets: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pred_dir, truth_dir = datasets

    def fails(args: list[str], code: int, words: str) -> None:
        assert main(args) == code
        err = [line for line in capsys.readouterr().err.splitlines() if "warning:" not in line]
        assert len(err) == 1 and words in err[0], err

    fails([str(tmp_path / "nowhere"), str(truth_dir)], 66, "does not exist")
    (tmp_path / "empty").mkdir()
    fails([str(pred_dir), str(tmp_path / "empty")], 66, "holds no")
    other = tmp_path / "other"
    put(other, "09", "01", "label-lesion_mask", np.ones((4, 4, 4)))
    fails([str(pred_dir), str(other)], 18, "has a truth")
    moved = AFFINE.copy()
    moved[0, 3] = 2.0
    bad = put(pred_dir, "01", "01", "label-lesion_mask", lesions_scene()[1], moved)
    fails([str(pred_dir), str(truth_dir)], 65, f"{bad} is not on the grid of")


def test_installed_command_runs(datasets: tuple[Path, Path], tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("mdgru-bids-evaluate")
    pred_dir, truth_dir = datasets
    done = subprocess.run(
        [str(exe), str(pred_dir), str(truth_dir), "--out", str(tmp_path / "s.tsv")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "s.tsv").read_text().startswith("image\tmap\tdice")
