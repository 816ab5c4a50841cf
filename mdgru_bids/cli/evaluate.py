"""``mdgru-bids-evaluate``: score lesion masks and change maps against manual ones."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mdgru_bids import __version__
from mdgru_bids.cli.common import Parser, run_command

PROG = "mdgru-bids-evaluate"
DETECTION = ("msseg", "any-overlap")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Score mdgru-bids lesion masks (*_label-lesion_mask) and change maps "
        "(*_desc-lesionchange_dseg: new-lesion detection, labels 2 and 3) against manual "
        "ones in a BIDS derivative with the same entities (truth change as "
        "*_desc-lesionchange_dseg or *_label-newlesion_mask), on each session's own grid: "
        "voxel Dice, lesion-wise F1, precision and recall, absolute volume difference and "
        "95th-percentile Hausdorff distance, per image and as mean and median.",
    )
    parser.add_argument("pred_dir", type=Path, metavar="PRED_DIR", help="mdgru-bids derivatives")
    parser.add_argument("truth_dir", type=Path, metavar="TRUTH_DIR", help="manual masks (BIDS)")
    parser.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="write the table as TSV here and print it readably; without it the TSV goes to "
        "standard output and the readable table to standard error",
    )
    parser.add_argument(
        "--detection",
        choices=DETECTION,
        default="msseg",
        help="when a lesion counts as detected: as MSSEG-2 scored it (animaSegPerfAnalyzer: "
        "over 10%% covered, not mostly outside, lesions above 3 mm³; default), or any overlap",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (BIDS-Apps codes, see cli/common.py)."""
    return run_command(PROG, _main, argv)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    # Imported only now, so --help and usage errors stay instant.
    from mdgru_bids.atomic import replacing
    from mdgru_bids.evaluation import evaluate, find_pairs, pretty, write_tsv
    from mdgru_bids.lesions.metrics import ANY_OVERLAP, DetectionRule

    pairs, warnings = find_pairs(args.pred_dir, args.truth_dir)
    for warning in warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    table = evaluate(pairs, ANY_OVERLAP if args.detection == "any-overlap" else DetectionRule())
    if args.out is None:
        write_tsv(table, sys.stdout)
        print(pretty(table), file=sys.stderr)
        return 0
    with replacing(args.out) as tmp:
        write_tsv(table, tmp)
    print(pretty(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
