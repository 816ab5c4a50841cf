"""``mdgru-bids-phantom``: write a synthetic longitudinal MS BIDS dataset with its truth."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from mdgru_bids import __version__
from mdgru_bids.cli.common import Parser
from mdgru_bids.errors import EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mdgru-bids-phantom",
        description="Write a synthetic longitudinal multiple-sclerosis BIDS dataset, with the "
        "lesion truth as a derivative dataset in OUT_DIR/derivatives/truth.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="new or empty directory to create")
    parser.add_argument("--participants", type=int, default=2, metavar="N")
    parser.add_argument("--sessions", type=int, default=2, metavar="K")
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="random seed (same seed, same dataset)"
    )
    parser.add_argument(
        "--resolution",
        type=float,
        default=1.0,
        metavar="MM",
        help="finest voxel size in mm; others scale with it (3 = small, fast)",
    )
    parser.add_argument(
        "--deface",
        action="store_true",
        help="cut away the anterior-inferior head, as defacing tools do",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing phantom dataset in OUT_DIR"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="report progress")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0, or 64 for usage errors)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s"
    )
    # Imported only now, so --help and usage errors stay instant.
    from mdgru_bids.phantom.dataset import check_settings, make_dataset

    try:
        check_settings(args.participants, args.sessions, args.seed, args.resolution)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        out = make_dataset(
            args.out_dir,
            participants=args.participants,
            sessions=args.sessions,
            seed=args.seed,
            resolution=args.resolution,
            overwrite=args.overwrite,
            deface=args.deface,
        )
    except (FileExistsError, NotADirectoryError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
