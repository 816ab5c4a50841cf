"""``make_dataset``: a whole phantom BIDS dataset with its truth, written atomically."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from mdgru_bids.lesions.change import CHANGE_LABELS, LesionGroup, change_map
from mdgru_bids.phantom import bids
from mdgru_bids.phantom.anatomy import load_anatomy
from mdgru_bids.phantom.simulate import Session, Subject, acquire_session, make_subject, rng_for
from mdgru_bids.phantom.truth import ENLARGING_RATIO, fate_rows, lesion_volumes
from mdgru_bids.transforms import write_linear

log = logging.getLogger(__name__)
RESOLUTION_RANGE = (1.0, 6.0)  # mm; finer adds nothing to a 1 mm template, coarser is a blur
FIRST_SESSION = dt.datetime(2016, 1, 4, 8, 0)
INTERVAL_DAYS = (150, 420)  # between consecutive sessions
LESION_COLUMNS = ["lesion_id", "site", "black_hole", "volume_mm3"]
CHANGE_DESCRIPTION = (
    "True change since the previous session: 1 stable, 2 new, 3 enlarging (its grown part), "
    "4 shrinking and 5 resolved (the lost part), fates from desc-lesionfate_table.tsv"
)
FATE_COLUMNS = [
    "lesion_id",
    "session_before",
    "session_after",
    "volume_before_mm3",
    "volume_after_mm3",
    "fate",
]


def make_dataset(
    out_dir: str | os.PathLike[str],
    participants: int = 2,
    sessions: int = 2,
    seed: int = 0,
    resolution: float = 1.0,
    overwrite: bool = False,
    deface: bool = False,
) -> Path:
    """Write a longitudinal MS phantom BIDS dataset, truth in ``derivatives/truth``.

    ``resolution`` scales every acquisition's voxel sizes so the finest is that many mm (3 mm
    gives small, fast datasets for tests). The dataset appears at ``out_dir`` only once it is
    complete. Raises ValueError for impossible settings, NotADirectoryError or FileExistsError
    when ``out_dir`` is a file or a non-empty directory (without ``overwrite``).
    """
    check_settings(participants, sessions, seed, resolution)
    out = Path(out_dir).expanduser().absolute()
    check_target(out, overwrite)
    with staging(out) as stage:
        _write(stage, participants, sessions, seed, float(resolution), deface)
    return out


def check_settings(participants: int, sessions: int, seed: int, resolution: float) -> None:
    """Raise ValueError for settings no dataset can have."""
    if participants < 1 or sessions < 1:
        raise ValueError("participants and sessions must be at least 1")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed}")
    lo, hi = RESOLUTION_RANGE
    if not lo <= resolution <= hi:
        raise ValueError(f"resolution must be between {lo:g} and {hi:g} mm, not {resolution:g}")


def check_target(out: Path, overwrite: bool) -> None:
    """Refuse to write over anything but an empty directory, or (asked to) a BIDS dataset."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory; choose another path")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(
            f"{out} is not empty; choose an empty or new directory, or pass --overwrite "
            "(overwrite=True) to replace the dataset there"
        )
    if not (out / "dataset_description.json").is_file():
        raise FileExistsError(
            f"refusing to overwrite {out}: it holds no dataset_description.json, so it is not "
            "a BIDS dataset; choose an empty or new directory"
        )


@contextlib.contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A temporary sibling of ``out`` that takes its place only if everything was written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    stage.chmod(0o755)
    if not out.exists():
        stage.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    out.rename(old / out.name)
    stage.rename(out)
    shutil.rmtree(old)


def _write(
    root: Path, participants: int, sessions: int, seed: int, resolution: float, deface: bool
) -> None:
    """Everything of the dataset under ``root``."""
    settings = (
        f"seed {seed}, {participants} participants x {sessions} sessions, "
        f"resolution {resolution:g} mm{', defaced' if deface else ''}"
    )
    truth = root / bids.TRUTH_DIR
    bids.write_json(root / "dataset_description.json", bids.raw_description(settings))
    (root / "README.md").write_text(bids.readme(settings))
    bids.write_json(root / "participants.json", bids.PARTICIPANTS_JSON)
    bids.write_json(root / "sessions.json", bids.SESSIONS_JSON)
    bids.write_json(truth / "dataset_description.json", bids.truth_description(settings))
    (truth / ".bidsignore").write_text(bids.TRUTH_BIDSIGNORE)
    (truth / "README.md").write_text(bids.truth_readme(settings))
    bids.write_json(truth / "desc-lesions_table.json", bids.LESIONS_JSON)
    bids.write_json(truth / "desc-lesionfate_table.json", bids.fate_dictionary(ENLARGING_RATIO))
    rows = [
        _write_participant(root, p, participants, sessions, seed, resolution, deface)
        for p in range(participants)
    ]
    bids.write_tsv(root / "participants.tsv", rows, ["participant_id", "age", "sex"])


def _session_times(rng: np.random.Generator, sessions: int) -> list[str]:
    """Session dates months apart, at daytime hours, as BIDS acq_time."""
    day = FIRST_SESSION + dt.timedelta(days=int(rng.integers(0, 2000)))
    times = []
    for _ in range(sessions):
        when = day.replace(hour=int(rng.integers(8, 18)), minute=int(rng.integers(0, 60)))
        times.append(when.strftime("%Y-%m-%dT%H:%M:%S"))
        day += dt.timedelta(days=int(rng.integers(*INTERVAL_DAYS)))
    return times


def _write_participant(
    root: Path,
    index: int,
    participants: int,
    sessions: int,
    seed: int,
    resolution: float,
    deface: bool,
) -> dict[str, object]:
    """Write a participant's sessions and tables; returns its participants.tsv row."""
    sub = bids.label(index, participants)
    rng = rng_for(seed, index, "demographics")
    row = {
        "participant_id": f"sub-{sub}",
        "age": int(rng.integers(20, 56)),
        "sex": "F" if rng.random() < 0.7 else "M",
    }
    times = _session_times(rng, sessions)
    subject = make_subject(load_anatomy(resolution), seed, index, sessions)
    labels = [bids.label(k, sessions) for k in range(sessions)]
    volumes, before = [], None
    for k, ses in enumerate(labels):
        log.info("sub-%s ses-%s", sub, ses)
        session = acquire_session(subject, k, resolution, deface)
        volumes.append(_write_session(root, sub, ses, session, subject))
        if before is not None:
            fates = fate_rows(volumes[-2:], [f"ses-{labels[k - 1]}", f"ses-{ses}"])
            _write_change(root / bids.TRUTH_DIR, sub, ses, session, subject, before, fates)
        before = session.subject_ids
    bids.write_tsv(
        root / f"sub-{sub}" / f"sub-{sub}_sessions.tsv",
        [{"session_id": f"ses-{s}", "acq_time": t} for s, t in zip(labels, times, strict=True)],
        ["session_id", "acq_time"],
    )
    bids.write_tsv(
        root / bids.TRUTH_DIR / f"sub-{sub}" / f"sub-{sub}_desc-lesionfate_table.tsv",
        fate_rows(volumes, [f"ses-{s}" for s in labels]),
        FATE_COLUMNS,
    )
    return row


def _write_session(
    root: Path, sub: str, ses: str, session: Session, subject: Subject
) -> dict[int, float]:
    """A session's images and truth; returns its lesion volumes (mm^3) by id on the common
    subject grid, where every session is measured alike."""
    for modality, scan in session.scans.items():
        path = root / bids.anat_path(sub, ses, modality)
        bids.write_nifti(path, scan.data, scan.grid.affine, np.int16)
        bids.write_json(
            bids.sidecar(path), bids.scan_sidecar(modality, scan.grid.zooms, scan.grid.shape[2])
        )
    source = bids.anat_path(sub, ses, "FLAIR")
    affine = session.scans["FLAIR"].grid.affine
    truth, out = session.truth, root / bids.TRUTH_DIR

    def put(path: Path, data: np.ndarray, dtype: type, **sidecar: str) -> None:
        bids.write_nifti(out / path, data, affine, dtype)
        bids.write_json(bids.sidecar(out / path), bids.truth_sidecar(source, **sidecar))

    put(
        bids.anat_path(sub, ses, "mask", label="lesion"),
        truth.lesion_mask,
        np.uint8,
        Type="Lesion",
        Description="Lesion voxels: lesion partial volume >= 0.5",
    )
    put(
        bids.anat_path(sub, ses, "dseg", desc="lesionid"),
        truth.lesion_ids,
        np.int16,
        Description="Persistent lesion id per voxel, the same in every session; 0 = none",
    )
    for tissue, fraction in truth.probseg.items():
        put(
            bids.anat_path(sub, ses, "probseg", label=tissue),
            fraction,
            np.uint8,
            Description=f"{tissue} partial volume, lesion tissue excluded",
        )
    put(
        bids.anat_path(sub, ses, "mask", desc="brain"),
        truth.brain,
        np.uint8,
        Type="Brain",
        Description="Intracranial volume: GM + WM + CSF + lesion >= 0.5",
    )
    volumes = lesion_volumes(truth.lesion_ids, _voxel_mm3(affine))
    by_id = {lesion.lesion_id: lesion for lesion in subject.lesions}
    rows = [
        {
            "lesion_id": i,
            "site": by_id[i].site,
            "black_hole": str(by_id[i].black_hole).lower(),
            "volume_mm3": round(v, 3),
        }
        for i, v in volumes.items()
    ]
    bids.write_tsv(
        out / bids.anat_path(sub, ses, "table", ".tsv", desc="lesions"), rows, LESION_COLUMNS
    )
    _write_subject_space(out, sub, ses, session, subject)
    return lesion_volumes(session.subject_ids, _voxel_mm3(subject.grid.affine))


def _write_subject_space(out: Path, sub: str, ses: str, session: Session, subject: Subject) -> None:
    """The session's true FLAIR -> subject transform, and its lesion ids on the common grid."""
    to_subject = np.linalg.inv(session.scans["FLAIR"].pose)
    xfm = bids.anat_path(sub, ses, "xfm", ".txt", **bids.FLAIR_TO_SUBJECT)
    (out / xfm).parent.mkdir(parents=True, exist_ok=True)
    write_linear(to_subject, out / xfm)
    ids = bids.anat_path(sub, ses, "dseg", space="subject", desc="lesionid")
    bids.write_nifti(out / ids, session.subject_ids, subject.grid.affine, np.int16)
    bids.write_json(bids.sidecar(out / ids), bids.SUBJECT_IDS_SIDECAR)


def _write_change(
    out: Path,
    sub: str,
    ses: str,
    session: Session,
    subject: Subject,
    before: np.ndarray,
    fates: list[dict[str, object]],
) -> None:
    """The true change map on a later session's FLAIR grid, with the labels of the app's change
    maps: its lesion voxels by their fate, the grown part of enlarging lesions, and the lost
    part of shrinking and resolved ones (the earlier session's subject-space ids brought onto
    this grid through the true pose)."""
    flair = session.scans["FLAIR"]
    # FLAIR voxel -> scanner mm -> subject mm (the true pose) -> subject-grid voxel
    voxel_to_subject_grid = (
        np.linalg.inv(subject.grid.affine) @ np.linalg.inv(flair.pose) @ flair.grid.affine
    )
    previous = ndi.affine_transform(
        before, voxel_to_subject_grid, output_shape=flair.grid.shape, order=0
    )
    current = session.truth.lesion_ids
    code = {name: value for value, name in CHANGE_LABELS.items()}
    seen = (set(np.unique(previous).tolist()), set(np.unique(current).tolist()))
    # a lesion too small for this grid has no voxels here, whatever its fate
    groups = [
        LesionGroup(
            *(tuple({int(r["lesion_id"])} & ids) for ids in seen),
            float(r["volume_before_mm3"]), float(r["volume_after_mm3"]), code[str(r["fate"])],
        )
        for r in fates
    ]  # fmt: skip
    path = bids.anat_path(sub, ses, "dseg", desc="lesionchange")
    bids.write_nifti(out / path, change_map(previous, current, groups), flair.grid.affine, np.uint8)
    bids.write_json(
        bids.sidecar(out / path),
        bids.truth_sidecar(bids.anat_path(sub, ses, "FLAIR"), Description=CHANGE_DESCRIPTION),
    )


def _voxel_mm3(affine: np.ndarray) -> float:
    return abs(float(np.linalg.det(affine[:3, :3])))
