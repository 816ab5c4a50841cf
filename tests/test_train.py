"""mdgru-bids-train: preprocessing as in the participant workflow, a model file, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mdgru_bids.cli.train import main
from mdgru_bids.model.files import load_model, read_card
from mdgru_bids.model.inference import segment

TINY = {"architecture": "multiscale", "hidden": [4], "outputs": [6], "kernel_size": [3], "stem": 4}


@pytest.fixture(scope="module")
def trained(
    phantom_bids: Path, templateflow_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    """Train 6 iterations, then resume to 12 in the same work folder: synthetic patches from
    the phantom's anatomies (not the template's, to stay fast) and augmented real patches."""
    tmp = tmp_path_factory.mktemp("train")
    config = tmp / "tiny.json"
    config.write_text(json.dumps(TINY))
    model = tmp / "models" / "tiny.safetensors"
    args = [
        str(phantom_bids), str(phantom_bids / "derivatives" / "truth"), str(model),
        "--participant-label", "01", "--config", str(config), "--patch-size", "16",
        "--inference-patch-size", "32", "--validation-fraction", "0", "-w", str(tmp / "work"),
        "--nprocs", "2", "--no-progress", "--random-seed", "3", "--no-template-anatomy",
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TEMPLATEFLOW_HOME", str(templateflow_home))
        assert main([*args, "--iterations", "6"]) == 0
        first_log = model.with_name("tiny_training.tsv").read_text().splitlines()
        first_seconds = read_card(model)["training"]["training_seconds"]
        results = sorted((tmp / "work" / "training_data_wf").rglob("result_*.pklz"))
        mtimes = {p: p.stat().st_mtime_ns for p in results}
        assert main([*args, "--iterations", "12", "--resume"]) == 0
    return {
        "model": model,
        "first_log": first_log,
        "first_seconds": first_seconds,
        "log": model.with_name("tiny_training.tsv").read_text().splitlines(),
        "cache_mtimes": mtimes,
        "work": tmp / "work",
    }


def test_model_file_has_a_card_that_records_the_training(trained: dict) -> None:
    card = read_card(trained["model"])
    assert card["inputs"] == ["FLAIR", "T1w"]
    assert card["patch_size"] == [32, 32, 32]
    training = card["training"]
    assert training["iterations"] == 12
    assert training["command"].startswith("mdgru-bids-train ")
    assert "--resume" in training["command"]
    (dataset,) = training["datasets"].values()
    assert dataset["cases"] == ["bids_sub-01_ses_01", "bids_sub-01_ses_02"]
    assert json.loads(trained["model"].with_suffix(".json").read_text()) == card


def test_card_records_the_synthetic_data(trained: dict) -> None:
    synthetic = read_card(trained["model"])["training"]["synthetic"]
    assert synthetic["share"] == 0.6 and synthetic["template_anatomy"] is None
    assert synthetic["anatomies_from_cases"] == ["bids_sub-01_ses_01", "bids_sub-01_ses_02"]
    settings = synthetic["settings"]  # every generator setting, for the next reader
    assert settings["synth_p"] == 0.6 and settings["acquisition"]["rim_share"] == [0.25, 1.0]
    assert settings["lesions"]["large_mm"] == [12.0, 35.0]


@pytest.fixture(scope="module")
def synthetic_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FLAIR model trained on synthetic patches from the template alone (no BIDS input)."""
    tmp = tmp_path_factory.mktemp("synthetic")
    config = tmp / "tiny.json"
    config.write_text(json.dumps(TINY))
    model = tmp / "synthetic.safetensors"
    assert main([
        str(model), "--inputs", "FLAIR", "--config", str(config), "--patch-size", "16",
        "--inference-patch-size", "32", "--iterations", "3", "-w", str(tmp / "work"),
        "--nprocs", "1", "--no-progress",
    ]) == 0  # fmt: skip
    return model


def test_a_model_trains_on_synthetic_data_alone(synthetic_only: Path) -> None:
    training = read_card(synthetic_only)["training"]
    assert training["datasets"] == {} and training["iterations"] == 3
    assert "Louis Collins" in training["synthetic"]["template_anatomy"]["license"]
    assert training["total_training_seconds"] == training["training_seconds"] > 0


def test_fine_tuning_starts_from_a_model_adds_inputs_caps_the_keep_gate_and_adds_up_its_compute(
    synthetic_only: Path, phantom_bids: Path, templateflow_home: Path, tmp_path: Path
) -> None:
    model = tmp_path / "tuned.safetensors"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TEMPLATEFLOW_HOME", str(templateflow_home))
        assert main([
            str(phantom_bids), str(phantom_bids / "derivatives" / "truth"), str(model),
            "--init-model", str(synthetic_only), "--inputs", "FLAIR", "T1w", "--keep-max", "0.7",
            "--recall-weight", "0.7",
            "--participant-label", "02", "--synth", "0", "--patch-size", "16",
            "--inference-patch-size", "32", "--iterations", "2", "--validation-fraction", "0",
            "-w", str(tmp_path / "work"), "--nprocs", "2", "--no-progress",
        ]) == 0  # fmt: skip
    base, card = read_card(synthetic_only), read_card(model)
    assert card["inputs"] == ["FLAIR", "T1w"] and card["network"]["in_channels"] == 2
    assert base["network"]["keep_max"] == 1.0 and card["network"]["keep_max"] == 0.7
    assert {**card["network"], "in_channels": 1, "keep_max": 1.0} == base["network"]
    assert load_model(model).network.blocks[0].mdgru.keep_max == 0.7
    # a capped network's tiles overlap by half a patch, and each overlap's first half (a
    # quarter patch) barely counts; an uncapped one's overlap by a quarter patch
    assert "blend_margin" not in base and base["overlap"] == [8] * 3
    assert card["overlap"] == [16] * 3
    assert card["blend_margin"] == [8] * 3
    init = card["training"]["init_model"]
    assert init["total_training_seconds"] == base["training"]["total_training_seconds"]
    total = card["training"]["training_seconds"] + init["total_training_seconds"]
    assert card["training"]["total_training_seconds"] == pytest.approx(total, abs=0.11)
    assert card["training"]["synthetic"] is None
    assert card["training"]["recall_weight"] == 0.7 and base["training"]["recall_weight"] == 0.5


def test_init_model_with_other_inputs_exits_64(
    capsys, synthetic_only: Path, phantom_bids: Path, tmp_path: Path
) -> None:
    truth = phantom_bids / "derivatives" / "truth"
    code, err = _run(
        capsys, phantom_bids, truth, tmp_path / "m.safetensors", "--init-model", synthetic_only,
        "--inputs", "T1w", "FLAIR",
    )  # fmt: skip
    assert code == 64
    assert "--init-model takes ['FLAIR']" in err


def test_resume_continues_the_log_and_reuses_the_preprocessing(trained: dict) -> None:
    log = trained["log"]
    assert log[0].split("\t") == ["iteration", "loss", "validation_dice"]
    assert len(log) == 13  # header + 12 iterations
    assert log[:7] == trained["first_log"]  # the first 6 iterations were not redone
    training = read_card(trained["model"])["training"]
    assert training["training_seconds"] > trained["first_seconds"] > 0  # both calls' time
    assert training["training_seconds"] > training["this_call_seconds"]
    assert trained["cache_mtimes"]  # the preprocessing ran as a cached Nipype workflow...
    for path, mtime in trained["cache_mtimes"].items():
        assert path.stat().st_mtime_ns == mtime  # ...and was not recomputed on the second run


def test_training_images_are_prepared_like_inference_images(trained: dict) -> None:
    """Subject space: 1 mm isotropic; the mask and label on that grid, label inside the brain."""
    work = trained["work"] / "training_data_wf" / "case_bids_sub_01_ses_01"
    flair = nib.load(next((work / "flair_to_subject").glob("*.nii*")))
    label = nib.load(next((work / "label_to_subject").glob("*.nii*")))
    mask = nib.load(next((work / "mask_to_subject").glob("*.nii*")))
    assert flair.header.get_zooms()[:3] == pytest.approx((1.0, 1.0, 1.0))
    for other in (label, mask):
        assert other.shape == flair.shape
        np.testing.assert_allclose(other.affine, flair.affine, atol=1e-4)
    lesion = label.get_fdata() > 0.5
    assert lesion.sum() > 0
    assert (np.asarray(mask.dataobj)[lesion] > 0).mean() > 0.95


def test_trained_model_segments_a_volume(trained: dict) -> None:
    model = load_model(trained["model"])
    rng = np.random.default_rng(0)
    images = [rng.normal(size=(20, 24, 20)).astype(np.float32) for _ in model.inputs]
    mask = np.zeros((20, 24, 20), bool)
    mask[2:-2, 2:-2, 2:-2] = True
    prob = segment(model, images, mask, (1.0, 1.0, 1.0))
    assert prob.shape == mask.shape
    assert np.all((prob >= 0) & (prob <= 1))


def _run(capsys, *args: object) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err.strip().splitlines()[-1]


def test_missing_masks_exit_18(capsys, phantom_bids: Path, tmp_path: Path) -> None:
    (tmp_path / "labels").mkdir()
    code, err = _run(capsys, phantom_bids, tmp_path / "labels", tmp_path / "m.safetensors")
    assert code == 18
    assert "has a mask" in err


def test_mask_on_another_grid_exits_65(capsys, phantom_bids: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    shutil.copytree(phantom_bids / "derivatives" / "truth", labels)
    mask = labels / "sub-01" / "ses-01" / "anat" / "sub-01_ses-01_label-lesion_mask.nii.gz"
    img = nib.load(mask)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:-1], img.affine), mask)
    code, err = _run(
        capsys, phantom_bids, labels, tmp_path / "m.safetensors", "--participant-label", "01"
    )
    assert code == 65
    assert str(mask) in err and "resample" in err


def test_model_inside_the_input_is_refused(capsys, phantom_bids: Path) -> None:
    truth = phantom_bids / "derivatives" / "truth"
    code, err = _run(capsys, phantom_bids, truth, phantom_bids / "m.safetensors")
    assert code == 64
    assert "inside BIDS_DIR" in err
    assert not (phantom_bids / "m.safetensors").exists()


def test_consistency_with_patches_too_small_to_overlap_exits_64(
    capsys, phantom_bids: Path, tmp_path: Path
) -> None:
    truth = phantom_bids / "derivatives" / "truth"
    code, err = _run(capsys, phantom_bids, truth, tmp_path / "m.safetensors",
                     "--consistency", "10", "--patch-size", "16")  # fmt: skip
    assert code == 64
    assert "--consistency needs --patch-size of at least 24" in err
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--keep-max", "0", "--keep-max must be above 0 and at most 1, got 0"),
    ("--recall-weight", "1", "--recall-weight must be between 0 and 1, got 1"),
])  # fmt: skip
def test_option_out_of_range_exits_64(
    capsys, phantom_bids: Path, tmp_path: Path, option: str, value: str, message: str
) -> None:
    truth = phantom_bids / "derivatives" / "truth"
    code, err = _run(capsys, phantom_bids, truth, tmp_path / "m.safetensors", option, value)
    assert code == 64
    assert message in err
    assert not (tmp_path / "m.safetensors").exists()


def test_bad_config_exits_64(capsys, phantom_bids: Path, tmp_path: Path) -> None:
    truth = phantom_bids / "derivatives" / "truth"
    code, err = _run(capsys, phantom_bids, truth, tmp_path / "m.safetensors", "--config", "nope")
    assert code == 64
    assert "--config nope" in err
