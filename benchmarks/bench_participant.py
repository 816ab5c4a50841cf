"""Wall time, node times and accuracy of one two-session participant run, before and after a
change (printed figures, never asserted).

Each configuration is the installed command run as a user would, from a source tree: the
working tree ("after") and, with ``--baseline REF``, a git worktree of REF ("before"), run
interleaved ``--repeats`` times on the same inputs, so machine load hits both alike. Per run:
wall time, peak memory, node seconds per stage (Nipype's node results), and against the
dataset's truth (``derivatives/truth``, as the phantom and rescan kits write it): the error
of the session 2 -> session 1 pose over session 2's brain (mm), brain-mask Dice, each
session's lesion Dice and the change classes found.

Inputs: a 1 mm phantom participant (default), or ``--bids`` any dataset with such truth, e.g.
a real case's no-change rescan pair made with the rescan kit::

    mdgru-bids-phantom PAIR --rescan-of sub-c26_FLAIR.nii.gz --rescan-t1w sub-c26_T1w.nii.gz \\
        --rescan-lesion-mask sub-c26_desc-lesion_mask.nii.gz --seed 0

Usage: python benchmarks/bench_participant.py [--bids DIR] [--model flair|flair-t1w|PATH]
    [--baseline REF] [--repeats N] [--nprocs N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import psutil
from nipype.utils.filemanip import loadpkl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mdgru_bids.io_spec import OUTPUTS  # noqa: E402
from mdgru_bids.lesions.change import CHANGE_LABELS  # noqa: E402
from mdgru_bids.lesions.metrics import dice  # noqa: E402
from mdgru_bids.phantom import make_dataset  # noqa: E402
from mdgru_bids.transforms import apply_to_points, mask_points, read_linear  # noqa: E402

#: Node name → stage, for the per-stage table (first match wins).
STAGES = {
    "n4": "N4 bias correction", "brain_mask": "brain mask (affine to template)",
    "t1w_to_flair": "T1w → FLAIR rigid", "t1w_resample": "resampling",
    "subject_space": "subject space (rigid)", "to_template": "template registration",
    "to_subject": "resampling", "to_session": "resampling", "probseg_to_template": "resampling",
    "subject_mean": "resampling", "segment": "MD-GRU segmentation",
    "subject_lesions": "lesions and change", "lesion_table": "lesion tables",
}  # fmt: skip
TRUTH_FLAIR_TO_SUBJECT = "from-FLAIR_to-subject_mode-image_xfm.txt"


def watch_memory(proc: subprocess.Popen, every: float = 0.5) -> tuple[float, float]:
    """Wait for ``proc``; return the peak RSS (GiB) of its largest process and of its whole
    process tree (Nipype workers and the ANTs processes they start), sampled."""
    root = psutil.Process(proc.pid)
    peak_one = peak_all = 0.0
    while proc.poll() is None:
        try:
            rss = [p.memory_info().rss for p in [root, *root.children(recursive=True)]]
        except psutil.Error:  # a process ended while we looked
            continue
        peak_one, peak_all = max(peak_one, max(rss)), max(peak_all, sum(rss))
        time.sleep(every)
    return peak_one / 2**30, peak_all / 2**30


def stage_of(node: str) -> str:
    return next((stage for key, stage in STAGES.items() if key in node), "other")


def run(source: Path, bids: Path, work: Path, model: str, nprocs: int) -> dict:
    """One participant run of the tree at ``source``; wall time, memory and node times."""
    argv = [
        sys.executable, "-m", "mdgru_bids.cli.run", str(bids), str(work / "out"),
        "participant", "-w", str(work / "work"), "--model", model, "--nprocs", str(nprocs),
        "--skip-bids-validation",
    ]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(source)}  # with cwd elsewhere: `-m` puts cwd first
    start, started_at = time.perf_counter(), time.time()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=work.parent
        )
        peak_one, peak_all = watch_memory(proc)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            err.seek(0)
            sys.exit(err.read()[-3000:])
    stages: dict[str, float] = defaultdict(float)
    timeline = []  # (node, start, end) in seconds from the first node's start
    for result in (work / "work").rglob("result_*.pklz"):
        node = result.parent.name
        if node.startswith("ds_"):  # data sinks: their outputs have moved on
            continue
        runtime = loadpkl(result).runtime
        if getattr(runtime, "startTime", None):
            stages[stage_of(node)] += float(runtime.duration)
            start, end = (datetime.fromisoformat(t) for t in (runtime.startTime, runtime.endTime))
            timeline.append([node, start.timestamp(), end.timestamp()])
    first, last = min(t[1] for t in timeline), max(t[2] for t in timeline)
    timeline = [[n, round(a - first, 1), round(b - first, 1)] for n, a, b in timeline]
    return {
        "wall_seconds": round(wall, 1),
        # start-up (imports, BIDS query, workflow graph) and the end (report, publishing)
        "seconds_before_first_node": round(first - started_at, 1),
        "seconds_after_last_node": round(started_at + wall - last, 1),
        "peak_rss_gib_largest_process": round(peak_one, 2),
        "peak_rss_gib_all_processes": round(peak_all, 2),
        "node_seconds_by_stage": {k: round(v, 1) for k, v in sorted(stages.items())},
        "node_timeline_s": sorted(timeline, key=lambda t: t[1]),
    }


def accuracy(bids: Path, out: Path) -> dict:
    """The run's pose, brain mask, lesions and change against the dataset's truth."""
    (sub,) = [p.name.removeprefix("sub-") for p in out.glob("sub-*") if p.is_dir()]
    truth = bids / "derivatives" / "truth" / f"sub-{sub}"
    sessions = ("01", "02")

    def true(ses: str, name: str) -> Path:
        return truth / f"ses-{ses}" / "anat" / f"sub-{sub}_ses-{ses}_{name}"

    found = [read_linear(OUTPUTS["to_subject"].path(out, sub, s)) for s in sessions]
    real = [read_linear(true(s, TRUTH_FLAIR_TO_SUBJECT)) for s in sessions]
    found_2to1 = np.linalg.inv(found[0]) @ found[1]
    true_2to1 = np.linalg.inv(real[0]) @ real[1]
    mask = nib.load(OUTPUTS["brain_mask"].path(out, sub, "02"))
    points = mask_points(np.asanyarray(mask.dataobj), mask.affine)
    error = np.linalg.norm(
        apply_to_points(found_2to1, points) - apply_to_points(true_2to1, points), axis=1
    )
    residual = np.linalg.inv(true_2to1) @ found_2to1
    angle = np.degrees(np.arccos(np.clip((np.trace(residual[:3, :3]) - 1) / 2, -1, 1)))
    row = {
        "pose_error_mean_mm": round(float(error.mean()), 3),
        "pose_error_max_mm": round(float(error.max()), 3),
        "pose_error_rotation_deg": round(float(angle), 3),
        "pose_error_translation_mm": round(float(np.linalg.norm(residual[:3, 3])), 3),
    }
    for ses in sessions:
        truth_brain = true(ses, "desc-brain_mask.nii.gz")
        if truth_brain.is_file():
            ours = np.asanyarray(nib.load(OUTPUTS["brain_mask"].path(out, sub, ses)).dataobj)
            row[f"brain_dice_ses-{ses}"] = round(
                dice(ours > 0, np.asanyarray(nib.load(truth_brain).dataobj) > 0), 4
            )
        lesions = np.asanyarray(nib.load(OUTPUTS["lesion_mask"].path(out, sub, ses)).dataobj)
        truth_lesions = np.asanyarray(nib.load(true(ses, "label-lesion_mask.nii.gz")).dataobj)
        row[f"lesion_dice_ses-{ses}"] = round(dice(lesions > 0, truth_lesions > 0), 4)
    change = pd.read_csv(OUTPUTS["change_table"].path(out, sub, "02"), sep="\t")
    row["change_classes"] = {
        name: int((change["class"] == name).sum()) for name in CHANGE_LABELS.values()
    }
    return row


def print_table(runs: list[dict]) -> None:
    names = list(dict.fromkeys(r["config"] for r in runs))
    stages = sorted({s for r in runs for s in r["node_seconds_by_stage"]})
    print(f"{'':40}" + "".join(f"{n[:22]:>24}" for n in names))

    def line(label: str, value) -> None:
        cells = [[value(r) for r in runs if r["config"] == n] for n in names]
        print(f"{label:40}" + "".join(f"{' / '.join(map(str, c)):>24}" for c in cells))

    line("wall time, s", lambda r: r["wall_seconds"])
    line("  before the first node, s", lambda r: r["seconds_before_first_node"])
    line("  after the last node, s", lambda r: r["seconds_after_last_node"])
    for stage in stages:
        line(f"  {stage}, node s", lambda r, s=stage: r["node_seconds_by_stage"].get(s, 0.0))
    line("peak RSS largest process, GiB", lambda r: r["peak_rss_gib_largest_process"])
    for key in [k for k in runs[0] if k.startswith(("pose_", "brain_dice", "lesion_dice"))]:
        line(key, lambda r, k=key: r[k])
    line("change classes", lambda r: ",".join(f"{v}" for v in r["change_classes"].values()))
    print("change classes: " + ", ".join(runs[0]["change_classes"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bids", type=Path, help="dataset with truth (default: a phantom)")
    parser.add_argument("--model", default="flair", help="flair, flair-t1w or a model file")
    parser.add_argument("--baseline", metavar="REF", help="also run this git commit, interleaved")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--nprocs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        configs = {"after (working tree)": ROOT}
        if args.baseline:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tmp / "before"),
                 args.baseline], check=True, capture_output=True,
            )  # fmt: skip
            configs = {f"before ({args.baseline})": tmp / "before"} | configs
        bids = args.bids or make_dataset(
            tmp / "bids", participants=1, sessions=2, seed=5, resolution=1.0
        )
        runs = []
        try:
            for repeat in range(args.repeats):
                for k, (name, source) in enumerate(configs.items()):
                    work = tmp / f"run{repeat}_{k}"
                    row = {"config": name, "repeat": repeat}
                    row |= run(source, bids.absolute(), work, args.model, args.nprocs)
                    row |= accuracy(bids, work / "out")
                    runs.append(row)
                    print(f"{name}, repeat {repeat}: {row['wall_seconds']} s", flush=True)
        finally:
            if args.baseline:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(tmp / "before")], check=False)  # fmt: skip
    print(f"1 participant × 2 sessions ({args.bids or 'phantom, seed 5, 1 mm'}), model "
          f"{args.model}, {args.nprocs} processes; runs interleaved, listed in order")  # fmt: skip
    print_table(runs)
    if args.json:
        result = {"bids": str(args.bids or "phantom seed 5, 1 mm"), "model": args.model,
                  "nprocs": args.nprocs, "cpu_count": os.cpu_count(), "runs": runs}  # fmt: skip
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
