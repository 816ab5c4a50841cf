"""Does bfloat16 autocast change the segmentation? (printed figures, never asserted)

Trains the default network briefly on phantom FLAIRs (truth masks as labels), then segments a
held-out phantom with float32 and with bfloat16 autocast and compares: Dice between the two
masks, the largest probability difference, Dice of each against the truth, and time.

Usage: python benchmarks/bench_precision.py [--iterations N] [--resolution MM] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from nibabel.processing import resample_from_to

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mdgru_bids.lesions.metrics import dice  # noqa: E402
from mdgru_bids.model.inference import sliding_window  # noqa: E402
from mdgru_bids.model.network import build_network, default_config  # noqa: E402
from mdgru_bids.model.normalise import network_input  # noqa: E402
from mdgru_bids.model.training import Case, TrainConfig, train  # noqa: E402
from mdgru_bids.phantom import make_dataset  # noqa: E402


def load_case(root: Path, sub: str, ses: str, spacing: float) -> Case:
    """A phantom session's FLAIR and truth, resampled to an isotropic grid."""
    anat = root / f"sub-{sub}" / f"ses-{ses}" / "anat"
    truth = root / "derivatives" / "truth" / f"sub-{sub}" / f"ses-{ses}" / "anat"
    flair = nib.load(anat / f"sub-{sub}_ses-{ses}_FLAIR.nii.gz")
    shape = np.ceil(np.array(flair.shape) * flair.header.get_zooms()[:3] / spacing).astype(int)
    affine = flair.affine @ np.diag([*(spacing / np.array(flair.header.get_zooms()[:3])), 1])
    target = (tuple(shape), affine)
    image = resample_from_to(flair, target, order=1).get_fdata(dtype=np.float32)
    stem = f"sub-{sub}_ses-{ses}"
    mask = resample_from_to(nib.load(truth / f"{stem}_desc-brain_mask.nii.gz"), target, order=0)
    label = resample_from_to(nib.load(truth / f"{stem}_label-lesion_mask.nii.gz"), target, order=0)
    brain = np.asarray(mask.dataobj) > 0
    x = network_input([image], brain, (spacing,) * 3, highpass_mm=None)
    return Case(stem, x, (np.asarray(label.dataobj) > 0).astype(np.uint8), brain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--resolution", type=float, default=1.5)
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_dataset(
            Path(tmp) / "ph", participants=4, sessions=1, seed=7, resolution=args.resolution
        )
        cases = [load_case(root, f"{i:02d}", "01", args.resolution) for i in range(1, 5)]
    train_cases, test_case = cases[:3], cases[3]
    net = build_network(default_config(in_channels=1))
    cfg = TrainConfig(
        iterations=args.iterations, batch_size=2, patch_size=(args.patch,) * 3, learning_rate=2e-3
    )
    start = time.perf_counter()
    history = train(net, train_cases, cfg, progress=False)
    train_s = time.perf_counter() - start
    patch, overlap = (args.patch * 2,) * 3, (args.patch // 2,) * 3
    out = {
        "iterations": args.iterations,
        "train_seconds": train_s,
        "loss_first10": float(np.mean(history.loss[:10])),
        "loss_last10": float(np.mean(history.loss[-10:])),
    }
    masks = {}
    for precision in ("float32", "bfloat16"):
        start = time.perf_counter()
        prob = sliding_window(
            net, test_case.image, test_case.mask, patch, overlap, torch.device("cpu"), precision
        )
        out[f"{precision}_seconds"] = time.perf_counter() - start
        masks[precision] = prob
        out[f"{precision}_dice_vs_truth"] = dice(prob > 0.5, test_case.label)
    out["dice_float32_vs_bfloat16"] = dice(masks["float32"] > 0.5, masks["bfloat16"] > 0.5)
    out["max_abs_probability_difference"] = float(
        np.abs(masks["float32"] - masks["bfloat16"]).max()
    )
    out["lesion_voxels_float32"] = int((masks["float32"] > 0.5).sum())
    out["lesion_voxels_truth"] = int(test_case.label.sum())
    for key, value in out.items():
        print(f"{key:34} {value:.4f}" if isinstance(value, float) else f"{key:34} {value}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
