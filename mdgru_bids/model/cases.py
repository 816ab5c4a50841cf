"""Labelled training cases: sessions with a manual lesion mask found in BIDS datasets, and
their prepared subject-space images read back as network inputs or as label anatomies."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from mdgru_bids.collect import Session, check_image, collect_subjects, load_layout
from mdgru_bids.errors import BadDataError, MissingInputError, NothingSelectedError
from mdgru_bids.io_spec import OUTPUTS
from mdgru_bids.model.normalise import network_input
from mdgru_bids.model.training import Case
from mdgru_bids.nifti import same_grid
from mdgru_bids.synth.anatomy import LabelAnatomy, real_anatomy, tissue_labels

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledSession:
    """A session with a manual lesion mask; ``dataset`` names the dataset it came from."""

    dataset: str
    participant: str
    session: Session
    label_file: Path

    @property
    def name(self) -> str:
        return f"{self.dataset}_sub-{self.participant}_{self.session.tag}"


def labelled_sessions(
    bids_dir: Path, labels_dir: Path, participants: list[str] | None, inputs: list[str]
) -> list[LabelledSession]:
    """Every selected session that has a manual mask; one-line errors for what cannot be used."""
    dataset = bids_dir.resolve().name
    found = []
    for subject in collect_subjects(load_layout(bids_dir.resolve()), participants):
        for session in subject.sessions:
            label = label_file(labels_dir, subject.label, session.label)
            if label is None:
                log.info("sub-%s %s has no manual mask; skipped", subject.label, session.tag)
                continue
            if "T1w" in inputs and session.t1w is None:
                raise MissingInputError(
                    f"sub-{subject.label} {session.tag} has no T1w: train with --inputs FLAIR"
                )
            for image in (session.flair, session.t1w if "T1w" in inputs else None, label):
                if image is not None:
                    check_image(image)
            check_same_grid(label, session.flair)
            found.append(LabelledSession(dataset, subject.label, session, label))
    if not found:
        example = OUTPUTS["lesion_mask"].stem()
        raise NothingSelectedError(
            f"no session of {bids_dir} has a mask in {labels_dir} "
            f"(expected sub-X/[ses-Y/]anat/sub-X[_ses-Y]_*{example})"
        )
    return found


def label_file(labels_dir: Path, participant: str, session: str | None) -> Path | None:
    """The session's manual mask in LABELS_DIR, by BIDS path and entities: named as our own
    lesion masks, optionally with more entities before them (``_desc-rater1_...``)."""
    folder = labels_dir / f"sub-{participant}"
    stem = f"sub-{participant}"
    if session is not None:
        folder, stem = folder / f"ses-{session}", f"{stem}_ses-{session}"
    mask = OUTPUTS["lesion_mask"].stem().removesuffix(".gz").removesuffix(".nii")
    matches = sorted((folder / "anat").glob(f"{stem}_*{mask}.nii*"))
    matches += sorted((folder / "anat").glob(f"{stem}_{mask}.nii*"))
    return matches[0] if matches else None


def check_same_grid(label: Path, flair: Path) -> None:
    a, b = nib.load(str(label)), nib.load(str(flair))
    if not same_grid(a, b):
        raise BadDataError(
            f"{label} is not on the grid of {flair.name} (shape {a.shape[:3]} vs {b.shape[:3]} or "
            "another affine): resample the mask onto the FLAIR"
        )


def split(
    sessions: list[LabelledSession], fraction: float, seed: int
) -> tuple[list[LabelledSession], list[LabelledSession]]:
    """Hold out whole participants (all their sessions) for validation."""
    people = sorted({(s.dataset, s.participant) for s in sessions})
    n_val = math.ceil(fraction * len(people)) if fraction > 0 and len(people) > 1 else 0
    held = {people[i] for i in np.random.default_rng(seed).permutation(len(people))[:n_val]}
    val = [s for s in sessions if (s.dataset, s.participant) in held]
    return [s for s in sessions if s not in val], val


def _load_images(
    files: dict[str, str], inputs: list[str]
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Subject-space images in ``inputs`` order, brain mask, lesion label, and the affine."""
    flair = nib.load(files["flair"])
    mask = np.asarray(nib.load(files["mask"]).dataobj) > 0
    images = [flair.get_fdata(dtype=np.float32)]
    if "T1w" in inputs:
        images.append(nib.load(files["t1w"]).get_fdata(dtype=np.float32))
    label = (nib.load(files["label"]).get_fdata(dtype=np.float32) > 0.5) & mask
    return images, mask, label, flair.affine


def load_case(
    item: LabelledSession, files: dict[str, str], inputs: list[str], highpass_mm: float | None
) -> Case:
    """A training case from the subject-space images: normalised as at inference."""
    images, mask, label, affine = _load_images(files, inputs)
    zooms = tuple(float(z) for z in np.linalg.norm(affine[:3, :3], axis=0))
    x = network_input(images, mask, zooms, highpass_mm)
    return Case(item.name, x, label.astype(np.uint8), mask, group=item.dataset)


def load_label_anatomy(
    item: LabelledSession, files: dict[str, str], inputs: list[str]
) -> LabelAnatomy:
    """A labelled case as a label map (Atropos tissue classes + its lesions) and its image."""
    images, mask, label, _ = _load_images(files, inputs)
    labels = tissue_labels(images, mask, label)
    return real_anatomy(item.name, network_input(images, mask, (1.0,) * 3, None), labels, mask)
