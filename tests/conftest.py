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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained, tiny FLAIR + T1w model file: fast, and enough to run the pipeline."""
    import torch

    from mdgru_bids.model.files import make_card, save_model
    from mdgru_bids.model.network import NetworkConfig, build_network

    torch.manual_seed(0)
    config = NetworkConfig(
        in_channels=2, hidden=(4, 4), outputs=(4, 4), kernel_size=(3, 3), stem=4, dropconnect=0.0
    )
    card = make_card(config, ["FLAIR", "T1w"], patch_size=[32, 32, 32], overlap=[8, 8, 8])
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    return save_model(path, build_network(config), card)
