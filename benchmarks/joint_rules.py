"""Per-session Dice of ways to give a rescan pair one answer (printed, never asserted).

Reads the work folders `bench_rescan.py` left (``WORK/work-<source>-<slices>``; whatever the
method, the joint step's cached inputs are each session's own subject-space probability) and
scores, in subject space, each session's lesion mask (the app's threshold and minimum size)
against its truth brought there with the app's own session-to-subject transform, for:

- ``independent``: each session's own probability;
- ``mean``: the plain mean of both (the app's joint rule before ``inverse-square``; for two
  sessions at threshold 0.5, voxel by voxel, "the more confident session" gives the same
  mask);
- ``logit``: the mean of both sessions' logits (at a threshold other than 0.5 not the same
  mask as the mean: one very confident session outweighs a hesitant one);
- ``weighted``: the mean weighted by 1 / acquired voxel volume (finer sessions count more);
- ``inverse-square``: weighted by 1 / (acquired voxel volume)², the app's joint rule
  (``longitudinal.session_weights``; 1 mm counts 9 times as much as 3 mm slices);
- ``finer``: the finer session's probability for both (ses-01's when equal).

Why: the joint rule must not lower a session's Dice below its independent answer; this shows
which one-answer rules could meet that.

Usage: python benchmarks/joint_rules.py WORK [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import ants
import nibabel as nib
import numpy as np
from nipype.utils.filemanip import loadpkl
from scipy.special import expit, logit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mdgru_bids.lesions.components import threshold_mask  # noqa: E402
from mdgru_bids.lesions.longitudinal import acquired_resolution, session_weights  # noqa: E402
from mdgru_bids.lesions.metrics import dice  # noqa: E402

RULES = ("independent", "mean", "logit", "weighted", "inverse-square", "finer")


def pair_rows(root: Path, work: Path) -> dict:
    """Per-session Dice and volume of every rule for one rescan pair."""
    (wf,) = work.glob("sub_*_wf")
    sub = wf.name.split("_")[1]
    space = wf / "subject_space_wf" / "subject_space"
    inputs = loadpkl(wf / "subject_lesions" / "_inputs.pklz")
    reference = ants.image_read(str(space / "reference.nii.gz"))
    probs, truths, volumes, resolutions = [], [], [], []
    for k in range(2):
        img = nib.load(inputs["probseg"][k])
        probs.append(np.asarray(img.dataobj, dtype=np.float32))
        native = nib.load(inputs["native_flair"][k]).affine
        resolutions.append(tuple(acquired_resolution(native, img.affine)))
        volumes.append(float(np.prod(resolutions[-1])))
        ses = f"ses-{k + 1:02d}"
        truth = ants.image_read(str(
            root / f"pair-{work.name.removeprefix('work-')}" / "derivatives" / "truth"
            / f"sub-{sub}" / ses / "anat" / f"sub-{sub}_{ses}_label-lesion_probseg.nii.gz"
        ))  # fmt: skip
        moved = ants.apply_transforms(
            reference, truth, [str(space / f"session{k + 1}_to_subject.txt")], "linear"
        )
        truths.append(moved.numpy() > 0.5)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])  # the one subject-space grid
    voxel = float(np.prod(zooms))
    weights = [1 / v for v in volumes]
    finer = probs[int(volumes[1] < volumes[0])]
    combined = {
        "independent": probs,
        "mean": [np.mean(probs, axis=0)] * 2,
        "logit": [expit(np.mean([logit(np.clip(p, 1e-6, 1 - 1e-6)) for p in probs], axis=0))] * 2,
        "weighted": [np.average(probs, axis=0, weights=weights)] * 2,
        "inverse-square": [np.average(probs, axis=0, weights=session_weights(resolutions))] * 2,
        "finer": [finer] * 2,
    }
    row: dict = {"acquired_voxel_mm3": [round(v, 2) for v in volumes]}
    for rule, answer in combined.items():
        masks = [
            threshold_mask(p, inputs["threshold"], inputs["min_volume_mm3"], zooms) for p in answer
        ]
        row[rule] = [round(dice(m, t), 4) for m, t in zip(masks, truths, strict=True)]
        row[f"{rule}_ml"] = [round(float(m.sum()) * voxel / 1000, 3) for m in masks]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="the --work folder of bench_rescan.py")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = {}
    for work in sorted(args.work.glob("work-*")):
        rows[work.name.removeprefix("work-")] = row = pair_rows(args.work, work)
        print(work.name, json.dumps(row), flush=True)
    independent = np.array([r["independent"] for r in rows.values()])
    summary = {}
    for rule in RULES:
        scores = np.array([r[rule] for r in rows.values()])
        summary[rule] = {
            "mean_dice": float(scores.mean()),
            "sessions_below_independent": int((scores < independent - 1e-9).sum()),
            "largest_shortfall": float(np.max(independent - scores, initial=0.0)),
        }
        print(f"{rule:>12}: " + " ".join(f"{k}={v:.4g}" for k, v in summary[rule].items()))
    if args.json:
        args.json.write_text(json.dumps({"pairs": rows, "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
