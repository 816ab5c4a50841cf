"""The ``mdgru-bids`` command line (BIDS-Apps conventions, as in fMRIPrep and sMRIPrep)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mdgru_bids import __version__
from mdgru_bids.cli.common import Parser
from mdgru_bids.lesions.change import ChangeThresholds
from mdgru_bids.lesions.longitudinal import CHANGE_RULES
from mdgru_bids.model.compute import DEFAULT_DEVICE, DEFAULT_PRECISION, PRECISIONS

CHANGE = ChangeThresholds()  # the defaults


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mdgru-bids",
        description="Segment multiple-sclerosis lesions with MD-GRU networks and track their "
        "change across sessions (a BIDS-App).",
    )
    parser.add_argument("bids_dir", type=Path, help="the root of the input BIDS dataset")
    parser.add_argument("output_dir", type=Path, help="where the derivatives go")
    parser.add_argument("analysis_level", help="'participant' or 'group'")
    parser.add_argument("--version", action="version", version=f"mdgru-bids {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (repeat for more)"
    )

    sel = parser.add_argument_group("selecting data")
    sel.add_argument(
        "--participant-label",
        "--participant_label",
        nargs="+",
        metavar="LABEL",
        help="participants to process (with or without 'sub-'); default: all",
    )
    sel.add_argument(
        "--session-label",
        nargs="+",
        metavar="LABEL",
        help="sessions to process (with or without 'ses-'); default: all",
    )
    sel.add_argument(
        "--bids-filter-file",
        type=Path,
        metavar="FILE",
        help="JSON: pybids filters per modality, e.g. "
        '{"flair": {"acquisition": "3D"}, "t1w": {"run": 1}}',
    )
    sel.add_argument(
        "--skip-bids-validation",
        action="store_true",
        help="do not run the BIDS validator on the input",
    )

    perf = parser.add_argument_group("resources")
    perf.add_argument(
        "-w",
        "--work-dir",
        type=Path,
        default=Path("work"),
        help="intermediate files; re-running with the same folder resumes (default: ./work)",
    )
    perf.add_argument(
        "--nprocs",
        type=_positive_int,
        metavar="N",
        help="processes Nipype may run at once (default: all CPUs)",
    )
    perf.add_argument(
        "--omp-nthreads",
        type=_positive_int,
        metavar="N",
        help="threads per process (default: nprocs - 1, at least 1, at most 8)",
    )
    perf.add_argument(
        "--multithreaded-registration",
        action="store_true",
        help="run ANTs registrations with --omp-nthreads threads: faster, but then ITK adds up "
        "the mutual information in a varying order, so brain masks, transforms and everything "
        "after them can differ slightly between runs (default: one thread, identical reruns)",
    )
    perf.add_argument(
        "--mem-mb", type=_positive_int, metavar="MB", help="memory Nipype may plan for"
    )
    perf.add_argument(
        "--device",
        default=DEFAULT_DEVICE,
        help="where the network runs: auto, cpu, cuda or cuda:N (default: auto)",
    )
    perf.add_argument(
        "--precision",
        default=DEFAULT_PRECISION,
        choices=PRECISIONS,
        help="network arithmetic (default: bfloat16 where the hardware has it)",
    )
    perf.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="test-time augmentation: average the lesion probabilities over the image and its "
        "three mirror images (four times the network time; default: off)",
    )
    perf.add_argument(
        "--nipype-plugin-file",
        type=Path,
        metavar="FILE",
        help="YAML with 'plugin' and 'plugin_args' (e.g. SLURM)",
    )
    perf.add_argument(
        "--stop-on-first-crash",
        action="store_true",
        help="stop at the first failing step instead of finishing what can be",
    )

    model = parser.add_argument_group("model and thresholds")
    model.add_argument(
        "--model",
        metavar="NAME|PATH",
        help="a bundled model, flair (the default: FLAIR only) or flair-t1w (FLAIR and T1w), "
        "or an mdgru-bids model file (.safetensors)",
    )
    model.add_argument(
        "--template",
        metavar="NAME",
        help="template for brain masks and group statistics: a TemplateFlow name found in "
        "TEMPLATEFLOW_HOME, or MNI152NLin2009aSym (embedded, always there). Default: "
        "MNI152NLin2009cAsym where TEMPLATEFLOW_HOME has it, else the embedded one; the group "
        "level defaults to the template of the participant outputs",
    )
    model.add_argument(
        "--template-resolution",
        type=int,
        default=1,
        metavar="MM",
        help="the template's resolution, TemplateFlow's res- (default: 1; the embedded "
        "template has 1 and 2)",
    )
    model.add_argument(
        "--lesion-threshold",
        type=_fraction,
        metavar="P",
        help="lesion probability threshold (default: the model's)",
    )
    model.add_argument(
        "--min-lesion-volume",
        type=float,
        metavar="MM3",
        help="smallest lesion kept, mm³ (default: the model's)",
    )
    model.add_argument(
        "--min-change-volume",
        type=float,
        default=CHANGE.min_change_mm3,
        metavar="MM3",
        help="smallest volume change that makes a lesion enlarging or shrinking "
        f"(default: {CHANGE.min_change_mm3:g} mm³)",
    )
    model.add_argument(
        "--min-change-fraction",
        type=float,
        default=CHANGE.min_change_fraction,
        metavar="F",
        help=f"... and as a fraction of its earlier volume (default: {CHANGE.min_change_fraction})",
    )
    model.add_argument(
        "--change-rule",
        choices=CHANGE_RULES,
        default="evidence",
        help="evidence (default): a lesion is new, enlarging, shrinking or resolved only where "
        "the other session clearly shows it was not (or is no longer) there: low lesion "
        "probability and a FLAIR rise (fall) beyond that of the tissue around it; difference: "
        "the thresholded masks differenced, as most tools do (for comparison; flickers on "
        "rescans)",
    )
    model.add_argument(
        "--sessions",
        choices=("joint", "independent"),
        default="joint",
        help="joint (default): where no lesion changed, every session's lesion probability is "
        "the mean of all sessions' (weighted by 1 / acquired voxel volume squared), so "
        "unchanged lesions have one volume; independent: each "
        "session thresholded on its own",
    )

    other = parser.add_argument_group("other")
    other.add_argument(
        "--reports-only",
        action="store_true",
        help="participant level: only (re)write the HTML reports from the derivatives already "
        "in OUTPUT_DIR, without processing",
    )
    other.add_argument(
        "--write-graph", action="store_true", help="write the workflow graph to the logs folder"
    )
    other.add_argument(
        "--random-seed",
        type=int,
        default=0,
        metavar="N",
        help="seed for every random step; the same seed, inputs and settings give the same "
        "outputs on one machine (default: 0)",
    )
    return parser
