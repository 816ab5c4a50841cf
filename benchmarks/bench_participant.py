"""Wall time and peak memory of one participant run (printed figures, never asserted).

A 1 mm phantom participant with two sessions, a 1 mm template from nilearn's MNI ICBM152 2009a
(laid out as TEMPLATEFLOW_HOME), the default network (untrained unless --model is given), run
through the installed command as a user would. Per-stage times come from Nipype's node results.

Usage: python benchmarks/bench_participant.py [--resolution MM] [--model PATH] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from nipype.utils.filemanip import loadpkl
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mdgru_bids.model.files import make_card, save_model  # noqa: E402
from mdgru_bids.model.network import build_network, default_config  # noqa: E402
from mdgru_bids.phantom import make_dataset  # noqa: E402
from mdgru_bids.phantom.anatomy import TEMPLATE_FILE  # noqa: E402

#: Node name → stage, for the per-stage table.
STAGES = {
    "n4": "N4 bias correction", "brain_mask": "brain mask (affine to template)",
    "t1w_to_flair": "T1w → FLAIR rigid", "subject_space": "subject space (rigid)",
    "to_subject": "resampling", "to_session": "resampling", "resample": "resampling",
    "segment": "MD-GRU segmentation", "lesions": "lesion masks and tables",
    "lesion_table": "lesion masks and tables", "lesion_change": "change",
    "change_to_session": "resampling", "to_template": "template registration (affine+SyN)",
    "probseg_to_template": "resampling", "subject_mean": "resampling",
}  # fmt: skip


def template_home(folder: Path) -> Path:
    """TEMPLATEFLOW_HOME with nilearn's 1 mm MNI template and a brain mask from its GM+WM."""
    import nilearn

    data = Path(nilearn.__file__).parent / "datasets" / "data"
    t1 = nib.load(data / TEMPLATE_FILE.format("t1"))
    gm = nib.load(data / TEMPLATE_FILE.format("gm")).get_fdata()
    wm = nib.load(data / TEMPLATE_FILE.format("wm")).get_fdata()
    brain = ndimage.binary_dilation(ndimage.binary_fill_holes((gm + wm) / 255 > 0.5), iterations=2)
    tpl = folder / "tpl-MNI152NLin2009cAsym"
    tpl.mkdir(parents=True)
    nib.save(t1, tpl / "tpl-MNI152NLin2009cAsym_res-01_T1w.nii.gz")
    nib.save(
        nib.Nifti1Image(brain.astype(np.uint8), t1.affine),
        tpl / "tpl-MNI152NLin2009cAsym_res-01_desc-brain_mask.nii.gz",
    )
    return folder


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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bids = make_dataset(
            tmp / "bids", participants=1, sessions=2, seed=5, resolution=args.resolution
        )
        home = template_home(tmp / "templateflow")
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
        ]
        env = os.environ | {"TEMPLATEFLOW_HOME": str(home)}
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(done.stderr[-2000:])
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
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
        "wall_seconds": wall,
        "peak_rss_gib_largest_process": peak,
        "node_seconds_by_stage": dict(sorted(stages.items(), key=lambda kv: -kv[1])),
    }
    print(f"1 participant × 2 sessions at {args.resolution} mm, {args.nprocs} processes")
    print(f"wall time {wall:.1f} s, peak RSS of the largest process {peak:.2f} GiB")
    print("node time by stage (summed over nodes; they overlap in parallel):")
    for stage, seconds in out["node_seconds_by_stage"].items():
        print(f"  {stage:40} {seconds:8.1f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
