"""Repeatability on no-change rescan pairs: false change and volume change, per method.

Every source session — each labelled case of ``--cross-sectional`` (Lesjak et al. 2017,
CC-BY, masks in ``derivatives/manual``) and the first session of each participant of a
held-out phantom (``mdgru-bids-phantom --seed`` ``--phantom-seed``) — becomes a rescan pair at
the source's resolution and with 3 mm slices (``mdgru-bids-phantom --rescan-of``). Each pair
runs through ``mdgru-bids participant`` with each method of METHODS: ``joint`` (the default:
sessions segmented jointly, change from evidence), ``evidence`` (sessions thresholded
independently, change from evidence) and ``difference`` (independent masks differenced, as
most tools do); the network's answers are the same, so every method after the first reuses
the work folder and costs only the lesion and change steps.

Per pair and method: the new / enlarging / shrinking / resolved groups reported (every one is
false: nothing changed), the total lesion volume change in % from the lesion tables (partial
volume in subject space) and from thresholded voxel counts on each session's own grid (what
independent masks give), and each session's lesion Dice against its truth. The summary gives
the coefficient of variation of total lesion volume (within-pair SD over mean, root mean
square over pairs) and the false new-lesion rate per pair.

Usage: python benchmarks/bench_rescan.py --model M.safetensors --work DIR
       [--cross-sectional DIR] [--phantom-seed 99] [--methods joint evidence difference]
       [--sources c26 phantom-01-01 ...] [--json FILE] [--record-in-card]
       (TEMPLATEFLOW_HOME must be set)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mdgru_bids.io_spec import OUTPUTS  # noqa: E402
from mdgru_bids.lesions.metrics import dice  # noqa: E402
from mdgru_bids.model.files import update_card  # noqa: E402

BIN = Path(sys.executable).parent
METHODS = {
    "joint": ("--change-rule", "evidence", "--sessions", "joint"),
    "evidence": ("--change-rule", "evidence", "--sessions", "independent"),
    "difference": ("--change-rule", "difference", "--sessions", "independent"),
}
SLICES = (None, 3.0)
CLASSES = ("new", "enlarging", "shrinking", "resolved")


def sources(cross_sectional: Path | None, phantom: Path | None) -> list[tuple[str, Path, Path]]:
    """(name, FLAIR, lesion mask) of every source session."""
    found = []
    if cross_sectional is not None:
        for mask in sorted((cross_sectional / "derivatives" / "manual").rglob("*_mask.nii.gz")):
            sub = mask.name.split("_")[0]
            (flair,) = (cross_sectional / sub).rglob(f"{sub}*_FLAIR.nii.gz")
            found.append((sub.removeprefix("sub-"), flair, mask))
    if phantom is not None:
        for flair in sorted(phantom.glob("sub-*/ses-01/anat/*_FLAIR.nii.gz")):
            stem = flair.name.removesuffix("_FLAIR.nii.gz")
            mask = phantom / "derivatives" / "truth" / flair.parent.relative_to(phantom)
            # no sub-/ses- in folder names: pybids would read them as every file's entities
            name = "phantom-" + stem.replace("sub-", "").replace("_ses-", "-")
            found.append((name, flair, mask / f"{stem}_label-lesion_mask.nii.gz"))
    return found


def make_pair(flair: Path, mask: Path, slice_mm: float | None, out: Path, seed: int) -> Path:
    if not (out / "dataset_description.json").is_file():
        subprocess.run(
            [str(BIN / "mdgru-bids-phantom"), str(out), "--rescan-of", str(flair),
             "--rescan-lesion-mask", str(mask), "--seed", str(seed),
             *(["--slice-thickness", str(slice_mm)] if slice_mm else [])],
            check=True, capture_output=True,
        )  # fmt: skip
    return out


def run(bids: Path, out: Path, work: Path, model: Path, method: str, nprocs: int) -> float:
    start = time.perf_counter()
    subprocess.run(
        [str(BIN / "mdgru-bids"), str(bids), str(out), "participant", "--model", str(model),
         "-w", str(work), "--nprocs", str(nprocs), "--skip-bids-validation", *METHODS[method]],
        check=True, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - start


def scores(bids: Path, out: Path) -> dict:
    """False change and volume change of one rescan pair's outputs."""
    (sub,) = [p.name for p in bids.glob("sub-*") if p.is_dir()]
    row: dict = {}
    totals, counts = [], []
    for ses in ("01", "02"):
        anat = out / sub / f"ses-{ses}" / "anat"
        stem = f"{sub}_ses-{ses}_"
        table = pd.read_csv(anat / (stem + OUTPUTS["lesion_table"].stem()), sep="\t")
        totals.append(float(table["volume_mm3"].sum()))
        mask = nib.load(anat / (stem + OUTPUTS["lesion_mask"].stem()))
        voxel = abs(float(np.linalg.det(mask.affine[:3, :3])))
        predicted = np.asarray(mask.dataobj) > 0
        counts.append(float(predicted.sum()) * voxel)
        truth = bids / "derivatives" / "truth" / sub / f"ses-{ses}" / "anat"
        truth_mask = np.asarray(nib.load(truth / (stem + "label-lesion_mask.nii.gz")).dataobj)
        row[f"dice_ses-{ses}"] = dice(predicted, truth_mask > 0)
    change = pd.read_csv(
        out / sub / "ses-02" / "anat" / f"{sub}_ses-02_{OUTPUTS['change_table'].stem()}",
        sep="\t",
    )  # fmt: skip
    for name in CLASSES:
        row[name] = int((change["class"] == name).sum())
    row["volume_ml"] = [round(v / 1000, 3) for v in totals]
    row["volume_change_pct"] = 100 * (totals[1] - totals[0]) / max(totals[0], 1e-9)
    row["voxel_count_change_pct"] = 100 * (counts[1] - counts[0]) / max(counts[0], 1e-9)
    return row


def summary(rows: list[dict]) -> dict:
    """Within-pair CV of total volume and false change per pair, per method and slicing."""
    out = {}
    for method in METHODS:
        for slices in ("1mm", "3mm"):
            picked = [r for r in rows if r["method"] == method and r["slices"] == slices]
            if not picked:
                continue
            cv = [
                abs(a - b) / np.sqrt(2) / ((a + b) / 2) for a, b in (r["volume_ml"] for r in picked)
            ]
            out[f"{method}_{slices}"] = {
                "pairs": len(picked),
                "volume_cv_pct": 100 * float(np.sqrt(np.mean(np.square(cv)))),
                "max_abs_volume_change_pct": max(abs(r["volume_change_pct"]) for r in picked),
                "false_new_or_enlarging_per_pair": float(
                    np.mean([r["new"] + r["enlarging"] for r in picked])
                ),
                "false_any_change_per_pair": float(
                    np.mean([sum(r[c] for c in CLASSES) for r in picked])
                ),
                "mean_dice": float(
                    np.mean([r[f"dice_ses-{s}"] for r in picked for s in ("01", "02")])
                ),
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--cross-sectional", type=Path)
    parser.add_argument("--phantom-seed", type=int)
    parser.add_argument("--phantom-participants", type=int, default=2)
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--sources", nargs="+", help="only these sources (default: all)")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--record-in-card", action="store_true",
        help="write the summary into the model's card (repeatability), for all sources only",
    )  # fmt: skip
    args = parser.parse_args()
    if args.record_in_card and (
        args.sources or args.cross_sectional is None or args.phantom_seed is None
    ):
        parser.error(
            "--record-in-card needs every source: --cross-sectional, --phantom-seed, no --sources"
        )
    phantom = None
    if args.phantom_seed is not None:
        phantom = args.work / f"phantom-seed{args.phantom_seed}"
        if not phantom.is_dir():
            subprocess.run(
                [str(BIN / "mdgru-bids-phantom"), str(phantom), "--seed", str(args.phantom_seed),
                 "--participants", str(args.phantom_participants), "--sessions", "1"],
                check=True,
            )  # fmt: skip
    rows = []
    found = sources(args.cross_sectional, phantom)
    unknown = set(args.sources or ()) - {name for name, _, _ in found}
    if unknown:
        parser.error(f"--sources: no such source {sorted(unknown)}; found {[n for n, *_ in found]}")
    for name, flair, mask in (s for s in found if not args.sources or s[0] in args.sources):
        for slice_mm in SLICES:
            slices = f"{slice_mm:g}mm" if slice_mm else "1mm"
            pair = make_pair(flair, mask, slice_mm, args.work / f"pair-{name}-{slices}", 1)
            for method in args.methods:
                out = args.work / f"out-{name}-{slices}-{method}"
                seconds = run(pair, out, args.work / f"work-{name}-{slices}", args.model, method,
                              args.nprocs)  # fmt: skip
                row = {"source": name, "slices": slices, "method": method,
                       "participant_seconds": round(seconds, 1), **scores(pair, out)}  # fmt: skip
                print(json.dumps(row, default=float), flush=True)
                rows.append(row)
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.drop(columns=["participant_seconds"]).round(2).to_string(index=False))
    result = {"model": args.model.name, "pairs": rows, "summary": summary(rows)}
    print(json.dumps(result["summary"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=float) + "\n")
    if args.record_in_card:
        update_card(args.model, repeatability={
            "measured_with": "benchmarks/bench_rescan.py",
            "sources": sorted({r["source"] for r in rows}), **result["summary"],
        })  # fmt: skip


if __name__ == "__main__":
    main()
