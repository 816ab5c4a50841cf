"""A no-change rescan of any session: the same head re-acquired, nothing about its lesions changed.

Repeatability is what a longitudinal tool is judged by, and a rescan pair measures it with no
expert in the loop: whatever the app reports as change between the two sessions is error.
The second session moves the head rigidly, samples a new grid (optionally thick slices with a
boxcar slice profile), multiplies a smooth bias field and adds Rician noise; the first session
is the source image as it is. The truth (on each session's own grid) says nothing changed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from mdgru_bids import __version__
from mdgru_bids.phantom import bids
from mdgru_bids.phantom.acquisition import Grid, bias_field, rician, subsamples
from mdgru_bids.phantom.dataset import check_target, staging
from mdgru_bids.transforms import write_linear

CHUNK_VOXELS = 2_000_000  # output voxels sampled at once: bounds memory at 1 mm
RESCAN_DAYS = 14
NO_CHANGE = (
    "No-change rescan: every lesion voxel is stable (1); nothing new, enlarging, shrinking or "
    "resolved"
)
RAW_DESCRIPTION = {
    "Name": "mdgru-bids no-change rescan pair",
    "BIDSVersion": bids.BIDS_VERSION,
    "DatasetType": "raw",
    "GeneratedBy": [{"Name": bids.GENERATOR, "Version": __version__}],
}
TRUTH_DESCRIPTION = {
    "Name": "Truth of the no-change rescan pair",
    "BIDSVersion": bids.BIDS_VERSION,
    "DatasetType": "derivative",
    "GeneratedBy": [{"Name": bids.GENERATOR, "Version": __version__}],
}
README = """# No-change rescan pair

Made by `mdgru-bids-phantom --rescan-of` ({settings}).

ses-01 is the source image, byte for byte. ses-02 is the same head re-acquired {days} days
later with nothing about its lesions changed: a rigid head motion, a new grid (thick slices
average the source across their extent), a smooth multiplicative bias field and Rician noise.
Any change a tool reports between the sessions is an error of the tool. The truth is in
`derivatives/truth`.
""".replace("{days}", str(RESCAN_DAYS))
TRUTH_README = """# Truth of the no-change rescan pair

Made by `mdgru-bids-phantom --rescan-of` ({settings}).

- `from-FLAIR_to-subject_mode-image_xfm.txt`: the true rigid transform of each session's
  FLAIR into subject space, which is ses-01's scanner space (identity for ses-01);
- with a lesion mask given: `label-lesion_mask` (partial volume >= 0.5) and
  `label-lesion_probseg` (partial volume) on each session's FLAIR grid, the ses-02
  `desc-lesionchange_dseg` (every lesion stable: nothing changed), and
  `sub-*_desc-rescan_table.tsv` with both sessions' lesion volumes.
"""
RESCAN_DICTIONARY = {
    "session_id": {"Description": "Session"},
    "lesion_volume_mm3": {
        "Description": "Sum of the lesion partial volume times the voxel volume: the same "
        "in both sessions up to sampling",
        "Units": "mm^3",
    },
    "mask_volume_mm3": {
        "Description": "Voxels of partial volume >= 0.5 times the voxel volume: changes with "
        "the grid although no lesion changed",
        "Units": "mm^3",
    },
}


@dataclass(frozen=True)
class Rescan:
    """How the second acquisition differs from the first (defaults: a routine rescan)."""

    max_degrees: float = 5.0  # head rotation, about a random axis
    max_mm: float = 5.0  # head translation, in a random direction
    voxel_mm: float | None = None  # in-plane voxel size of the new grid; None: the source's finest
    slice_mm: float | None = None  # slice thickness (boxcar); None: isotropic voxel_mm
    bias: float = 0.2  # the bias field stays within 1 ± bias
    snr: float = 20.0  # brain median over the Rician sigma


@dataclass(frozen=True, eq=False)
class Acquired:
    """The second session: its image and (if given) lesion truth on its own grid."""

    image: np.ndarray  # float32
    affine: np.ndarray  # voxel -> scanner mm
    pose: np.ndarray  # first session's scanner mm -> second session's scanner mm (rigid)
    lesion_fraction: np.ndarray | None  # lesion partial volume of the source mask


def draw_pose(rng: np.random.Generator, centre: np.ndarray, rescan: Rescan) -> np.ndarray:
    """A rigid head motion about ``centre``: angle and shift uniform up to the maxima, in
    random directions."""
    axis, shift = rng.normal(size=(2, 3))
    angle = np.deg2rad(rng.uniform(0.0, rescan.max_degrees))
    rot = Rotation.from_rotvec(angle * axis / np.linalg.norm(axis)).as_matrix()
    pose = np.eye(4)
    pose[:3, :3] = rot
    translation = rng.uniform(0.0, rescan.max_mm) * shift / np.linalg.norm(shift)
    pose[:3, 3] = centre + translation - rot @ centre
    return pose


def new_grid(
    rng: np.random.Generator, shape: tuple[int, ...], affine: np.ndarray, rescan: Rescan
) -> tuple[tuple[int, int, int], np.ndarray]:
    """A grid with the source's orientation and field of view, the rescan's voxel sizes and a
    random sub-voxel offset (thick slices: see slice_axis)."""
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    directions = affine[:3, :3] / zooms
    voxel = np.full(3, rescan.voxel_mm or float(zooms.min()))
    if rescan.slice_mm is not None:
        voxel[slice_axis(zooms, directions)] = rescan.slice_mm
    fov = zooms * np.array(shape[:3])
    new_shape = tuple(int(n) for n in np.maximum(np.round(fov / voxel), 1))
    out = np.eye(4)
    out[:3, :3] = directions * voxel
    offset = (rng.uniform(0.0, 1.0, 3) - 0.5) * voxel
    out[:3, 3] = affine[:3, 3] + directions @ (offset + (voxel - zooms) / 2)
    return new_shape, out


def slice_axis(zooms: np.ndarray, directions: np.ndarray) -> int:
    """The voxel axis thick slices stack along: the source's coarsest, or for isotropic
    voxels the one closest to inferior-superior (axial slices, as FLAIR is usually read)."""
    if np.ptp(zooms) > 1e-3:
        return int(np.argmax(zooms))
    return int(np.argmax(np.abs(directions[2])))


def bounded_bias_field(rng: np.random.Generator, shape: tuple[int, ...], bias: float) -> np.ndarray:
    """The phantom's smooth bias field (acquisition.bias_field), its log scaled so the field
    just reaches 1 ± bias: a rescan's bias of a known size."""
    log = np.log(bias_field(rng, shape))
    span = float(np.abs(log).max()) or 1.0
    return np.exp(log * (np.log1p(bias) / span)).astype(np.float32)


def resample(
    maps: list[np.ndarray],
    source_affine: np.ndarray,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    pose: np.ndarray,
    source_step_mm: float,
) -> list[np.ndarray]:
    """Maps of the first session read through the second acquisition: each new voxel is the
    mean of linear samples spaced ``source_step_mm`` across its extent (a boxcar profile)."""
    offsets = subsamples(Grid(shape, affine), source_step_mm)
    to_source = np.linalg.inv(source_affine) @ np.linalg.inv(pose) @ affine
    out = [np.zeros(shape, np.float32) for _ in maps]
    nx, ny, nz = shape
    step = max(1, CHUNK_VOXELS // (nx * ny))
    for k0 in range(0, nz, step):
        ks = np.arange(k0, min(nz, k0 + step))
        ijk = np.stack(np.meshgrid(np.arange(nx), np.arange(ny), ks, indexing="ij"))
        ijk = ijk.reshape(3, -1).astype(np.float64)
        for offset in offsets:
            vox = to_source[:3, :3] @ (ijk + offset[:, None]) + to_source[:3, 3:]
            for src, dst in zip(maps, out, strict=True):
                sampled = ndi.map_coordinates(src, vox, order=1, mode="constant")
                dst[:, :, k0 : k0 + len(ks)] += sampled.reshape(nx, ny, -1)
    return [m / len(offsets) for m in out]


def reacquire(
    image: nib.Nifti1Image,
    rng: np.random.Generator,
    rescan: Rescan = Rescan(),
    lesion_mask: np.ndarray | None = None,
) -> Acquired:
    """The session re-acquired: moved head, new grid, bias field, Rician noise."""
    data = np.asarray(image.dataobj, dtype=np.float32)
    affine = image.affine
    head = data > 0.1 * np.percentile(data, 99)
    centre = affine[:3, :3] @ np.argwhere(head).mean(axis=0) + affine[:3, 3]
    pose = draw_pose(rng, centre, rescan)
    shape, grid = new_grid(rng, data.shape, affine, rescan)
    source_step = float(np.linalg.norm(affine[:3, :3], axis=0).min())
    maps = [data] if lesion_mask is None else [data, lesion_mask.astype(np.float32)]
    sampled = resample(maps, affine, shape, grid, pose, source_step)
    moved = np.clip(sampled[0], 0.0, None) * bounded_bias_field(rng, shape, rescan.bias)
    brain = moved > 0.1 * np.percentile(moved, 99)
    sigma = float(np.median(moved[brain])) / rescan.snr if brain.any() else 0.0
    noisy = rician(rng, moved, np.float32(sigma)) if sigma > 0 else moved
    fraction = sampled[1] if lesion_mask is not None else None
    return Acquired(noisy.astype(np.float32), grid, pose, fraction)


def make_rescan_dataset(
    out_dir: str | os.PathLike[str],
    flair: Path,
    t1w: Path | None = None,
    lesion_mask: Path | None = None,
    seed: int = 0,
    rescan: Rescan = Rescan(),
    overwrite: bool = False,
) -> Path:
    """Write a two-session BIDS dataset: ses-01 the source images unchanged, ses-02 their
    no-change rescan (the T1w moved with the same head), and the truth in
    ``derivatives/truth``. Appears at ``out_dir`` only once complete."""
    out = Path(out_dir).expanduser().absolute()
    check_target(out, overwrite)
    images = {"FLAIR": nib.load(flair)} | ({"T1w": nib.load(t1w)} if t1w else {})
    mask = None
    if lesion_mask is not None:
        mask_img = nib.load(lesion_mask)
        if mask_img.shape[:3] != images["FLAIR"].shape[:3]:
            raise ValueError(f"{lesion_mask} is not on the grid of {flair}: give the FLAIR's mask")
        mask = np.asarray(mask_img.dataobj) > 0
    sub = _participant(flair)
    rng = np.random.default_rng(seed)
    with staging(out) as root:
        acquired = reacquire(images["FLAIR"], rng, rescan, mask)
        scans = {"FLAIR": acquired}
        if "T1w" in images:
            scans["T1w"] = _reacquire_with(images["T1w"], rng, acquired.pose, rescan.voxel_mm)
        _write(root, sub, {"FLAIR": flair, "T1w": t1w}, scans, mask, images, seed, rescan)
    return out


def _reacquire_with(
    image: nib.Nifti1Image, rng: np.random.Generator, pose: np.ndarray, voxel_mm: float | None
) -> Acquired:
    """A second image of the session (T1w): the same head pose, its own isotropic grid."""
    data = np.asarray(image.dataobj, dtype=np.float32)
    shape, grid = new_grid(rng, data.shape, image.affine, Rescan(voxel_mm=voxel_mm))
    step = float(np.linalg.norm(image.affine[:3, :3], axis=0).min())
    (sampled,) = resample([data], image.affine, shape, grid, pose, step)
    return Acquired(np.clip(sampled, 0.0, None), grid, pose, None)


def _participant(flair: Path) -> str:
    """The source's participant label (BIDS ``sub-``), or 01."""
    found = re.search(r"sub-([a-zA-Z0-9]+)", flair.name)
    return found.group(1) if found else "01"


def _write(
    root: Path,
    sub: str,
    sources: dict[str, Path | None],
    scans: dict[str, Acquired],
    mask: np.ndarray | None,
    images: dict[str, nib.Nifti1Image],
    seed: int,
    rescan: Rescan,
) -> None:
    """Raw sessions, truth maps, transforms and the volume table."""
    settings = (
        f"seed {seed}, rescan of {sources['FLAIR'].name}: up to {rescan.max_degrees:g} deg and "
        f"{rescan.max_mm:g} mm head motion, "
        + (
            f"{rescan.voxel_mm:g} mm voxels"
            if rescan.voxel_mm
            else "the source's finest voxel size"
        )
        + (f" with {rescan.slice_mm:g} mm slices" if rescan.slice_mm else "")
        + f", bias within ±{rescan.bias:.0%}, Rician noise at SNR {rescan.snr:g}"
    )
    bids.write_json(root / "dataset_description.json", RAW_DESCRIPTION)
    (root / "README.md").write_text(README.format(settings=settings))
    bids.write_tsv(
        root / "participants.tsv", [{"participant_id": f"sub-{sub}"}], ["participant_id"]
    )
    first = dt.datetime(2020, 1, 6, 9, 0)
    times = [first, first + dt.timedelta(days=RESCAN_DAYS)]
    bids.write_tsv(
        root / f"sub-{sub}" / f"sub-{sub}_sessions.tsv",
        [{"session_id": f"ses-{s:02d}", "acq_time": t.isoformat()} for s, t in enumerate(times, 1)],
        ["session_id", "acq_time"],
    )  # fmt: skip
    for modality, scan in scans.items():
        source = sources[modality]
        first_path = root / bids.anat_path(sub, "01", modality)
        first_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, first_path)
        second = root / bids.anat_path(sub, "02", modality)
        bids.write_nifti(second, scan.image, scan.affine, np.float32)
        sidecar = _source_sidecar(source)
        bids.write_json(bids.sidecar(first_path), sidecar)
        zooms = np.linalg.norm(scan.affine[:3, :3], axis=0)
        bids.write_json(bids.sidecar(second), sidecar | {"SliceThickness": float(zooms.max())})
    truth = root / bids.TRUTH_DIR
    bids.write_json(truth / "dataset_description.json", TRUTH_DESCRIPTION)
    (truth / ".bidsignore").write_text(bids.TRUTH_BIDSIGNORE)
    (truth / "README.md").write_text(TRUTH_README.format(settings=settings))
    flair = scans["FLAIR"]
    poses = {"01": np.eye(4), "02": np.linalg.inv(flair.pose)}
    for ses, to_subject in poses.items():
        xfm = truth / bids.anat_path(sub, ses, "xfm", ".txt", **bids.FLAIR_TO_SUBJECT)
        xfm.parent.mkdir(parents=True, exist_ok=True)
        write_linear(to_subject, xfm)
    if mask is None:
        return
    affine = {"01": images["FLAIR"].affine, "02": flair.affine}
    masks = {"01": mask, "02": flair.lesion_fraction >= 0.5}
    fractions = {"01": mask.astype(np.float32), "02": flair.lesion_fraction}
    rows = []
    for ses in poses:
        source = bids.anat_path(sub, ses, "FLAIR")
        for path, data, dtype, fields in (
            (bids.anat_path(sub, ses, "mask", label="lesion"), masks[ses], np.uint8,
             {"Type": "Lesion", "Description": "Lesion voxels: lesion partial volume >= 0.5"}),
            (bids.anat_path(sub, ses, "probseg", label="lesion"), fractions[ses], np.float32,
             {"Description": "Lesion partial volume of the source mask on this grid"}),
        ):  # fmt: skip
            bids.write_nifti(truth / path, data, affine[ses], dtype)
            bids.write_json(bids.sidecar(truth / path), bids.truth_sidecar(source, **fields))
        voxel = abs(float(np.linalg.det(affine[ses][:3, :3])))
        rows.append({
            "session_id": f"ses-{ses}",
            "lesion_volume_mm3": round(float(fractions[ses].sum()) * voxel, 3),
            "mask_volume_mm3": round(float(masks[ses].sum()) * voxel, 3),
        })  # fmt: skip
    change = bids.anat_path(sub, "02", "dseg", desc="lesionchange")
    bids.write_nifti(truth / change, masks["02"], flair.affine, np.uint8)
    bids.write_json(
        bids.sidecar(truth / change),
        bids.truth_sidecar(bids.anat_path(sub, "02", "FLAIR"), Description=NO_CHANGE),
    )
    bids.write_tsv(truth / f"sub-{sub}" / f"sub-{sub}_desc-rescan_table.tsv", rows,
                   list(rows[0]))  # fmt: skip
    bids.write_json(truth / "desc-rescan_table.json", RESCAN_DICTIONARY)


def _source_sidecar(image: Path) -> dict:
    """The source image's own sidecar where it has one (a rescan keeps its sequence)."""
    name = image.name.removesuffix(".gz").removesuffix(".nii") + ".json"
    path = image.with_name(name)
    return json.loads(path.read_text()) if path.is_file() else {}
