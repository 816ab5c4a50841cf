"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from mdgru_bids.phantom import make_dataset


@pytest.fixture(scope="session")
def phantom_bids(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small longitudinal MS phantom (3 mm, 2 participants x 2 sessions, seed 0), built once.

    Raw BIDS at the returned path; truth in ``derivatives/truth``. Treat it as read-only.
    """
    root = tmp_path_factory.mktemp("phantom") / "bids"
    return make_dataset(root, participants=2, sessions=2, seed=0, resolution=3.0)


def _tiny_model(folder: Path, inputs: list[str]) -> Path:
    import torch

    from mdgru_bids.model.files import make_card, save_model
    from mdgru_bids.model.network import NetworkConfig, build_network

    torch.manual_seed(0)
    config = NetworkConfig(
        in_channels=len(inputs),
        hidden=(4, 4),
        outputs=(4, 4),
        kernel_size=(3, 3),
        stem=4,
        dropconnect=0.0,
    )
    card = make_card(config, inputs, patch_size=[32, 32, 32], overlap=[8, 8, 8])
    return save_model(folder / f"tiny_{'_'.join(inputs)}.safetensors", build_network(config), card)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained, tiny FLAIR + T1w model file: fast, and enough to run the pipeline."""
    return _tiny_model(tmp_path_factory.mktemp("model"), ["FLAIR", "T1w"])


@pytest.fixture(scope="session")
def tiny_model_flair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same for FLAIR only."""
    return _tiny_model(tmp_path_factory.mktemp("model"), ["FLAIR"])


@pytest.fixture(scope="session")
def mni_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 3 mm brain template: the embedded one (nilearn's MNI ICBM152 2009a), downsampled,
    as (T1w, brain mask). Small, so template registrations in tests are fast."""
    import nibabel as nib

    from mdgru_bids.templates import coarsen, icbm152_brain_mask, icbm152_map

    out = tmp_path_factory.mktemp("mni")
    t1_path, mask_path = out / "tpl-MNI_T1w.nii.gz", out / "tpl-MNI_desc-brain_mask.nii.gz"
    nib.save(coarsen(icbm152_map("t1"), 3), t1_path)
    nib.save(coarsen(icbm152_brain_mask(), 3, mask=True), mask_path)
    return t1_path, mask_path


@pytest.fixture(scope="session")
def templateflow_home(
    tmp_path_factory: pytest.TempPathFactory, mni_template: tuple[Path, Path]
) -> Path:
    """A pre-populated TEMPLATEFLOW_HOME holding the test template as MNI152NLin2009cAsym,
    as a cluster user would have it (no network)."""
    import json
    import shutil

    home = tmp_path_factory.mktemp("templateflow")
    folder = home / "tpl-MNI152NLin2009cAsym"
    folder.mkdir()
    t1w, mask = mni_template
    shutil.copy(t1w, folder / "tpl-MNI152NLin2009cAsym_res-01_T1w.nii.gz")
    shutil.copy(mask, folder / "tpl-MNI152NLin2009cAsym_res-01_desc-brain_mask.nii.gz")
    (folder / "template_description.json").write_text(
        json.dumps({"Name": "MNI ICBM152 2009 (test copy from nilearn)", "BIDSVersion": "1.4.0"})
    )
    (home / "dataset_description.json").write_text(
        json.dumps({"Name": "TemplateFlow (test)", "BIDSVersion": "1.4.0"})
    )
    return home
