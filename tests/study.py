"""One small study run end to end, shared by the report and group tests (a pytest plugin:
test modules load it with ``pytest_plugins``, so it runs once per test session).

Three phantom participants: sub-01 with two sessions, sub-02 with one, and sub-03 whose run
fails (its model file's weights do not fit its card, which only the network step finds out).
Then the group level. The untrained tiny model puts probabilities near 0.42 everywhere; a
threshold of 0.43 turns its brightest spots into lesions, so the tables are not all zero.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

THRESHOLD = "0.43"


@dataclass(frozen=True)
class StudyRun:
    bids: Path
    out: Path
    env: dict[str, str]
    group: subprocess.CompletedProcess


def _broken_model(folder: Path) -> Path:
    """A FLAIR + T1w model file whose weights belong to another network than its card's."""
    from mdgru_bids.model.files import make_card, save_model
    from mdgru_bids.model.network import NetworkConfig, build_network

    config = NetworkConfig(
        in_channels=2, hidden=(4, 4), outputs=(4, 4), kernel_size=(3, 3), stem=4, dropconnect=0.0
    )
    card = make_card(config, ["FLAIR", "T1w"], patch_size=[32, 32, 32], overlap=[8, 8, 8])
    other = build_network(dataclasses.replace(config, stem=2))
    return save_model(folder / "broken.safetensors", other, card)


def mdgru_bids(env: dict[str, str], *argv: object) -> subprocess.CompletedProcess:
    """The installed command, as a user runs it."""
    command = [sys.executable, "-m", "mdgru_bids.cli.run", *map(str, argv)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=2400)


@pytest.fixture(scope="session")
def study(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, templateflow_home: Path
) -> StudyRun:
    from mdgru_bids.phantom import make_dataset

    root = tmp_path_factory.mktemp("study")
    bids = make_dataset(root / "bids", participants=3, sessions=2, seed=1, resolution=3.0)
    shutil.rmtree(bids / "sub-02" / "ses-02")
    table = bids / "sub-02" / "sub-02_sessions.tsv"
    sessions = pd.read_csv(table, sep="\t", dtype=str)
    sessions[sessions.session_id != "ses-02"].to_csv(table, sep="\t", index=False)

    out, work = root / "out", root / "work"
    env = {"TEMPLATEFLOW_HOME": str(templateflow_home), "PATH": "/usr/bin:/bin"}
    common = ["-w", work, "--nprocs", "2", "--omp-nthreads", "1", "--device", "cpu",
              "--skip-bids-validation"]  # fmt: skip
    done = mdgru_bids(env, bids, out, "participant", "--participant-label", "01", "02",
                      "--model", tiny_model, "--lesion-threshold", THRESHOLD, *common)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    broken = _broken_model(root)
    failed = mdgru_bids(env, bids, out, "participant", "--participant-label", "03",
                        "--session-label", "01", "--model", broken, *common)  # fmt: skip
    assert failed.returncode == 1, failed.stderr[-3000:]
    return StudyRun(bids, out, env, mdgru_bids(env, bids, out, "group"))
