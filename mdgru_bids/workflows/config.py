"""What a participant's workflow is built from beyond the subject's files, and the settings
every output records so that a rerun can repeat it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mdgru_bids.lesions.change import ChangeThresholds
from mdgru_bids.lesions.components import LESION_THRESHOLD, MIN_LESION_MM3
from mdgru_bids.lesions.longitudinal import Evidence
from mdgru_bids.model.compute import DEFAULT_PRECISION
from mdgru_bids.templates import Template


@dataclass(frozen=True)
class WorkflowConfig:
    """Everything the workflow builders need beyond the subject's files."""

    bids_dir: Path
    derivatives_dir: Path  # where the data sinks write (a staging folder, published on success)
    model: Path
    model_inputs: tuple[str, ...]
    template: Template
    device: str = "cpu"
    precision: str = DEFAULT_PRECISION
    tta: bool = False  # average over mirror images (model.inference.TTA_FLIPS)
    omp_nthreads: int = 1  # N4 and the network
    registration_threads: int = 1  # ANTs registrations: 1 repeats exactly, more may not
    seed: int = 0
    threshold: float = LESION_THRESHOLD
    min_lesion_mm3: float = MIN_LESION_MM3
    change: ChangeThresholds = field(default_factory=ChangeThresholds)
    evidence: Evidence = field(default_factory=Evidence)
    consistent: bool = True  # one answer for every session where no lesion changed
    subject_resolution_mm: float = 1.0


def run_settings(cfg: WorkflowConfig) -> dict[str, object]:
    """What a rerun must repeat to give the same outputs, for the image sidecars."""
    return {
        "RandomSeed": cfg.seed,
        "RegistrationThreads": cfg.registration_threads,
        "Deterministic": cfg.registration_threads == 1,
        "N4Threads": cfg.omp_nthreads,
        "NetworkThreads": cfg.omp_nthreads,
        "NetworkDevice": cfg.device,
        "NetworkPrecision": cfg.precision,
        "TestTimeAugmentation": cfg.tta,
        "SessionsSegmented": "jointly" if cfg.consistent else "independently",
    }
