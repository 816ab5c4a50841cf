"""One participant over time: anatomy, lesions and every session's acquisitions and truth.

Randomness comes from one generator per (seed, participant, stream, session), so a
participant is the same whatever else the dataset holds, and runs are reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mdgru_bids.phantom.acquisition import (
    PROTOCOLS,
    Grid,
    bias_field,
    draw_grid,
    draw_pose,
    rician,
    sample,
)
from mdgru_bids.phantom.anatomy import Anatomy
from mdgru_bids.phantom.contrast import draw_contrast, make_texture, synthesise
from mdgru_bids.phantom.lesions import Lesion, plan_lesions, rasterise
from mdgru_bids.phantom.truth import Truth, make_truth
from mdgru_bids.phantom.warp import SubjectWarp, make_subject_warp

MODALITIES = ("T1w", "FLAIR")
HEAD_MOTION = (4.0, 5.0)  # between sessions: rotation SD (degrees), translation SD (mm)
SCAN_MOTION = (1.0, 1.0)  # between the scans of one session
WM_SIGNAL = (300.0, 700.0)  # stored white-matter intensity range (scanner gain)
STREAMS = {"warp": 1, "lesions": 2, "texture": 3, "session": 4, "demographics": 5}


def rng_for(seed: int, participant: int, stream: str, session: int = 0) -> np.random.Generator:
    """The random generator for one purpose; independent of everything else drawn."""
    return np.random.default_rng([seed, participant, STREAMS[stream], session])


@dataclass(frozen=True, eq=False)
class Scan:
    """One stored image: int16 data on its acquisition grid."""

    data: np.ndarray
    grid: Grid


@dataclass(frozen=True, eq=False)
class Session:
    """What one session writes: the scans, and truth on the FLAIR grid."""

    scans: dict[str, Scan]
    truth: Truth


@dataclass(frozen=True, eq=False)
class Subject:
    """A participant's head and lesions, from which each session is acquired."""

    anatomy: Anatomy
    warp: SubjectWarp
    lesions: list[Lesion]
    texture: np.ndarray
    seed: int
    index: int


def make_subject(anatomy: Anatomy, seed: int, index: int, sessions: int) -> Subject:
    """Draw participant ``index`` of the dataset made with ``seed``."""
    return Subject(
        anatomy=anatomy,
        warp=make_subject_warp(anatomy, rng_for(seed, index, "warp")),
        lesions=plan_lesions(anatomy, rng_for(seed, index, "lesions"), sessions),
        texture=make_texture(anatomy, rng_for(seed, index, "texture")),
        seed=seed,
        index=index,
    )


def _finish(
    rng: np.random.Generator, image: np.ndarray, face: np.ndarray | None, noise: float
) -> np.ndarray:
    """Bias field, Rician noise, optional defacing and scanner gain: the stored int16 image."""
    image = rician(rng, image * bias_field(rng, image.shape), noise)
    if face is not None:
        image[face > 0] = 0.0
    gain = rng.uniform(*WM_SIGNAL)
    return np.clip(np.round(image * gain), 0, np.iinfo(np.int16).max).astype(np.int16)


def acquire_session(subject: Subject, session: int, resolution: float, deface: bool) -> Session:
    """Scan a participant at one session: T1w and FLAIR, each with its own grid and pose."""
    anatomy, tissues = subject.anatomy, subject.anatomy.tissues
    rng = rng_for(subject.seed, subject.index, "session", session)
    maps = rasterise(subject.lesions, session, anatomy)
    deformation = subject.warp.session(session)
    head_pose = draw_pose(rng, anatomy.centre, *HEAD_MOTION)
    head_in_scanner = head_pose[:3, :3] @ anatomy.centre + head_pose[:3, 3]
    scans, truth = {}, None
    for modality in MODALITIES:
        centre = head_in_scanner + rng.normal(0.0, 5.0, 3)
        grid = draw_grid(rng, PROTOCOLS[modality], resolution, centre)
        pose = head_pose @ draw_pose(rng, anatomy.centre, *SCAN_MOTION)
        contrast = draw_contrast(rng, modality)
        linear = {"image": synthesise(anatomy, maps, modality, contrast, subject.texture)}
        labels = {"face": anatomy.face} if deface else {}
        if modality == "FLAIR":
            linear |= {"lesion": maps.fraction} | {k: tissues[k] for k in ("gm", "wm", "csf")}
            labels["ids"] = maps.ids
        got = sample(grid, pose, deformation, anatomy, linear, labels)
        if modality == "FLAIR":
            truth = make_truth(got["lesion"], got["ids"], got["gm"], got["wm"], got["csf"])
        noise = float(rng.uniform(*PROTOCOLS[modality].noise))
        data = _finish(rng, got["image"], got.get("face"), noise)
        scans[modality] = Scan(data, grid)
    return Session(scans=scans, truth=truth)
