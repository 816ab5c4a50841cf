"""Does bfloat16 autocast change the segmentation? (printed figures, never asserted)

Trains the default network briefly on phantom FLAIRs (truth masks as labels), then segments a
held-out phantom with float32 and with bfloat16 autocast and compares: Dice between the two
masks, the largest probability difference, Dice of each against the truth, and time.
With ``--model`` a trained FLAIR-only model segments the given preprocessed FLAIRs instead
(resampled to 1 mm, as in subject space), e.g. a participant run's ``desc-preproc_FLAIR``.

Usage: python benchmarks/bench_precision.py [--iterations N] [--resolution MM] [--json FILE]
       python benchmarks/bench_precision.py --model M --image FLAIR BRAIN_MASK [--image ...]
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

from mdgru_bids.lesions.components import threshold_mask  # noqa: E402
from mdgru_bids.lesions.metrics import dice  # noqa: E402
from mdgru_bids.model.files import load_model  # noqa: E402
from mdgru_bids.model.inference import card_tiling, sliding_window  # noqa: E402
from mdgru_bids.model.network import build_network, default_config  # noqa: E402
from mdgru_bids.model.normalise import network_input  # noqa: E402
from mdgru_bids.model.training import Case, TrainConfig, train  # noqa: E402
from mdgru_bids.phantom import make_dataset  # noqa: E402


def isotropic_input(
    flair_path: Path, mask_path: Path, spacing: float
) -> tuple[tuple, np.ndarray, np.ndarray]:
    """A FLAIR as network input and its brain mask, resampled to an isotropic grid (the grid
    is returned too, for other images of the session)."""
    flair = nib.load(flair_path)
    zooms = np.array(flair.header.get_zooms()[:3])
    shape = np.ceil(np.array(flair.shape) * zooms / spacing).astype(int)
    target = (tuple(shape), flair.affine @ np.diag([*(spacing / zooms), 1]))
    image = resample_from_to(flair, target, order=1).get_fdata(dtype=np.float32)
    brain = np.asarray(resample_from_to(nib.load(mask_path), target, order=0).dataobj) > 0
    return target, network_input([image], brain, (spacing,) * 3, highpass_mm=None), brain


def load_case(root: Path, sub: str, ses: str, spacing: float) -> Case:
    """A phantom session's FLAIR and truth, resampled to an isotropic grid."""
    anat = root / f"sub-{sub}" / f"ses-{ses}" / "anat"
    truth = root / "derivatives" / "truth" / f"sub-{sub}" / f"ses-{ses}" / "anat"
    stem = f"sub-{sub}_ses-{ses}"
    target, x, brain = isotropic_input(
        anat / f"{stem}_FLAIR.nii.gz", truth / f"{stem}_desc-brain_mask.nii.gz", spacing
    )
    label = resample_from_to(nib.load(truth / f"{stem}_label-lesion_mask.nii.gz"), target, order=0)
    return Case(stem, x, (np.asarray(label.dataobj) > 0).astype(np.uint8), brain)


def compare_precisions(
    network: torch.nn.Module,
    image: np.ndarray,
    brain: np.ndarray,
    patch: tuple[int, ...],
    overlap: tuple[int, ...],
    truth: np.ndarray | None = None,
    margin: tuple[int, ...] | None = None,
    threshold: float = 0.5,
    min_lesion_mm3: float = 0.0,
) -> dict:
    """Segment with float32 and with bfloat16 autocast; how far apart are the lesion masks
    (above ``threshold``, lesions of at least ``min_lesion_mm3``; 1 mm voxels) and the
    probabilities?"""
    out, probs = {"threshold": threshold}, {}
    for precision in ("float32", "bfloat16"):
        start = time.perf_counter()
        probs[precision] = sliding_window(
            network, image, brain, patch, overlap, torch.device("cpu"), precision, margin=margin
        )
        out[f"{precision}_seconds"] = time.perf_counter() - start
    masks = {k: threshold_mask(v, threshold, min_lesion_mm3, (1.0,) * 3) for k, v in probs.items()}
    if truth is not None:
        for precision, mask in masks.items():
            out[f"{precision}_dice_vs_truth"] = dice(mask, truth)
    out["dice_float32_vs_bfloat16"] = dice(masks["float32"], masks["bfloat16"])
    out["max_abs_probability_difference"] = float(
        np.abs(probs["float32"] - probs["bfloat16"]).max()
    )
    out["lesion_voxels_float32"] = int(masks["float32"].sum())
    return out


def model_figures(path: Path, images: list[tuple[Path, Path]]) -> dict:
    """A trained model on preprocessed FLAIRs, each resampled to 1 mm, tiled and thresholded
    as its card says."""
    model = load_model(path)
    patch, overlap, margin = card_tiling(model.card)
    out: dict = {"model": path.name}
    for flair_path, mask_path in images:
        _, x, brain = isotropic_input(flair_path, mask_path, 1.0)
        out[flair_path.name] = compare_precisions(
            model.network, x, brain, patch, overlap, margin=margin,
            threshold=model.card["threshold"], min_lesion_mm3=model.card["min_lesion_mm3"],
        )  # fmt: skip
    return out


def trained_here_figures(iterations: int, resolution: float, side: int) -> dict:
    """Train briefly on phantoms, then compare on a held-out phantom with its truth."""
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_dataset(
            Path(tmp) / "ph", participants=4, sessions=1, seed=7, resolution=resolution
        )
        cases = [load_case(root, f"{i:02d}", "01", resolution) for i in range(1, 5)]
    train_cases, test_case = cases[:3], cases[3]
    net = build_network(default_config(in_channels=1))
    cfg = TrainConfig(
        iterations=iterations, batch_size=2, patch_size=(side,) * 3, learning_rate=2e-3
    )
    start = time.perf_counter()
    history = train(net, train_cases, cfg, progress=False)
    out = {
        "iterations": iterations,
        "train_seconds": time.perf_counter() - start,
        "loss_first10": float(np.mean(history.loss[:10])),
        "loss_last10": float(np.mean(history.loss[-10:])),
    }
    patch, overlap = (side * 2,) * 3, (side // 2,) * 3
    out |= compare_precisions(net, test_case.image, test_case.mask, patch, overlap, test_case.label)
    out["lesion_voxels_truth"] = int(test_case.label.sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--resolution", type=float, default=1.5)
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument("--model", type=Path, help="a trained FLAIR-only model")
    parser.add_argument("--image", nargs=2, type=Path, action="append", default=[],
                        metavar=("FLAIR", "BRAIN_MASK"))  # fmt: skip
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.model:
        out = model_figures(args.model, args.image)
    else:
        out = trained_here_figures(args.iterations, args.resolution, args.patch)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
