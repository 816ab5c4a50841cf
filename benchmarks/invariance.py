"""Does a model's answer depend on where the image sits in its grid? (printed, never asserted)

One subject-space FLAIR (with the T1w for a FLAIR + T1w model, and the brain mask) segmented
as it is, cropped tight around the brain, zero-padded by 16 and 32 voxels, shifted in its grid
by 16 voxels, with the tiles started a third and two thirds of the patch stride before the
brain's box (other tiling phases: 10 and 21 voxels with 64-voxel patches overlapping by 32,
16 and 32 with an overlap of 16; the app starts them at the box, so cropping, padding and
shifting alone leave the patches where they were), and with other patch sizes than the
card's. Prints the total lesion volume of each two ways,
thresholded voxels (probability > threshold, lesions of at least the card's minimum size) and
the partial volume the lesion tables report (probability summed over each lesion and its
neighbours), and the largest change relative to "as given" at the same overlap (the card's
unless --overlap-fraction says otherwise; the same for --blend-margin, a share of the overlap).
The issue's bar: at most 5 %.

Usage: python benchmarks/invariance.py --model M.safetensors --flair F.nii.gz --mask M.nii.gz
       [--t1w T.nii.gz] [--patch-sizes 48 64 96] [--overlap-fraction F] [--blend-margin S] [--tta]
       [--json FILE]
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

from mdgru_bids.lesions.components import label_lesions, min_voxels  # noqa: E402
from mdgru_bids.lesions.longitudinal import partial_volumes  # noqa: E402
from mdgru_bids.lesions.metrics import bounding_box  # noqa: E402
from mdgru_bids.model.files import load_model  # noqa: E402
from mdgru_bids.model.inference import card_tiling, sliding_window  # noqa: E402
from mdgru_bids.model.normalise import network_input  # noqa: E402


def lesion_ml(prob: np.ndarray, threshold: float, fewest: int) -> dict[str, float]:
    """Total lesion volume (mL, 1 mm voxels) two ways: thresholded voxels (the mask) and the
    partial volume the lesion tables report."""
    labels, _ = label_lesions(prob > threshold, fewest)
    partial = partial_volumes(labels, prob, 1.0)[1:].sum()
    return {"mask": float((labels > 0).sum()) / 1000.0, "partial": float(partial) / 1000.0}


def variants(x: np.ndarray, mask: np.ndarray, stride: int) -> dict:
    """Name -> (input, mask) of the same image placed differently in its grid, and with the
    tiles started a third and two thirds of the patch stride before the brain's box (a mask
    voxel that far out in the padded corner moves the box's corner there)."""
    tight = bounding_box(mask)
    out = {"as given": (x, mask), "tight crop": (x[(slice(None), *tight)], mask[tight])}
    for pad in (16, 32):
        out[f"zero-padded {pad}"] = (
            np.pad(x, [(0, 0)] + [(pad, pad)] * 3),
            np.pad(mask, [(pad, pad)] * 3),
        )
    out["shifted 16"] = (np.pad(x, [(0, 0)] + [(16, 0)] * 3), np.pad(mask, [(16, 0)] * 3))
    for shift in (stride // 3, 2 * stride // 3):
        moved = np.pad(mask[tight], [(shift, 0)] * 3)
        moved[0, 0, 0] = True
        out[f"tiles {shift} earlier"] = (
            np.pad(x[(slice(None), *tight)], [(0, 0)] + [(shift, 0)] * 3),
            moved,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--flair", type=Path, required=True)
    parser.add_argument("--mask", type=Path, required=True)
    parser.add_argument("--t1w", type=Path, help="the T1w on the FLAIR's grid (FLAIR + T1w models)")
    parser.add_argument("--patch-sizes", type=int, nargs="+", default=[48, 64, 96])
    parser.add_argument(
        "--overlap-fraction", type=float,
        help="patch overlap as a fraction of its side, 0 to below 1 (default: the card's)",
    )  # fmt: skip
    parser.add_argument(
        "--blend-margin", type=float,
        help="share of the overlap at each tile edge that gets almost no weight, 0 to below 1 "
        "(default: the card's)",
    )  # fmt: skip
    parser.add_argument("--tta", action="store_true", help="average over mirror images (--tta)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    card = model.card
    images = [args.flair] + ([args.t1w] if args.t1w else [])
    if len(images) != len(card["inputs"]):
        parser.error(f"{args.model.name} takes {' + '.join(card['inputs'])}: give one image each")
    mask = np.asarray(nib.load(args.mask).dataobj) > 0
    arrays = [nib.load(path).get_fdata(dtype=np.float32) for path in images]
    if any(a.shape != mask.shape for a in arrays):
        parser.error(f"--flair, --t1w and --mask must share one grid: {[a.shape for a in arrays]}, "
                     f"mask {mask.shape}")  # fmt: skip
    x = network_input(arrays, mask, (1.0, 1.0, 1.0), None)
    (patch, *_), (card_overlap, *_), (card_margin, *_) = card_tiling(card)
    fraction = card_overlap / patch if args.overlap_fraction is None else args.overlap_fraction
    if not 0 <= fraction < 1:
        parser.error(f"--overlap-fraction must be at least 0 and below 1, got {fraction:g}")
    share = card_margin / max(card_overlap, 1) if args.blend_margin is None else args.blend_margin
    if not 0 <= share < 1:
        parser.error(f"--blend-margin must be at least 0 and below 1, got {share:g}")
    threshold, fewest = card["threshold"], min_voxels(card["min_lesion_mm3"], 1.0)  # 1 mm voxels

    def volume(xx: np.ndarray, mm: np.ndarray, side: int) -> dict[str, float]:
        overlap = round(side * fraction)
        margin = (round(overlap * share),) * 3
        prob = sliding_window(model.network, xx, mm, (side,) * 3, (overlap,) * 3,
                              torch.device("cpu"), tta=args.tta, margin=margin)  # fmt: skip
        return lesion_ml(prob, threshold, fewest)

    rows = {}
    start = time.perf_counter()
    for name, (xx, mm) in variants(x, mask, patch - round(patch * fraction)).items():
        rows[name] = volume(xx, mm, patch)
    for side in args.patch_sizes:
        if side != patch:
            rows[f"patch {side}"] = volume(x, mask, side)
    reference = rows["as given"]
    print(f"{args.model.name} on {args.flair.name} (card patch {patch}, overlap "
          f"{fraction:g} of the side, blend margin {share:g} of the overlap"
          f"{', mirror images averaged' if args.tta else ''}): "
          "lesion volume, mask and partial")  # fmt: skip
    worst = {}
    for way, ref in reference.items():
        spread = max(abs(r[way] - ref) for r in rows.values())
        worst[way] = 100 * spread / ref if ref else np.nan
    for name, ml in rows.items():
        changes = [100 * (ml[w] - ref) / ref if ref else np.nan for w, ref in reference.items()]
        print(f"  {name:>16}: " + "  ".join(
            f"{ml[w]:7.2f} mL {c:+6.1f} %" for w, c in zip(ml, changes, strict=True)))  # fmt: skip
    print(f"largest change: mask {worst['mask']:.1f} %, partial {worst['partial']:.1f} % "
          f"({time.perf_counter() - start:.0f} s)")  # fmt: skip
    if args.json:
        result = {"model": args.model.name, "image": args.flair.name,
                  "overlap_fraction": fraction, "blend_margin": share, "tta": args.tta,
                  "lesion_ml": rows}  # fmt: skip
        result["largest_change_percent"] = worst
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
