"""Speed of the MS phantom generator: seconds per subject-session at 1 mm and at 3 mm.

Each configuration runs in a fresh process, so its time includes what a command-line run
pays once (building the template anatomy on the work grid, shown as ``setup_s``) and its
peak memory is its own. ``python benchmarks/bench_phantom.py [--json]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (resolution mm, participants, sessions); the last is the test fixture's dataset.
CONFIGS = ((1.0, 1, 2), (3.0, 1, 2), (3.0, 2, 2))


def measure(resolution: float, participants: int, sessions: int) -> dict[str, float]:
    """Build one dataset in a temporary directory and time it."""
    from mdgru_bids.phantom import make_dataset
    from mdgru_bids.phantom.anatomy import load_anatomy

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        load_anatomy(resolution)
        setup = time.perf_counter() - start
        out = make_dataset(Path(tmp) / "ds", participants, sessions, seed=0, resolution=resolution)
        total = time.perf_counter() - start
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {
        "resolution_mm": resolution,
        "participants": participants,
        "sessions": sessions,
        "setup_s": round(setup, 2),
        "total_s": round(total, 2),
        "s_per_subject_session": round((total - setup) / (participants * sessions), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "dataset_mb": round(size / 1e6, 1),
    }


def _in_fresh_process(config: tuple[float, int, int]) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--one", *map(str, config)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def _table(rows: list[dict[str, float]]) -> str:
    widths = {h: max(len(h), 6) for h in rows[0]}
    lines = ["  ".join(f"{h:>{w}}" for h, w in widths.items())]
    lines += ["  ".join(f"{row[h]:>{w}}" for h, w in widths.items()) for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--one", nargs=3, metavar=("MM", "N", "K"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        mm, n, k = args.one
        print(json.dumps(measure(float(mm), int(n), int(k))))
        return
    rows = [_in_fresh_process(config) for config in CONFIGS]
    print(json.dumps(rows, indent=2) if args.json else _table(rows))


if __name__ == "__main__":
    main()
