"""One participant over time: anatomy, lesions and every session's acquisitions and truth.

Randomness comes from one generator per (seed, participant, stream, session), so a
participant is the same whatever else the dataset holds, and runs are reproducible.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from mdgru_bids.phantom.acquisition import (
    PROTOCOLS,
    Grid,
    bias_field,
    draw_grid,
    draw_pose,
    rician,
    sample,
    subject_grid,
)
from mdgru_bids.phantom.anatomy import Anatomy
from mdgru_bids.phantom.contrast import draw_contrast, make_texture, synthesise
from mdgru_bids.phantom.lesions import Lesion, LesionMaps, plan_lesions, rasterise
from mdgru_bids.phantom.truth import Truth, lesion_ids, make_truth
from mdgru_bids.phantom.warp import Deformation, SubjectWarp, make_subject_warp

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
    """One stored image: int16 data on its acquisition grid, and the head pose it was taken in."""

    data: np.ndarray
    grid: Grid
    pose: np.ndarray  # subject mm -> scanner mm, rigid


@dataclass(frozen=True, eq=False)
class Session:
    """What one session writes: the scans, truth on the FLAIR grid, and the lesion ids on the
    participant's common grid (``Subject.grid``), where sessions can be compared directly."""

    scans: dict[str, Scan]
    truth: Truth
    subject_ids: np.ndarray


@dataclass(frozen=True, eq=False)
class Subject:
    """A participant's head and lesions, from which each session is acquired."""

    anatomy: Anatomy
    warp: SubjectWarp
    lesions: list[Lesion]
    texture: np.ndarray
    seed: int
    index: int

    @property
    def grid(self) -> Grid:
        """The common grid of all sessions, in subject mm."""
        return subject_grid(self.anatomy)


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
        scans[modality] = Scan(data, grid, pose)
    ids = subject_lesion_ids(subject.grid, deformation, anatomy, maps)
    return Session(scans=scans, truth=truth, subject_ids=ids)


def subject_lesion_ids(
    grid: Grid, deformation: Deformation, anatomy: Anatomy, maps: LesionMaps
) -> np.ndarray:
    """A session's lesion ids on a subject-space grid (no head pose), as the FLAIR truth is made
    but sampled only in boxes that can hold a lesion: the rest of the grid is empty, and
    skipping it keeps a 1 mm dataset about as fast to build as without this map."""
    fraction = np.zeros(grid.shape, np.float32)
    ids = np.zeros(grid.shape, np.int16)
    for box in _lesion_boxes(grid, deformation, anatomy, maps.ids):
        part = Grid(
            tuple(s.stop - s.start for s in box),
            grid.affine @ _translation([s.start for s in box]),
        )
        got = sample(part, np.eye(4), deformation, anatomy, {"f": maps.fraction}, {"i": maps.ids})
        fraction[box], ids[box] = got["f"], got["i"]
    return lesion_ids(fraction, ids)


def _lesion_boxes(
    grid: Grid, deformation: Deformation, anatomy: Anatomy, work_ids: np.ndarray
) -> list[tuple[slice, ...]]:
    """Per lesion, the grid voxels whose template point can fall on or next to it.

    A subject point x lands at c + L (x - c) + u(x) with |u| at most the largest lattice
    displacement, so x lies in c + L^-1 (box - c) grown by that bound: the bounding box of
    the image of the lesion box's corners (one work voxel larger, for interpolation).
    """
    bound = float(np.linalg.norm(deformation.field, axis=0).max()) + anatomy.voxel_mm
    to_subject = np.linalg.inv(deformation.linear)
    to_grid = np.linalg.inv(grid.affine)
    boxes = []
    for found in ndi.find_objects(work_ids):
        if found is None:
            continue
        low = anatomy.to_mm(np.array([s.start for s in found], float)) - bound
        high = anatomy.to_mm(np.array([s.stop - 1 for s in found], float)) + bound
        corners = np.array(list(itertools.product(*zip(low, high, strict=True))))
        subject = (corners - deformation.centre) @ to_subject.T + deformation.centre
        ijk = subject @ to_grid[:3, :3].T + to_grid[:3, 3]
        start = np.clip(np.floor(ijk.min(axis=0)).astype(int), 0, grid.shape)
        stop = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + 1, 0, grid.shape)
        if np.all(stop > start):
            boxes.append(tuple(slice(a, b) for a, b in zip(start, stop, strict=True)))
    return boxes


def _translation(voxels: list[int]) -> np.ndarray:
    shift = np.eye(4)
    shift[:3, 3] = voxels
    return shift
