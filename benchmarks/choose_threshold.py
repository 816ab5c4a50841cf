"""Choose a model's lesion threshold on calibration phantoms, never on evaluation data.

A network's lesion probabilities are not calibrated: the same model can draw the phantoms'
lesions too wide at 0.5 while its real-case answers hardly move with the threshold. So the
last step of a model's recipe runs the participant pipeline (the app's defaults) on phantoms
made with a seed used neither for training (11) nor for evaluation (7, 99), scores the
published probabilities at each threshold 0.1-0.9 (voxel Dice and lesion F1 by the MSSEG
rule, lesions of at least the card's minimum size) and takes the threshold with the best mean
of the two over all sessions. ``--write-card`` puts it into the card with how it was chosen.

Usage: python benchmarks/choose_threshold.py --model M.safetensors --phantom DIR --work DIR
       [--json FILE] [--write-card]
       (DIR from mdgru-bids-phantom DIR --participants 2 --sessions 2 --seed 23)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import ants
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_models import by_threshold, run_participant, session_images

from mdgru_bids.evaluation import find_pairs
from mdgru_bids.model.files import update_card


def threshold_table(bids: Path, out: Path) -> dict[float, dict[str, float]]:
    """Mean voxel Dice and lesion F1 over the phantom sessions at every threshold."""
    pairs, _ = find_pairs(out, bids / "derivatives" / "truth")
    rows = []
    for pair in (p for p in pairs if p.map == "lesion"):
        _, _, voxel, fewest = session_images(pair.prediction.path)
        truth = ants.image_read(str(pair.truth.path)).numpy() > 0
        rows.append(by_threshold(pair.prediction.path, truth, voxel, fewest))
    if not rows:
        raise SystemExit(f"no lesion masks of {bids} were scored: is it a phantom with truth?")
    return {
        t: {
            "dice": float(np.mean([r[t]["dice"] for r in rows])),
            "lesion_f1_msseg": float(np.mean([r[t]["lesion_f1_msseg"] or 0.0 for r in rows])),
        }
        for t in rows[0]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--phantom", type=Path, required=True, help="calibration phantoms")
    parser.add_argument("--work", type=Path, required=True, help="outputs and work folders")
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--write-card", action="store_true")
    args = parser.parse_args()
    out = args.work / f"calibration_out_{args.model.stem}"
    run_participant(args.phantom, out, args.work / "calibration_work", args.model, args.nprocs)
    table = threshold_table(args.phantom, out)
    best = max(table, key=lambda t: table[t]["dice"] + table[t]["lesion_f1_msseg"])
    for t, row in table.items():
        mark = "  <- chosen" if t == best else ""
        f1 = row["lesion_f1_msseg"]
        print(f"threshold {t:.1f}: Dice {row['dice']:.3f}  lesion F1 {f1:.3f}{mark}")
    choice = {
        "threshold": best,
        "chosen_with": "benchmarks/choose_threshold.py: best mean of voxel Dice and lesion F1",
        "phantom": str(args.phantom.name),
        "by_threshold": table,
    }
    if args.json:
        args.json.write_text(json.dumps(choice, indent=2) + "\n")
    if args.write_card:
        update_card(args.model, threshold=best, threshold_choice=choice)


if __name__ == "__main__":
    main()
