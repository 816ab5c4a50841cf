"""Accuracy of a model through the whole participant pipeline (printed figures, never asserted).

Beside every model row stands the baseline any user can run: a robust z-score of the
preprocessed FLAIR (median and MAD inside the brain mask eroded by 3 mm) above one threshold,
lesions of at least the model's minimum size. The threshold is chosen on the phantoms (best
mean Dice) and applied unchanged to every real case.

0. Real labelled cases (``--cross-sectional DIR``, masks in ``DIR/derivatives/manual``):
   voxel Dice, lesion-wise F1 (MSSEG rule), recall by lesion size (10-30, 30-100, > 100 mm³)
   and lesion-load error (mL), per case; leave-one-out with ``--case-model LABEL=MODEL`` (a
   model trained without that case scores it). A figure per case (truth, model and baseline
   outlines over the FLAIR) goes to ``--figures``.
1. Held-out phantoms (``--phantom DIR``, truth in ``DIR/derivatives/truth``): ``mdgru-bids
   participant`` with the model, then voxel Dice, lesion-wise F1 (MSSEG rule) and more for the
   lesion masks and, where the truth has change maps, for the appeared-lesion voxels.
2. The real longitudinal pair (``--longitudinal DIR``; Lesjak et al. 2016, CC-BY): the later
   session's change map is carried into the database's common space with its reference
   transform and its appeared-lesion voxels (new + enlarging) are scored against the experts'
   lesion-change mask: voxel Dice and lesion-wise detection of the changed lesions.

Usage: python benchmarks/eval_models.py --model M.safetensors [--phantom DIR]
       [--reference-model OLD.safetensors]
       [--cross-sectional DIR [--case-model LABEL=M2.safetensors ...]] [--figures DIR]
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
from mdgru_bids.io_spec import OUTPUTS  # noqa: E402
from mdgru_bids.lesions.change import ENLARGING, NEW, RESOLVED, SHRINKING  # noqa: E402
from mdgru_bids.lesions.components import (  # noqa: E402
    MIN_LESION_MM3,
    label_lesions,
    min_voxels,
)
from mdgru_bids.lesions.longitudinal import flair_z  # noqa: E402
from mdgru_bids.lesions.metrics import (  # noqa: E402
    ANY_OVERLAP,
    SIZE_BINS_MM3,
    DetectionRule,
    dice,
    lesion_detection,
    recall_by_size,
)
from mdgru_bids.model.files import read_card, update_card  # noqa: E402

BASELINE_THRESHOLDS = np.round(np.arange(1.0, 4.01, 0.25), 2)
MODEL_THRESHOLDS = np.round(np.arange(0.1, 0.91, 0.1), 2)
ERODE_MM = 3

APP = Path(sys.executable).parent / "mdgru-bids"


def run_participant(
    bids: Path,
    out: Path,
    work: Path,
    model: Path,
    nprocs: int,
    labels: list[str] | None = None,
    app_args: tuple[str, ...] = (),
) -> float:
    """Run the app; the wall time in seconds."""
    start = time.perf_counter()
    subprocess.run(
        [str(APP), str(bids), str(out), "participant", "--model", str(model), "-w", str(work),
         "--nprocs", str(nprocs), "--skip-bids-validation", *app_args,
         *(["--participant-label", *labels] if labels else [])],
        check=True, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - start


def robust_z(flair: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """(FLAIR - median) / (1.4826 MAD) inside the brain mask eroded by ERODE_MM voxels (1 mm);
    0 outside the brain."""
    from scipy import ndimage

    inner = ndimage.binary_erosion(brain, iterations=ERODE_MM)
    return flair_z(flair, brain, inner if inner.any() else brain)


def baseline_mask(z: np.ndarray, threshold: float, min_voxels: int) -> np.ndarray:
    """Voxels above ``threshold``, in lesions of at least ``min_voxels``."""
    labels, _ = label_lesions(z > threshold, min_voxels)
    return labels > 0


def session_images(mask_path: Path) -> tuple[np.ndarray, np.ndarray, float, int]:
    """The preprocessed FLAIR and brain mask published beside a lesion mask, the voxel volume
    and the bundled models' minimum lesion size in voxels."""
    stem = str(mask_path).removesuffix(OUTPUTS["lesion_mask"].stem())
    flair = ants.image_read(stem + OUTPUTS["preproc_flair"].stem())
    brain = ants.image_read(stem + OUTPUTS["brain_mask"].stem()).numpy() > 0
    voxel = float(np.prod(flair.spacing))
    return flair.numpy(), brain, voxel, min_voxels(MIN_LESION_MM3, voxel)


def choose_baseline_threshold(pairs: list) -> tuple[float, dict]:
    """The z threshold with the best mean lesion Dice over the phantom sessions."""
    table = {float(t): [] for t in BASELINE_THRESHOLDS}
    for pair in pairs:
        flair, brain, _, min_voxels = session_images(pair.prediction.path)
        truth = ants.image_read(str(pair.truth.path)).numpy() > 0
        z = robust_z(flair, brain)
        for t in table:
            table[t].append(dice(baseline_mask(z, t, min_voxels), truth))
    means = {t: float(np.mean(v)) for t, v in table.items()}
    best = max(means, key=means.get)
    print("baseline threshold on phantoms:", best, "mean Dice by threshold:", means)
    return best, means


def case_scores(predicted: np.ndarray, truth: np.ndarray, voxel: float) -> dict:
    """mask_scores, recall by lesion size and the lesion-load error in mL."""
    row = mask_scores(predicted, truth, voxel)
    for (lo, hi), (found, total) in zip(
        SIZE_BINS_MM3, recall_by_size(predicted, truth, voxel, DetectionRule()), strict=True
    ):
        row[f"recall_{lo:g}-{hi:g}mm3"] = found / total if total else float("nan")
        row[f"lesions_{lo:g}-{hi:g}mm3"] = total
    row["load_error_ml"] = (row["predicted_mm3"] - row["truth_mm3"]) / 1000.0
    return row


def cross_sectional_scores(
    data: Path,
    work: Path,
    default_model: Path,
    case_models: dict[str, Path],
    nprocs: int,
    threshold: float,
    figures: Path | None,
) -> dict:
    """Each labelled case scored by its model (leave-one-out) and by the baseline."""
    truth_dir = data / "derivatives" / "manual"
    labels = sorted(p.name.removeprefix("sub-") for p in truth_dir.glob("sub-*"))
    results = {}
    for label in labels:
        model = case_models.get(label, default_model)
        out = work / f"cross_out_{model.stem}"
        seconds = run_participant(data, out, work / "cross_work", model, nprocs, [label])
        pairs, _ = find_pairs(out, truth_dir)  # other cases' truths: no prediction yet
        (pair,) = [p for p in pairs if p.map == "lesion" and p.prediction.image == f"sub-{label}"]
        flair, brain, voxel, min_voxels = session_images(pair.prediction.path)
        truth = ants.image_read(str(pair.truth.path)).numpy() > 0
        predicted = ants.image_read(str(pair.prediction.path)).numpy() > 0
        base = baseline_mask(robust_z(flair, brain), threshold, min_voxels)
        results[label] = {
            "model": model.name,
            "leave_one_out": label in case_models,
            "participant_seconds": round(seconds, 1),
            "model_scores": case_scores(predicted, truth, voxel),
            "baseline_scores": case_scores(base, truth, voxel),
            "model_by_threshold": by_threshold(pair.prediction.path, truth, voxel, min_voxels),
        }
        if figures is not None:
            outline_figure(
                flair,
                truth,
                predicted,
                base,
                figures / f"{model.stem}_sub-{label}.png",
                f"sub-{label}: truth (green), {model.stem} (red), baseline (cyan)",
            )
    return results


def by_threshold(mask_path: Path, truth: np.ndarray, voxel: float, min_voxels: int) -> dict:
    """Voxel Dice and lesion F1 (MSSEG rule) of the model's published probabilities at each
    of MODEL_THRESHOLDS: how much the card's threshold leaves on the table."""
    stem = str(mask_path).removesuffix(OUTPUTS["lesion_mask"].stem())
    prob = ants.image_read(stem + OUTPUTS["probseg"].stem()).numpy()
    table = {}
    for t in MODEL_THRESHOLDS:
        predicted = baseline_mask(prob, float(t), min_voxels)
        detection = lesion_detection(predicted, truth, voxel, DetectionRule())
        table[float(t)] = {"dice": dice(predicted, truth), "lesion_f1_msseg": detection.f1}
    return table


def outline_figure(
    flair: np.ndarray,
    truth: np.ndarray,
    model: np.ndarray,
    base: np.ndarray,
    path: Path,
    title: str,
) -> None:
    """Nine axial slices through the lesions: outlines of truth, model and baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    load = (truth | model).sum(axis=(0, 1))
    slices = np.flatnonzero(load)
    picks = slices[np.linspace(0, len(slices) - 1, 9).astype(int)] if slices.size else [
        flair.shape[2] // 2] * 9  # fmt: skip
    top = np.percentile(flair[flair > 0], 99.5) if (flair > 0).any() else 1.0
    fig, axes = plt.subplots(3, 3, figsize=(12, 13))
    for ax, k in zip(axes.flat, picks, strict=True):
        ax.imshow(flair[:, :, k].T, cmap="gray", origin="lower", vmin=0, vmax=top)
        for mask, colour in ((truth, "lime"), (model, "red"), (base, "cyan")):
            if mask[:, :, k].any():
                ax.contour(mask[:, :, k].T, [0.5], colors=colour, linewidths=0.7)
        ax.set_title(f"slice {k}", fontsize=8)
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def print_table(results: dict) -> None:
    """One line per case: model and baseline side by side."""
    keys = ("dice", "lesion_f1_msseg", "recall_10-30mm3", "recall_30-100mm3",
            "recall_100-infmm3", "load_error_ml")  # fmt: skip
    print("case  " + "  ".join(f"{k:>18}" for k in keys))
    for label, row in results.items():
        for who in ("model", "baseline"):
            values = row[f"{who}_scores"]
            name = row["model"] if who == "model" else "baseline"
            print(f"{label} {name[:24]:>24} " + " ".join(f"{values[k]:18.3f}" for k in keys))


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
        later = sorted((out / sub).glob(f"ses-*/anat/{sub}_ses-*_{OUTPUTS['change_dseg'].stem()}"))
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
    parser.add_argument("--cross-sectional", type=Path)
    parser.add_argument(
        "--case-model", action="append", default=[], metavar="LABEL=MODEL",
        help="score participant LABEL of --cross-sectional with MODEL (leave-one-out)",
    )  # fmt: skip
    parser.add_argument("--baseline-threshold", type=float, help="default: chosen on --phantom")
    parser.add_argument("--figures", type=Path)
    parser.add_argument("--work", type=Path, required=True, help="outputs and work folders")
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--change-rule", default="evidence", help="the app's --change-rule (longitudinal data)"
    )
    parser.add_argument(
        "--sessions", default="joint", choices=("joint", "independent"),
        help="the app's --sessions (longitudinal data)",
    )  # fmt: skip
    parser.add_argument(
        "--reference-model", type=Path,
        help="also score --phantom and --longitudinal with this model (say, the one it replaces)",
    )  # fmt: skip
    parser.add_argument("--record-in-card", action="store_true")
    args = parser.parse_args()
    results: dict = {"model": args.model.name, "change_rule": args.change_rule,
                     "sessions": args.sessions}  # fmt: skip
    app_args = ("--change-rule", args.change_rule, "--sessions", args.sessions)
    method = f"{args.change_rule}_{args.sessions}"
    case_models = {k: Path(v) for k, v in (item.split("=", 1) for item in args.case_model)}
    threshold = args.baseline_threshold
    for key, data, score in (
        ("phantom", args.phantom, phantom_scores),
        ("longitudinal", args.longitudinal, longitudinal_scores),
    ):
        if data is None:
            continue
        if args.reference_model is not None:
            out = args.work / f"{key}_out_{method}_{args.reference_model.stem}"
            run_participant(
                data, out, args.work / f"{key}_work", args.reference_model, args.nprocs,
                app_args=app_args,
            )  # fmt: skip
            results.setdefault("reference", {"model": args.reference_model.name})
            results["reference"][key] = score(data, out)
        out = args.work / f"{key}_out_{method}"
        seconds = run_participant(
            data, out, args.work / f"{key}_work", args.model, args.nprocs, app_args=app_args
        )
        results[key] = {"participant_seconds": round(seconds, 1), **score(data, out)}
        if key == "phantom":
            pairs, _ = find_pairs(out, data / "derivatives" / "truth")
            chosen, by_threshold = choose_baseline_threshold(
                [p for p in pairs if p.map == "lesion"]
            )
            threshold = chosen if threshold is None else threshold
            results["baseline"] = {"threshold": threshold, "phantom_dice": by_threshold}
    if args.cross_sectional:
        if threshold is None:
            parser.error("--cross-sectional needs --phantom or --baseline-threshold")
        results["cross_sectional"] = cross_sectional_scores(
            args.cross_sectional, args.work, args.model, case_models, args.nprocs, threshold,
            args.figures,
        )  # fmt: skip
        print_table(results["cross_sectional"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float) + "\n")
    if args.record_in_card:
        update_card(args.model, accuracy={
            **read_card(args.model).get("accuracy", {}),
            "measured_with": "benchmarks/eval_models.py",
            **{k: v for k, v in results.items() if k != "model"},
        })  # fmt: skip


if __name__ == "__main__":
    main()
