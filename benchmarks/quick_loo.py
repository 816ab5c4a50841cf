"""Short-ablation scores: models segment the shared real cases directly (printed, never asserted).

The Lesjak et al. 2017 cross-sectional cases (CC-BY) are published N4-corrected,
skull-stripped and in MNI space at 1 mm, so a model can segment them as they are: a minute
per case instead of the ten a participant run takes. The figures are for comparing training
variants with each other in one run; the pipeline figures (``eval_models.py``) are the ones to
report. Each case is scored by the model given for it (``LABEL=MODEL``: a model trained
without that case), beside the robust-z baseline at ``--baseline-threshold``. With
``--figures``, each case gets the outline figure of ``eval_models.py`` and close-ups of the
model's largest false-positive lesions and most-missed true lesions, to see what goes wrong.

Usage: python benchmarks/quick_loo.py --cross-sectional DIR c07=A.safetensors c26=B.safetensors
       [--threshold 0.5] [--baseline-threshold 2.0] [--figures DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval_models import baseline_mask, case_scores, outline_figure, robust_z  # noqa: E402

from mdgru_bids.lesions.components import MIN_LESION_MM3, label_lesions, min_voxels  # noqa: E402
from mdgru_bids.model.files import load_model  # noqa: E402
from mdgru_bids.model.inference import segment  # noqa: E402

KEYS = ("dice", "lesion_f1_msseg", "lesion_recall_msseg", "lesion_precision_msseg",
        "recall_10-30mm3", "recall_30-100mm3", "recall_100-infmm3", "load_error_ml")  # fmt: skip


def worst_errors(
    predicted: np.ndarray, truth: np.ndarray, most: int = 6
) -> list[tuple[str, tuple[int, ...], int]]:
    """(kind, centre voxel, voxels wrong) of the largest predicted lesions touching no truth
    (FP) and the true lesions with the most voxels missed (FN)."""
    found = []
    for kind, mask, other in (("FP", predicted, truth), ("FN", truth, predicted)):
        labels, count = label_lesions(mask, 1)
        sizes = ndimage.sum_labels(mask, labels, np.arange(1, count + 1))
        hits = ndimage.sum_labels(other & mask, labels, np.arange(1, count + 1))
        centres = ndimage.center_of_mass(mask, labels, np.arange(1, count + 1))
        missed = sizes - hits if kind == "FN" else np.where(hits == 0, sizes, 0)
        for k in np.argsort(-missed)[:most]:
            if missed[k] > 0:
                found.append((kind, tuple(round(float(c)) for c in centres[k]), int(missed[k])))
    return found


def error_crops(flair: np.ndarray, truth: np.ndarray, predicted: np.ndarray, path: Path,
                title: str) -> None:  # fmt: skip
    """Axial 40-voxel close-ups of worst_errors: truth (green) and model (red) outlines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    errors = worst_errors(predicted, truth)
    top = np.percentile(flair[flair > 0], 99.7)
    fig, axes = plt.subplots(2, 6, figsize=(18, 6.8))
    for ax in axes.flat:
        ax.axis("off")
    for ax, (kind, (x, y, z), size) in zip(axes.flat, errors, strict=False):
        box = (slice(max(x - 20, 0), x + 20), slice(max(y - 20, 0), y + 20), z)
        ax.imshow(flair[box].T, cmap="gray", origin="lower", vmin=0, vmax=top)
        for mask, colour in ((truth, "lime"), (predicted, "red")):
            if mask[box].any():
                ax.contour(mask[box].T, [0.5], colors=colour, linewidths=1)
        what = "voxels" if kind == "FP" else "voxels missed"
        ax.set_title(f"{kind} {size} {what} at {(x, y, z)}", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def score_case(data: Path, label: str, model_path: Path, threshold: float, base_z: float,
               figures: Path | None) -> dict:  # fmt: skip
    """The model's and the baseline's scores on one case, as published."""
    sub = f"sub-{label}"
    flair_img = nib.load(data / sub / "anat" / f"{sub}_FLAIR.nii.gz")
    flair = np.asarray(flair_img.dataobj, dtype=np.float32)
    truth_path = data / "derivatives" / "manual" / sub / "anat" / f"{sub}_label-lesion_mask.nii.gz"
    truth = np.asarray(nib.load(truth_path).dataobj) > 0
    brain = flair > 0  # skull-stripped by the database's authors
    zooms = tuple(float(z) for z in flair_img.header.get_zooms()[:3])
    voxel = float(np.prod(zooms))
    fewest = min_voxels(MIN_LESION_MM3, voxel)
    model = load_model(model_path)
    start = time.perf_counter()
    prob = segment(model, [flair], brain, zooms)
    seconds = time.perf_counter() - start
    predicted = baseline_mask(prob, threshold, fewest)
    base = baseline_mask(robust_z(flair, brain), base_z, fewest)
    if figures is not None:
        title = (f"{sub} as published: truth (green), {model_path.stem} (red), "
                 f"baseline z {base_z:g} (cyan)")  # fmt: skip
        outline_figure(flair, truth, predicted, base,
                       figures / f"quick_{model_path.stem}_{sub}.png", title)  # fmt: skip
        error_crops(flair, truth, predicted, figures / f"errors_{model_path.stem}_{sub}.png",
                    f"{sub}: {model_path.stem}, largest false positives and misses")  # fmt: skip
    return {"model": model_path.name, "segment_seconds": round(seconds, 1),
            "model_scores": case_scores(predicted, truth, voxel),
            "baseline_scores": case_scores(base, truth, voxel)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cross-sectional", type=Path, required=True)
    parser.add_argument("case_models", nargs="+", metavar="LABEL=MODEL")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--baseline-threshold", type=float, default=2.0)
    parser.add_argument("--figures", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    results = {}
    for item in args.case_models:
        label, model = item.split("=", 1)
        row = score_case(args.cross_sectional, label, Path(model), args.threshold,
                         args.baseline_threshold, args.figures)  # fmt: skip
        results[item] = row  # the path as given: two models may share a file name
        for who in ("model", "baseline"):
            values = row[f"{who}_scores"]
            name = Path(model).stem if who == "model" else "baseline"
            print(f"{label} {name[:28]:>28} " + " ".join(f"{k}={values[k]:.3f}" for k in KEYS),
                  flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
