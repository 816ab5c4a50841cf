"""Test-time augmentation: accuracy gained against time taken, per real case (printed).

Each case's preprocessed FLAIR and brain mask, as ``mdgru-bids participant`` published them
(e.g. an output folder of benchmarks/eval_models.py), segmented by the model without and with
``--tta`` (the image and its three mirror images), thresholded as the workflow does, and
scored against the case's manual mask: voxel Dice, lesion F1 (MSSEG rule), lesion-load error,
and the network's seconds each way, measured in the same run.

Usage: python benchmarks/bench_tta.py --model M.safetensors --outputs OUT_DIR
       --truth DATASET/derivatives/manual [--threads 2] [--json FILE]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mdgru_bids.io_spec import OUTPUTS  # noqa: E402
from mdgru_bids.lesions.components import threshold_mask  # noqa: E402
from mdgru_bids.lesions.metrics import DetectionRule, dice, lesion_detection  # noqa: E402
from mdgru_bids.model.files import load_model  # noqa: E402
from mdgru_bids.model.inference import segment  # noqa: E402


def case_rows(model, flair: Path, truth: Path) -> dict:
    """Scores and seconds without and with TTA for one session."""
    stem = str(flair).removesuffix(OUTPUTS["preproc_flair"].stem())
    img = nib.load(flair)
    brain = np.asarray(nib.load(stem + OUTPUTS["brain_mask"].stem()).dataobj) > 0
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    voxel = float(np.prod(zooms))
    expected = np.asarray(nib.load(truth).dataobj) > 0
    image = img.get_fdata(dtype=np.float32)
    row = {}
    for tta in (False, True):
        start = time.perf_counter()
        prob = segment(model, [image], brain, zooms, tta=tta)
        seconds = time.perf_counter() - start
        mask = threshold_mask(prob, model.card["threshold"], model.card["min_lesion_mm3"], zooms)
        found = lesion_detection(mask, expected, voxel, DetectionRule())
        row["tta" if tta else "plain"] = {
            "seconds": round(seconds, 1),
            "dice": dice(mask, expected),
            "lesion_f1_msseg": found.f1,
            "load_error_ml": float(mask.sum() - expected.sum()) * voxel / 1000,
        }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--outputs", type=Path, required=True)
    parser.add_argument("--truth", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    results = {}
    for flair in sorted(args.outputs.glob(f"sub-*/**/*{OUTPUTS['preproc_flair'].stem()}")):
        image = flair.name.removesuffix("_" + OUTPUTS["preproc_flair"].stem())
        sub = image.split("_")[0]
        (truth,) = (args.truth / sub).rglob(f"{image}_*lesion_mask.nii.gz")
        results[image] = case_rows(model, flair, truth)
        for way, row in results[image].items():
            print(image, f"{way:>5}", " ".join(f"{k}={v:.3f}" for k, v in row.items()))
    ways = ("plain", "tta")
    mean = {w: {k: float(np.mean([r[w][k] for r in results.values()]))
                for k in ("seconds", "dice", "lesion_f1_msseg")} for w in ways}  # fmt: skip
    print("mean", json.dumps(mean))
    if args.json:
        out = {"model": args.model.name, "cases": results, "mean": mean}
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
