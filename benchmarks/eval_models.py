"""Accuracy of a model through the whole participant pipeline (printed figures, never asserted).

1. Held-out phantoms (``--phantom DIR``, truth in ``DIR/derivatives/truth``): ``mdgru-bids
   participant`` with the model, then voxel Dice, lesion-wise F1 (MSSEG rule) and more for the
   lesion masks and, where the truth has change maps, for the appeared-lesion voxels.
2. The real longitudinal pair (``--longitudinal DIR``; Lesjak et al. 2016, CC-BY): the later
   session's change map is carried into the database's common space with its reference
   transform and its appeared-lesion voxels (new + enlarging) are scored against the experts'
   lesion-change mask: voxel Dice and lesion-wise detection of the changed lesions.

Usage: python benchmarks/eval_models.py --model M.safetensors [--phantom DIR]
       [--longitudinal DIR] --work DIR [--json FILE] [--record-in-card]
       (TEMPLATEFLOW_HOME must be set; --record-in-card writes the figures into the model card)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import ants
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mdgru_bids.evaluation import evaluate, find_pairs  # noqa: E402
from mdgru_bids.lesions.change import ENLARGING, NEW, RESOLVED, SHRINKING  # noqa: E402
from mdgru_bids.lesions.metrics import ANY_OVERLAP, DetectionRule, dice, lesion_detection  # noqa: E402
from mdgru_bids.model.files import load_model, save_model  # noqa: E402

APP = Path(sys.executable).parent / "mdgru-bids"


def run_participant(bids: Path, out: Path, work: Path, model: Path, nprocs: int) -> float:
    """Run the app; the wall time in seconds."""
    start = time.perf_counter()
    subprocess.run(
        [str(APP), str(bids), str(out), "participant", "--model", str(model), "-w", str(work),
         "--nprocs", str(nprocs), "--skip-bids-validation"],
        check=True, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - start


def phantom_scores(bids: Path, out: Path) -> dict:
    """Mean and median of each metric per map, from mdgru_bids.evaluation."""
    pairs, _ = find_pairs(out, bids / "derivatives" / "truth")
    table = evaluate(pairs, DetectionRule())
    print(table.to_string(index=False))
    summary = table[table["image"].isin(["mean", "median"])]
    return {
        f"{row['map']}_{row['image']}": {
            k: (float(v) if isinstance(v, (int, float, np.floating)) else v) for k, v in row.items()
        }
        for _, row in summary.iterrows()
    }


def longitudinal_scores(data: Path, out: Path) -> dict:
    """The later session's change map in the common space against the experts' change mask."""
    scores = {}
    for sub in sorted(p.name for p in (data / "derivatives" / "reference").glob("sub-*")):
        later = sorted((out / sub).glob(f"ses-*/anat/{sub}_ses-*_desc-lesionchange_dseg.nii.gz"))
        change = ants.image_read(str(later[-1]))
        session = later[-1].name.split("_")[1]
        rows = {
            name: common_space_scores(data, sub, session, change.new_image_like(
                np.isin(change.numpy(), labels).astype(np.float32)))
            for name, labels in (
                ("appeared", (NEW, ENLARGING)),
                ("any_change", (NEW, ENLARGING, SHRINKING, RESOLVED)),
            )
        }  # fmt: skip
        scores[sub] = rows
        for name, row in rows.items():
            print(sub, name, " ".join(f"{k}={v:.3f}" for k, v in row.items()))
    return scores


def common_space_scores(data: Path, sub: str, session: str, mask: ants.ANTsImage) -> dict:
    """A change mask on the session's FLAIR grid, carried into the database's common space with
    its reference transform, against the experts' change mask there."""
    ref = data / "derivatives" / "reference" / sub
    grid = ants.image_read(str(ref / f"{sub}_space-common_desc-brain_mask.nii.gz"))
    truth = ants.image_read(str(ref / f"{sub}_space-common_desc-change_mask.nii.gz")).numpy() > 0
    xfm = ref / f"{sub}_{session}_from-FLAIR_to-common_mode-image_xfm.txt"
    moved = ants.apply_transforms(grid, mask, [str(xfm)], interpolator="nearestNeighbor")
    return mask_scores(moved.numpy() > 0, truth, float(np.prod(grid.spacing)))


def mask_scores(predicted: np.ndarray, truth: np.ndarray, voxel: float) -> dict:
    """Voxel Dice, volumes and lesion-wise detection (MSSEG rule and any overlap)."""
    msseg = lesion_detection(predicted, truth, voxel, DetectionRule())
    loose = lesion_detection(predicted, truth, voxel, ANY_OVERLAP)
    return {
        "dice": dice(predicted, truth),
        "predicted_mm3": float(predicted.sum() * voxel),
        "truth_mm3": float(truth.sum() * voxel),
        "lesion_f1_msseg": msseg.f1,
        "lesion_recall_msseg": msseg.recall,
        "lesion_precision_msseg": msseg.precision,
        "truth_lesions": msseg.truth_lesions,
        "predicted_lesions": msseg.predicted_lesions,
        "lesion_f1_any_overlap": loose.f1,
        "lesion_recall_any_overlap": loose.recall,
        "lesion_precision_any_overlap": loose.precision,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--phantom", type=Path)
    parser.add_argument("--longitudinal", type=Path)
    parser.add_argument("--work", type=Path, required=True, help="outputs and work folders")
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--record-in-card", action="store_true")
    args = parser.parse_args()
    results: dict = {"model": args.model.name}
    for key, data, score in (
        ("phantom", args.phantom, phantom_scores),
        ("longitudinal", args.longitudinal, longitudinal_scores),
    ):
        if data is None:
            continue
        out = args.work / f"{key}_out"
        seconds = run_participant(data, out, args.work / f"{key}_work", args.model, args.nprocs)
        results[key] = {"participant_seconds": round(seconds, 1), **score(data, out)}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float) + "\n")
    if args.record_in_card:
        model = load_model(args.model)
        card = json.loads(json.dumps(model.card | {"accuracy": {
            **model.card.get("accuracy", {}),
            "measured_with": "benchmarks/eval_models.py",
            **{k: v for k, v in results.items() if k != "model"},
        }}, default=float))  # fmt: skip
        save_model(args.model, model.network, card)


if __name__ == "__main__":
    main()
