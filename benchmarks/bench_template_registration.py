"""Speed and accuracy of the subject -> template registration (SyN) per schedule.

One phantom session's N4-corrected T1w (the image the participant workflow registers when
there is a T1w) is registered to nilearn's 1 mm MNI ICBM152 2009a T1 with its brain mask,
through the app's own Register interface, once per schedule. Reported per schedule: seconds,
the Dice of the template brain mask carried onto the T1w (inverse transform) against the
phantom's true intracranial mask there, and how far each schedule puts template brain points
from where the first setting (before) puts them (mean and 95th percentile, mm). Times include the
fresh process each registration runs in here (~3.5 s, mostly importing ANTsPy; the app runs
them in its workers) and depend on other load on the machine: compare ratios within one run
(the load average is recorded with each row).

``python benchmarks/bench_template_registration.py [--resolution MM] [--threads N] [--json F]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mdgru_bids.interfaces.ants import (  # noqa: E402
    ApplyTransforms,
    BrainMask,
    N4BiasCorrection,
    Register,
)
from mdgru_bids.interfaces.transforms import ChainLinear  # noqa: E402
from mdgru_bids.lesions.metrics import dice  # noqa: E402
from mdgru_bids.nifti import save_like  # noqa: E402
from mdgru_bids.phantom.acquisition import sample  # noqa: E402
from mdgru_bids.phantom.anatomy import load_anatomy  # noqa: E402
from mdgru_bids.phantom.simulate import acquire_session, make_subject  # noqa: E402
from mdgru_bids.registration import (  # noqa: E402
    TEMPLATE_REGISTRATION_MM,
    TEMPLATE_SYN_ITERATIONS,
)
from mdgru_bids.templates import embedded_template  # noqa: E402

#: name -> linear iterations, shrink factors and sigmas per level (none: SyN starts from the
#: brain mask's affine registration, as the app does); SyN iterations per level (ANTsPy halves
#: the voxel size per level down to the fixed image's); the fixed image's voxel size (None: the
#: template's 1 mm)
SETTINGS = {
    "before: 1 mm, affine and SyN stop at 2 mm": (
        [1000, 500, 250, 0], [8, 4, 2, 1], [3, 2, 1, 0], [100, 70, 50, 0], None),
    "2 mm template, SyN converged at 2 mm": (
        [1000, 500, 250], [4, 2, 1], [2, 1, 0], [100, 70, 50], 2.0),
    "2 mm template, 10 SyN iterations at 2 mm": (
        [1000, 500, 250], [4, 2, 1], [2, 1, 0], [100, 70, 10], 2.0),
    "2 mm template, SyN 100x40x10": (
        [1000, 500, 250], [4, 2, 1], [2, 1, 0], [100, 40, 10], 2.0),
    "2 mm, SyN 100x40x10 from the brain mask's affine": (
        [], [], [], [100, 40, 10], 2.0),
    f"2 mm, SyN {'x'.join(map(str, TEMPLATE_SYN_ITERATIONS))} from the brain mask's affine "
    "(default now)": ([], [], [], TEMPLATE_SYN_ITERATIONS, TEMPLATE_REGISTRATION_MM),
    "2 mm template, SyN stops at 4 mm": (
        [1000, 500, 250], [4, 2, 1], [2, 1, 0], [100, 70, 0], 2.0),
}  # fmt: skip
SEED = 5  # the participant benchmark's phantom


def phantom_t1w(folder: Path, resolution: float) -> tuple[Path, np.ndarray]:
    """A phantom session's T1w, and its true intracranial mask on the T1w grid (GM + WM + CSF
    >= 0.5, as the phantom's truth defines it for the FLAIR)."""
    anatomy = load_anatomy(resolution)
    subject = make_subject(anatomy, SEED, 0, 1)
    t1w = acquire_session(subject, 0, resolution, deface=False).scans["T1w"]
    tissues = {k: anatomy.tissues[k] for k in ("gm", "wm", "csf")}
    got = sample(t1w.grid, t1w.pose, subject.warp.session(0), anatomy, tissues, {})
    path = folder / "T1w.nii.gz"
    nib.save(nib.Nifti1Image(t1w.data, t1w.grid.affine), path)
    return path, sum(got.values()) >= 0.5


def run_setting(
    name: str,
    fixed: Path,
    mask: Path,
    moving: Path,
    brain: np.ndarray,
    folder: Path,
    threads: int,
    start: str,
) -> dict:
    """Register with one schedule (from ``start`` where it has no linear levels); time it and
    score it."""
    linear, shrink, sigmas, syn, resolution = SETTINGS[name]
    work = folder / f"setting{list(SETTINGS).index(name)}"
    work.mkdir()
    load = os.getloadavg()[0]
    began = time.perf_counter()
    out = (
        Register(
            fixed_image=str(fixed),
            moving_image=str(moving),
            fixed_mask=str(mask),
            transform="SyN",
            iterations=list(linear),
            shrink_factors=list(shrink),
            smoothing_sigmas=list(sigmas),
            syn_iterations=list(syn),
            **({"resolution_mm": resolution} if resolution else {}),
            **({} if linear else {"initial_transform": start}),
            num_threads=threads,
        )
        .run(cwd=str(work))
        .outputs
    )
    seconds = time.perf_counter() - began
    carried = (
        ApplyTransforms(
            in_file=str(mask),
            reference_image=str(moving),
            transforms=[out.out_inverse_transform],
        )
        .run(cwd=str(work))
        .outputs.out_file
    )
    return {
        "setting": name,
        "linear_iterations": list(linear),
        "shrink_factors": list(shrink),
        "syn_iterations": list(syn),
        "fixed_resolution_mm": resolution or 1.0,
        "seconds": round(seconds, 1),
        "dice_brain_mask": round(dice(nib.load(carried).get_fdata() >= 0.5, brain), 4),
        "load_average_at_start": round(load, 2),
        "forward": out.out_transform,
    }


def brain_mask_start(image: Path, template: Path, mask: Path, folder: Path, threads: int) -> str:
    """The image -> template affine of the brain mask step, as the app starts SyN from it."""
    work = folder / "brain_mask"
    work.mkdir()
    found = BrainMask(
        in_file=str(image), template_image=str(template), template_mask=str(mask),
        num_threads=threads,
    ).run(cwd=str(work))  # fmt: skip
    chained = ChainLinear(in_transforms=[found.outputs.out_transform], invert=[True])
    return chained.run(cwd=str(work)).outputs.out_transform


def mapped_points(transform: str, points_lps: np.ndarray) -> np.ndarray:
    """Template points (LPS mm, as ITK takes them) carried into the subject's space."""
    import ants
    import pandas as pd

    frame = pd.DataFrame(points_lps, columns=["x", "y", "z"])
    return ants.apply_transforms_to_points(3, frame, [transform]).to_numpy()


def agreement(rows: list[dict], mask: Path) -> None:
    """Add to each row how far its transform moves template brain points from the first's."""
    img = nib.load(mask)
    voxels = np.argwhere(np.asanyarray(img.dataobj)[::3, ::3, ::3] > 0) * 3
    ras = voxels @ img.affine[:3, :3].T + img.affine[:3, 3]
    lps = ras * np.array([-1.0, -1.0, 1.0])
    reference = mapped_points(rows[0]["forward"], lps)
    for row in rows:
        distance = np.linalg.norm(mapped_points(row.pop("forward"), lps) - reference, axis=1)
        row["vs_before_mean_mm"] = round(float(distance.mean()), 3)
        row["vs_before_p95_mm"] = round(float(np.percentile(distance, 95)), 3)


def table(rows: list[dict]) -> str:
    keys = ["setting", "seconds", "dice_brain_mask", "vs_before_mean_mm", "vs_before_p95_mm"]
    keys.append("load_average_at_start")
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    lines = ["  ".join(f"{k:<{widths[k]}}" for k in keys)]
    lines += ["  ".join(f"{r[k]!s:<{widths[k]}}" for k in keys) for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=float, default=1.0, help="phantom voxel size, mm")
    parser.add_argument("--threads", type=int, default=1, help="ITK threads (the app's: 1)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        template = embedded_template(folder / "templates")
        fixed, mask = template.t1w, template.brain_mask
        t1w, brain = phantom_t1w(folder, args.resolution)
        brain_file = save_like(brain, nib.load(t1w), folder / "brain.nii.gz", np.uint8)
        corrected = (
            N4BiasCorrection(in_file=str(t1w), mask_file=str(brain_file), num_threads=args.threads)
            .run(cwd=str(folder))
            .outputs.out_file
        )
        start = brain_mask_start(Path(corrected), fixed, mask, folder, args.threads)
        rows = [
            run_setting(name, fixed, mask, Path(corrected), brain, folder, args.threads, start)
            for name in SETTINGS
        ]
        agreement(rows, mask)
    result = {
        "phantom": {"seed": SEED, "resolution_mm": args.resolution, "image": "N4 T1w"},
        "template": "nilearn MNI ICBM152 2009a T1, 1 mm, brain mask from GM+WM (dilated 2 mm)",
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "rows": rows,
    }
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
