"""``mdgru-bids-phantom``: write a synthetic longitudinal MS BIDS dataset with its truth."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from mdgru_bids import __version__
from mdgru_bids.cli.common import Parser
from mdgru_bids.errors import EXIT_BAD_DATA, EXIT_MISSING_INPUT, EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mdgru-bids-phantom",
        description="Write a synthetic longitudinal multiple-sclerosis BIDS dataset, or (with "
        "--rescan-of) a no-change rescan pair of a given session, with the lesion truth as a "
        "derivative dataset in OUT_DIR/derivatives/truth.",
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
    rescan = parser.add_argument_group(
        "no-change rescan pair",
        "instead of a phantom, ses-01 = a given session as it is and ses-02 = the same head "
        "re-acquired (rigid motion, new grid, bias field, Rician noise) with no lesion change",
    )
    rescan.add_argument("--rescan-of", type=Path, metavar="FLAIR", help="the session's FLAIR")
    rescan.add_argument("--rescan-t1w", type=Path, metavar="T1W", help="its T1w, moved alike")
    rescan.add_argument(
        "--rescan-lesion-mask", type=Path, metavar="MASK", help="its lesion mask (the truth)"
    )
    rescan.add_argument(
        "--slice-thickness",
        type=float,
        metavar="MM",
        help="ses-02 in slices this thick (boxcar profile; default: 1 mm isotropic)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="report progress")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0, 64 usage, 65 bad data, 66 missing input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s"
    )
    if args.rescan_of is None:
        if args.rescan_t1w or args.rescan_lesion_mask or args.slice_thickness:
            parser.error(
                "--rescan-t1w, --rescan-lesion-mask and --slice-thickness need --rescan-of"
            )
        return _phantom(parser, args)
    return _rescan(parser, args)


def _rescan(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The no-change rescan pair of one session."""
    for path in (args.rescan_of, args.rescan_t1w, args.rescan_lesion_mask):
        if path is not None and not path.is_file():
            print(f"{parser.prog}: error: {path} does not exist; give an existing NIfTI file",
                  file=sys.stderr)  # fmt: skip
            return EXIT_MISSING_INPUT
    if args.slice_thickness is not None and not 1.0 <= args.slice_thickness <= 20.0:
        parser.error("--slice-thickness must be between 1 and 20 mm")
    from nibabel.filebasedimages import ImageFileError

    from mdgru_bids.phantom.rescan import Rescan, make_rescan_dataset

    try:
        out = make_rescan_dataset(
            args.out_dir, args.rescan_of, args.rescan_t1w, args.rescan_lesion_mask,
            seed=args.seed, rescan=Rescan(slice_mm=args.slice_thickness),
            overwrite=args.overwrite,
        )  # fmt: skip
    except (FileExistsError, NotADirectoryError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, ImageFileError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_DATA
    print(out)
    return 0


def _phantom(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """A synthetic longitudinal dataset."""
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
