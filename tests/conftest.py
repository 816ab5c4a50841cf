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
