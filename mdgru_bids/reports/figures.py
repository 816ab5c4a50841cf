"""Report figures (nilearn mosaics saved as SVG), each written atomically like every output,
and drawn on several processes where a report has several (:func:`draw`)."""

from __future__ import annotations

import multiprocessing
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from nilearn import plotting
from nireports.reportlets.utils import cuts_from_bbox

from mdgru_bids.atomic import replacing
from mdgru_bids.lesions.change import CHANGE_LABELS
from mdgru_bids.processes import start_one_thread_child

CUTS = 6  # slices per direction in a mosaic
MOSAIC_SIZE = (12.0, 6.4)  # inches: three rows (axial, coronal, sagittal)
LESION_COLOUR = "#ff3b3b"
EDGE_COLOUR = "#ff3b3b"
#: Change labels (DESIGN.md) in colour-blind-safe colours (Okabe & Ito); stable stays quiet.
CHANGE_COLOURS = {
    1: "#9e9ac8",  # stable
    2: "#d55e00",  # new
    3: "#f0e442",  # enlarging
    4: "#56b4e9",  # shrinking
    5: "#009e73",  # resolved
}


def save_figure(figure: Figure, path: Path) -> Path:
    """Write a figure in the format its suffix names, atomically (temp file + rename)."""
    with replacing(path) as tmp:
        figure.savefig(tmp, format=path.suffix.lstrip("."), facecolor=figure.get_facecolor())
    return path


def _anat_mosaic(
    background: nib.Nifti1Image,
    brain_mask: nib.Nifti1Image,
    axes: tuple[float, float, float, float] | None = None,
) -> tuple[Figure, object]:
    """A black figure with the background image in three rows of slices through the brain;
    returns the figure and nilearn's display to draw on."""
    figure = Figure(figsize=MOSAIC_SIZE, facecolor="black")
    display = plotting.plot_anat(
        background, display_mode="mosaic", cut_coords=cuts(brain_mask), figure=figure,
        axes=axes, black_bg=True, colorbar=False, dim=-0.3,
    )  # fmt: skip
    return figure, display


def cuts(brain_mask: nib.Nifti1Image) -> dict[str, list[float]]:
    """Evenly spaced slices through the brain, per direction (x, y, z)."""
    # cuts_from_bbox reads voxel axes as x, y, z: give it a RAS-ordered image
    return cuts_from_bbox(nib.as_closest_canonical(brain_mask), cuts=CUTS)


def lesion_mosaic(flair: Path, mask: Path, brain_mask: Path, path: Path) -> Path:
    """The FLAIR with lesion outlines."""
    figure, display = _anat_mosaic(nib.load(flair), nib.load(brain_mask))
    lesions = nib.load(mask)
    if np.any(np.asanyarray(lesions.dataobj)):
        display.add_contours(lesions, levels=[0.5], colors=[LESION_COLOUR], linewidths=0.8)
    return save_figure(figure, path)


def change_mosaic(flair: Path, dseg: Path, brain_mask: Path, path: Path) -> Path:
    """The change labels over the later session's FLAIR, with a legend."""
    figure, display = _anat_mosaic(
        nib.load(flair), nib.load(brain_mask), axes=(0.0, 0.07, 1.0, 0.93)
    )  # legend below
    labels = nib.load(dseg)
    if np.any(np.asanyarray(labels.dataobj)):
        colours = [CHANGE_COLOURS[label] for label in CHANGE_LABELS]
        display.add_overlay(
            labels, cmap=ListedColormap(colours), vmin=0.5, vmax=len(colours) + 0.5,
            resampling_interpolation="nearest",
        )  # fmt: skip
    handles = [
        Patch(color=CHANGE_COLOURS[label], label=name) for label, name in CHANGE_LABELS.items()
    ]
    figure.legend(
        handles=handles, loc="lower center", ncol=len(handles), frameon=False, labelcolor="white"
    )
    return save_figure(figure, path)


def edges_mosaic(
    background: Path,
    moving: Path,
    transforms: Sequence[Path],
    invert: Sequence[bool],
    brain_mask: Path,
    path: Path,
) -> Path:
    """Edges of ``moving``, carried onto the background's grid through ANTs transforms (ANTs
    order), over the background: a registration check (edges follow the anatomy)."""
    figure, display = _anat_mosaic(nib.load(background), nib.load(brain_mask))
    display.add_edges(_resample(moving, background, transforms, invert), color=EDGE_COLOUR)
    return save_figure(figure, path)


def _resample(
    in_file: Path, reference: Path, transforms: Sequence[Path], invert: Sequence[bool]
) -> nib.Nifti1Image:
    """``in_file`` on the reference grid through ANTs transforms (ANTs order), in memory."""
    from mdgru_bids.interfaces.ants import ApplyTransforms

    with tempfile.TemporaryDirectory(prefix="mdgru-report-") as tmp:
        result = ApplyTransforms(
            in_file=str(in_file),
            reference_image=str(reference),
            transforms=[str(t) for t in transforms],
            invert_transform_flags=list(invert),
        ).run(cwd=tmp)
        img = nib.load(result.outputs.out_file, mmap=False)  # the folder goes away
        return nib.Nifti1Image(img.get_fdata(dtype=np.float32), img.affine, img.header)


def draw(jobs: Sequence[Callable[[], Path]], nprocs: int) -> list[Path]:
    """Draw figures (partials of this module's functions, which pickle) on up to ``nprocs``
    processes: a two-session report's five took 12 s one after another, at the end of the
    participant's run. Fresh processes (forkserver) rather than forks of this one, whose
    threads could hold locks the fork would copy."""
    if nprocs < 2 or len(jobs) < 2:
        return [job() for job in jobs]
    with ProcessPoolExecutor(
        max_workers=min(nprocs, len(jobs)),
        mp_context=multiprocessing.get_context("forkserver"),
        initializer=start_one_thread_child,
    ) as pool:
        return list(pool.map(_draw, jobs))


def _draw(job: Callable[[], Path]) -> Path:
    return job()
