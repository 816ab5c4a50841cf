"""``mdgru-bids BIDS_DIR OUT_DIR participant|group``: checks first, then the Nipype run.

Everything that can be wrong with the input is checked before any processing starts, so a
bad dataset costs seconds and leaves nothing behind. Each participant runs as its own
workflow whose outputs are staged in the work folder and published into OUT_DIR only when
the whole participant succeeded: a failure never leaves partial derivatives.
"""

from __future__ import annotations

import os

os.environ.setdefault("NIPYPE_NO_ET", "1")  # no telemetry: compute nodes have no network

import argparse
import errno
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mdgru_bids.cli.common import configure_logging, run_command
from mdgru_bids.cli.parser import build_parser
from mdgru_bids.errors import (
    EXIT_OK,
    EXIT_PROCESSING,
    AppError,
    MissingInputError,
    UnknownLevelError,
    UsageError,
)

if TYPE_CHECKING:
    from mdgru_bids.collect import Subject

log = logging.getLogger("mdgru_bids")


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("mdgru-bids", _main, argv)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    if args.analysis_level not in ("participant", "group"):
        raise UnknownLevelError(
            f"unknown analysis level {args.analysis_level!r}: use participant or group"
        )
    if args.reports_only and args.analysis_level == "group":
        raise UsageError("--reports-only belongs to the participant level")
    processing = args.analysis_level == "participant" and not args.reports_only
    bids_dir, output_dir, work_dir = check_paths(args, processing)
    if args.analysis_level == "group":
        return run_group(args, bids_dir, output_dir)
    if args.reports_only:
        return run_reports(args, bids_dir, output_dir)
    return run_participants(args, bids_dir, output_dir, work_dir)


def check_paths(args: argparse.Namespace, processing: bool) -> tuple[Path, Path, Path]:
    """Absolute input, output and work folders; outputs may never go inside the input.

    Only processing creates folders; the group level and ``--reports-only`` read the outputs
    of an earlier participant run, so OUTPUT_DIR must hold them.
    """
    bids_dir = args.bids_dir.resolve()
    output_dir = args.output_dir.resolve()
    work_dir = args.work_dir.resolve()
    if not bids_dir.is_dir():
        raise MissingInputError(f"BIDS_DIR {args.bids_dir} does not exist")
    if not processing and not (output_dir / "dataset_description.json").is_file():
        raise MissingInputError(
            f"OUTPUT_DIR {args.output_dir} holds no mdgru-bids derivatives: run the participant "
            "level first"
        )
    folders = [("OUTPUT_DIR", output_dir)] + ([("--work-dir", work_dir)] if processing else [])
    for name, path in folders:
        if path == bids_dir or bids_dir in path.parents:
            raise UsageError(
                f"{name} {path} is inside the input dataset {bids_dir}: choose a folder outside it"
            )
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageError(f"cannot create {name} {path} ({err.strerror})") from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(f"{name} {path} is not writable: choose a folder you can write to")
    return bids_dir, output_dir, work_dir


def run_participants(
    args: argparse.Namespace, bids_dir: Path, output_dir: Path, work_dir: Path
) -> int:
    from mdgru_bids.collect import (
        check_image,
        collect_subjects,
        load_layout,
        read_filter_file,
        validate_bids,
    )
    from mdgru_bids.derivatives import init_derivatives
    from mdgru_bids.lesions.change import ChangeThresholds
    from mdgru_bids.lesions.longitudinal import CHANGE_RULES
    from mdgru_bids.model.compute import resolve_compute
    from mdgru_bids.model.files import choose_model
    from mdgru_bids.templates import template_for_run
    from mdgru_bids.workflows.execution import default_omp_nthreads, plugin_settings

    if not args.skip_bids_validation:
        validate_bids(bids_dir)
    layout = load_layout(bids_dir)
    queries = read_filter_file(args.bids_filter_file)
    subjects = collect_subjects(layout, args.participant_label, args.session_label, queries)
    model_path, card = choose_model(args.model)
    for subject in subjects:
        for session in subject.sessions:
            for image in (session.flair, session.t1w):
                if image is not None:
                    check_image(image)
            if "T1w" in card["inputs"] and session.t1w is None:
                raise MissingInputError(
                    f"the model {model_path.name} needs a T1w, and sub-{subject.label} "
                    f"ses-{session.label} has none: use a FLAIR-only model (--model flair)"
                )
    device, precision = resolve_compute(args.device, args.precision)  # recorded as used
    template = template_for_run(args.template, work_dir, args.template_resolution)
    plugin, plugin_args = plugin_settings(args.nipype_plugin_file, args.nprocs, args.mem_mb)
    from mdgru_bids.workflows.config import WorkflowConfig

    init_derivatives(output_dir, bids_dir)
    _configure_nipype(output_dir, work_dir, args.stop_on_first_crash)
    nprocs = plugin_args.get("n_procs", os.cpu_count() or 1)
    omp_nthreads = args.omp_nthreads or default_omp_nthreads(nprocs)
    failed = []
    for subject in subjects:
        cfg = WorkflowConfig(
            bids_dir=bids_dir,
            derivatives_dir=work_dir / "staging" / f"sub-{subject.label}",
            model=model_path,
            model_inputs=tuple(card["inputs"]),
            template=template,
            device=str(device),
            precision=precision,
            tta=args.tta,
            omp_nthreads=omp_nthreads,
            registration_threads=omp_nthreads if args.multithreaded_registration else 1,
            seed=args.random_seed,
            threshold=args.lesion_threshold or card["threshold"],
            min_lesion_mm3=(
                args.min_lesion_volume
                if args.min_lesion_volume is not None
                else card["min_lesion_mm3"]
            ),
            change=ChangeThresholds(args.min_change_volume, args.min_change_fraction),
            evidence=CHANGE_RULES[args.change_rule],
            consistent=args.sessions == "joint",
        )
        succeeded = run_subject(
            subject, cfg, work_dir, output_dir, plugin, plugin_args, args.write_graph
        )
        (all_sessions,) = collect_subjects(layout, [subject.label], None, queries)
        write_report(output_dir, all_sessions, work_dir / "templates", nprocs)
        if not succeeded:
            failed.append(subject.label)
            if args.stop_on_first_crash:
                break
    if failed:
        log.error(
            "participant(s) failed: %s; crash files are in %s",
            ", ".join(failed),
            output_dir / "logs",
        )
        return EXIT_PROCESSING
    return EXIT_OK


def write_report(output_dir: Path, subject: Subject, templates: Path, nprocs: int) -> None:
    """The participant's report from what is now in OUTPUT_DIR (``subject`` with all of its
    sessions: the report shows every session with outputs, whichever a run selected), its
    figures drawn on up to ``nprocs`` processes; an embedded template it shows is built in
    ``templates``."""
    from mdgru_bids.reports.participant import participant_report

    path = participant_report(output_dir, subject, templates, nprocs)
    log.info("sub-%s: report %s", subject.label, path)


def selected_participants(args: argparse.Namespace, bids_dir: Path) -> list[Subject]:
    """The participants the labels and filter file select, each with all of its sessions:
    what the group level and the reports read back."""
    from mdgru_bids.collect import collect_subjects, load_layout, read_filter_file

    queries = read_filter_file(args.bids_filter_file)
    return collect_subjects(load_layout(bids_dir), args.participant_label, None, queries)


def run_reports(args: argparse.Namespace, bids_dir: Path, output_dir: Path) -> int:
    """``--reports-only``: the reports of the selected participants that have outputs."""
    from mdgru_bids.group.outputs import crashes

    subjects = [
        s
        for s in selected_participants(args, bids_dir)
        if (output_dir / f"sub-{s.label}").is_dir() or crashes(output_dir, s.label)
    ]
    if not subjects:
        raise MissingInputError(
            f"no participant outputs in {output_dir}: run the participant level first"
        )
    for subject in subjects:
        write_report(
            output_dir,
            subject,
            args.work_dir.resolve() / "templates",
            args.nprocs or os.cpu_count() or 1,
        )
    return EXIT_OK


def run_group(args: argparse.Namespace, bids_dir: Path, output_dir: Path) -> int:
    """Study tables, frequency map, figures and ``group.html`` from the participant outputs."""
    from mdgru_bids.group.study import group_analysis
    from mdgru_bids.reports.group import group_report

    subjects = selected_participants(args, bids_dir)
    templates = args.work_dir.resolve() / "templates"
    study = group_analysis(output_dir, subjects, args.template, templates)
    log.info("group report %s", group_report(study))
    return EXIT_OK


def _configure_nipype(output_dir: Path, work_dir: Path, stop_on_first_crash: bool) -> None:
    from nipype import config
    from nipype import logging as nlogging

    logs = output_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    config.update_config({
        "logging": {"log_directory": str(logs), "log_to_file": True},
        "execution": {
            "crashdump_dir": str(logs),
            "crashfile_format": "txt",
            "stop_on_first_crash": stop_on_first_crash,
            "poll_sleep_duration": 0.01,
            "remove_unnecessary_outputs": False,
            "hash_method": "content",
        },
        "monitoring": {"enabled": False},
    })  # fmt: skip
    nlogging.update_logging(config)


def run_subject(
    subject,
    cfg,
    work_dir: Path,
    output_dir: Path,
    plugin: str,
    plugin_args: dict,
    write_graph: bool,
) -> bool:
    """Build and run one participant's workflow; publish its outputs if it all succeeded."""
    from mdgru_bids.derivatives import publish
    from mdgru_bids.reports.methods import boilerplate, write_boilerplate
    from mdgru_bids.workflows.base import init_single_subject_wf
    from mdgru_bids.workflows.execution import multiproc

    staging = cfg.derivatives_dir
    shutil.rmtree(staging, ignore_errors=True)
    workflow = init_single_subject_wf(subject, cfg)
    workflow.base_dir = str(work_dir)
    if write_graph:
        workflow.write_graph(
            str(output_dir / "logs" / f"sub-{subject.label}_graph.dot"),
            graph2use="colored",
            format="svg",
            simple_form=True,
        )
    log.info("sub-%s: %d session(s)", subject.label, len(subject.sessions))
    runner = multiproc(plugin_args) if plugin == "MultiProc" else plugin
    try:
        workflow.run(plugin=runner, plugin_args=plugin_args)
    except RuntimeError as err:
        log.error("sub-%s failed: %s", subject.label, str(err).splitlines()[0])
        shutil.rmtree(staging, ignore_errors=True)
        return False
    try:
        published = publish(staging, output_dir)
    except OSError as err:
        raise AppError(_publish_error(err, subject.label, staging, output_dir)) from None
    write_boilerplate(output_dir, subject.label, boilerplate(workflow, cfg.template))
    log.info("sub-%s: %d derivative files written", subject.label, len(published))
    return True


def _publish_error(err: OSError, label: str, staging: Path, output_dir: Path) -> str:
    """One line on why sub-X's outputs could not be published, and what to do about it."""
    text = f"cannot publish sub-{label}'s outputs into OUTPUT_DIR {output_dir}: {err.strerror}"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        size = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file()) / 1e6
        text += (
            f"; none of them was written. Free {size:.0f} MB there or choose another "
            "OUTPUT_DIR, then run again with the same work folder (-w): finished steps are "
            "not repeated"
        )
    return text


if __name__ == "__main__":
    sys.exit(main())
