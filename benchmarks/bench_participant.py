"""Wall time and peak memory of one participant run (printed figures, never asserted).

A 1 mm phantom participant with two sessions, the embedded 1 mm template (nilearn's MNI ICBM152
2009a, ``--template MNI152NLin2009aSym``), the default network (untrained unless --model is
given), run through the installed command as a user would. Per-stage times come from Nipype's
node results.

Usage: python benchmarks/bench_participant.py [--resolution MM] [--model PATH] [--json FILE]
                                              [--multithreaded-registration]
(the default run is the deterministic one: ANTs registrations on one thread each)
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
from pathlib import Path

import psutil
import torch
from nipype.utils.filemanip import loadpkl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mdgru_bids.model.files import make_card, save_model  # noqa: E402
from mdgru_bids.model.network import build_network, default_config  # noqa: E402
from mdgru_bids.phantom import make_dataset  # noqa: E402
from mdgru_bids.templates import EMBEDDED_TEMPLATE  # noqa: E402

#: Node name → stage, for the per-stage table.
STAGES = {
    "n4": "N4 bias correction", "brain_mask": "brain mask (affine to template)",
    "t1w_to_flair": "T1w → FLAIR rigid", "subject_space": "subject space (rigid)",
    "to_subject": "resampling", "to_session": "resampling", "resample": "resampling",
    "segment": "MD-GRU segmentation", "subject_lesions": "lesion masks and change",
    "lesion_table": "lesion masks and tables", "change_to_session": "resampling",
    "to_template": "template registration (affine+SyN)",
    "probseg_to_template": "resampling", "subject_mean": "resampling",
}  # fmt: skip


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
    for key, stage in STAGES.items():
        if key in node:
            return stage
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=float, default=1.0)
    parser.add_argument("--model", type=Path, help="a trained model (default: untrained)")
    parser.add_argument("--nprocs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--multithreaded-registration",
        action="store_true",
        help="pass it on: registrations on --nprocs threads (faster, not repeatable)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bids = make_dataset(
            tmp / "bids", participants=1, sessions=2, seed=5, resolution=args.resolution
        )
        model = args.model
        if model is None:
            torch.manual_seed(0)
            cfg = default_config(in_channels=2)
            model = save_model(
                tmp / "default_untrained.safetensors",
                build_network(cfg),
                make_card(cfg, ["FLAIR", "T1w"], patch_size=[96, 96, 96], overlap=[24, 24, 24]),
            )
        argv = [
            sys.executable,
            "-m",
            "mdgru_bids.cli.run",
            str(bids),
            str(tmp / "out"),
            "participant",
            "-w",
            str(tmp / "work"),
            "--model",
            str(model),
            "--nprocs",
            str(args.nprocs),
            "--omp-nthreads",
            str(args.nprocs),
            "--template",
            EMBEDDED_TEMPLATE,
        ] + (["--multithreaded-registration"] if args.multithreaded_registration else [])
        start = time.perf_counter()
        with tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
            peak_one, peak_all = watch_memory(proc)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                err.seek(0)
                sys.exit(err.read()[-2000:])
        stages: dict[str, float] = defaultdict(float)
        for result in (tmp / "work").rglob("result_*.pklz"):
            node = result.parent.name
            if node.startswith("ds_"):
                continue
            runtime = loadpkl(result).runtime
            stages[stage_of(node)] += float(getattr(runtime, "duration", 0.0) or 0.0)
    out = {
        "resolution_mm": args.resolution,
        "sessions": 2,
        "nprocs": args.nprocs,
        "multithreaded_registration": args.multithreaded_registration,
        "wall_seconds": wall,
        "peak_rss_gib_largest_process": peak_one,
        "peak_rss_gib_all_processes": peak_all,
        "node_seconds_by_stage": dict(sorted(stages.items(), key=lambda kv: -kv[1])),
    }
    print(f"1 participant × 2 sessions at {args.resolution} mm, {args.nprocs} processes")
    print(
        f"wall time {wall:.1f} s; peak RSS {peak_one:.2f} GiB (largest process), "
        f"{peak_all:.2f} GiB (all processes together)"
    )
    print("node time by stage (summed over nodes; they overlap in parallel):")
    for stage, seconds in out["node_seconds_by_stage"].items():
        print(f"  {stage:40} {seconds:8.1f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
