"""``mdgru-bids-train [BIDS_DIR LABELS_DIR] MODEL_OUT``: train an MD-GRU model on manual masks.

The images go through the participant workflow's own preprocessing (N4, brain mask, T1w onto
FLAIR, resampling into a 1 mm subject space), run as a Nipype workflow in the work folder, so
training and inference see identically prepared images and a second run reuses the cache.
By default most patches are synthetic (mdgru_bids.synth): drawn from the template's and the
labelled cases' anatomies with random lesions and contrasts; without BIDS_DIR a model is
trained on synthetic data alone.
"""

from __future__ import annotations

import os

os.environ.setdefault("NIPYPE_NO_ET", "1")  # no telemetry: compute nodes have no network

import argparse
import json
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

from mdgru_bids.cli.common import Parser, configure_logging, run_command
from mdgru_bids.errors import BadDataError, MissingInputError, NothingSelectedError, UsageError
from mdgru_bids.model.compute import (
    DEFAULT_DEVICE,
    DEFAULT_PRECISION,
    PRECISIONS,
    resolve_compute,
)

if TYPE_CHECKING:
    import torch

    from mdgru_bids.model.cases import LabelledSession
    from mdgru_bids.model.files import Model
    from mdgru_bids.model.network import NetworkConfig
    from mdgru_bids.model.training import BatchSource, TrainConfig
    from mdgru_bids.model.training_card import Recipe
    from mdgru_bids.synth.sampler import SynthConfig

log = logging.getLogger("mdgru_bids")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mdgru-bids-train",
        description="Train an MD-GRU lesion segmentation model on BIDS data with manual masks.",
    )
    parser.add_argument(
        "bids_dir", type=Path, nargs="?", help="BIDS dataset with FLAIR (and T1w) images"
    )
    parser.add_argument(
        "labels_dir",
        type=Path,
        nargs="?",
        help="BIDS derivative with sub-X/[ses-Y/]anat/*_label-lesion_mask.nii.gz on each "
        "session's FLAIR grid (without BIDS_DIR and LABELS_DIR: synthetic data only)",
    )
    parser.add_argument("model_out", type=Path, help="model file to write (.safetensors)")
    parser.add_argument(
        "--add-dataset",
        nargs=2,
        action="append",
        default=[],
        metavar=("BIDS_DIR", "LABELS_DIR"),
        help="another labelled dataset (repeatable); each dataset is sampled equally often",
    )
    parser.add_argument(
        "--participant-label", nargs="+", help="participants of BIDS_DIR to use (default: all)"
    )
    parser.add_argument(
        "--inputs",
        nargs="+",
        default=["FLAIR", "T1w"],
        choices=["FLAIR", "T1w"],
        help="images the model takes (default: FLAIR T1w)",
    )
    parser.add_argument(
        "--config",
        default="default",
        help="network configuration: default, reference or a JSON file (default: default)",
    )
    parser.add_argument(
        "--keep-max", type=float, metavar="K",
        help="cap the MD-GRU keep gate at K (0 < K <= 1), so the recurrent state fades along "
        "a sweep and the answer depends less on where inference's tiles start (default: the "
        "--init-model's or the configuration's; 1 is the original MD-GRU); a capped model's "
        "card tiles inference with half-patch overlap and a quarter-patch blend margin",
    )  # fmt: skip
    parser.add_argument(
        "--highpass-mm", type=float, help="add high-pass channels f - G(f, MM) (original MD-GRU)"
    )
    parser.add_argument(
        "--init-model",
        metavar="flair|flair-t1w|PATH",
        help="start from this model's weights and network (fine-tuning) instead of afresh; "
        "inputs after its own (FLAIR, then T1w) start with zero weights",
    )
    parser.add_argument(
        "--synth",
        type=float,
        default=0.6,
        metavar="F",
        help="share of patches generated from label maps (default: 0.6); the rest are real "
        "patches with heavy augmentation and pasted real lesions; 0: real patches with light "
        "augmentation only",
    )
    parser.add_argument(
        "--no-template-anatomy",
        action="store_true",
        help="generate synthetic patches from the labelled cases' anatomies only",
    )
    parser.add_argument("--workers", type=int, help="processes making batches (default: 1)")
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument(
        "--patch-size",
        type=int,
        nargs="+",
        default=[48, 64, 80],
        help="training patch sides (voxels); each batch takes one of them (default: 48 64 80)",
    )
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument(
        "--lesion-fraction", type=float, default=0.5, help="share of patches centred on lesions"
    )
    parser.add_argument(
        "--consistency", type=float, default=0.0, metavar="WEIGHT",
        help="weight of a term that asks two overlapping, shifted crops of each patch for the "
        "same answer where they overlap, so the answer does not depend on where the tiles of "
        "inference fall (default 0: off)",
    )  # fmt: skip
    parser.add_argument(
        "--recall-weight", type=float, default=0.5, metavar="B",
        help="weight of missed lesion voxels in the loss's overlap term (Tversky beta; false "
        "ones get 1 - B): above 0.5 it favours recall (default 0.5: soft Dice)",
    )  # fmt: skip
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=0.2,
        help="share of participants held out for validation (default: 0.2)",
    )
    parser.add_argument("--validate-every", type=int, default=250, metavar="N")
    parser.add_argument(
        "--inference-patch-size",
        type=int,
        default=64,
        help="patch side the model card asks inference to use (default: 64)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    parser.add_argument(
        "--until",
        type=int,
        metavar="N",
        help="stop this call at iteration N and write the model so far (a piece of a longer "
        "run: --resume continues it, --init-model starts from it)",
    )
    parser.add_argument("-w", "--work-dir", type=Path, default=Path("work"))
    parser.add_argument("--nprocs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--omp-nthreads", type=int)
    parser.add_argument("--device", default=DEFAULT_DEVICE)
    parser.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISIONS)
    parser.add_argument("--template", help="as for mdgru-bids (default: the same)")
    parser.add_argument("--random-seed", type=int, default=0)
    parser.add_argument("--skip-bids-validation", action="store_true")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true")
    # what run.plugin_settings reads: training data are prepared with MultiProc on --nprocs
    parser.set_defaults(nipype_plugin_file=None, mem_mb=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("mdgru-bids-train", _main, argv)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    import torch

    from mdgru_bids.model.cases import load_case, split
    from mdgru_bids.model.files import save_model
    from mdgru_bids.model.network import widen_inputs
    from mdgru_bids.model.training import CheckpointError, TrainConfig, train, write_training_log
    from mdgru_bids.model.training_card import training_card

    datasets = input_datasets(args)
    model_out = check_paths(args, datasets)
    init = init_model(args.init_model) if args.init_model else None
    config = network_config(args, init)
    device, precision = resolve_compute(args.device, args.precision)
    sessions = find_sessions(args, datasets)
    threads = args.omp_nthreads or args.nprocs
    torch.set_num_threads(threads)

    start = time.perf_counter()
    files = prepare(sessions, args, threads) if sessions else {}
    train_s, val_s = split(sessions, args.validation_fraction, args.random_seed)
    val_cases = [load_case(s, files[s.name], args.inputs, args.highpass_mm) for s in val_s]
    cfg = TrainConfig(
        iterations=args.iterations,
        batch_size=args.batch_size,
        patch_size=(max(args.patch_size),) * 3,
        lesion_fraction=args.lesion_fraction,
        learning_rate=args.learning_rate,
        seed=args.random_seed,
        precision=precision,
        validate_every=args.validate_every,
        validation_patch_size=(args.inference_patch_size,) * 3,
        workers=args.workers if args.workers is not None else int(args.synth > 0),
        consistency=args.consistency,
        recall_weight=args.recall_weight,
    )
    source = batch_source(args, cfg, train_s, files)
    prep_seconds = time.perf_counter() - start
    log.info("%d labelled training and %d validation cases", len(train_s), len(val_s))

    checkpoint = args.work_dir.resolve() / "train" / f"{model_out.stem}_checkpoint.safetensors"
    if checkpoint.exists() and not args.resume:
        log.info(
            "starting afresh: removing the checkpoint %s (use --resume to continue)", checkpoint
        )
        checkpoint.unlink()
    if init is None:
        network = build_network_seeded(config, args.random_seed)
    else:
        # the init network described by the new configuration (it may cap the keep gate)
        own = replace(config, in_channels=init.config.in_channels)
        network = widen_inputs(init.network, own, config.in_channels).train()
    start = time.perf_counter()
    try:
        history = train(
            network,
            source,
            cfg,
            checkpoint=checkpoint,
            validation=val_cases,
            device=device,
            progress=not args.no_progress,
            until=args.until,
        )
    except CheckpointError as err:
        raise UsageError(str(err)) from None
    train_seconds = time.perf_counter() - start
    recipe = training_recipe(args, argv, datasets, sessions, val_s)
    card = training_card(config, recipe, history, cfg, device, prep_seconds, train_seconds, init)
    save_model(model_out, network, card)
    write_training_log(model_out.with_name(model_out.stem + "_training.tsv"), history)
    log.info("model written to %s", model_out)
    return 0


def input_datasets(args: argparse.Namespace) -> list[tuple[Path, Path]]:
    """(BIDS_DIR, LABELS_DIR) pairs, resolved; none for synthetic-only training."""
    if (args.bids_dir is None) != (args.labels_dir is None):
        raise UsageError("give both BIDS_DIR and LABELS_DIR, or neither (synthetic data only)")
    if args.bids_dir is None:
        if args.add_dataset:
            raise UsageError("--add-dataset needs BIDS_DIR and LABELS_DIR first")
        if args.synth <= 0 or args.no_template_anatomy:
            raise UsageError(
                "without BIDS_DIR and LABELS_DIR only synthetic data from the template are "
                "left: drop --no-template-anatomy and use --synth > 0"
            )
        return []
    datasets = [(args.bids_dir, args.labels_dir)] + [tuple(map(Path, d)) for d in args.add_dataset]
    return [(b.resolve(), lab.resolve()) for b, lab in datasets]


def find_sessions(
    args: argparse.Namespace, datasets: list[tuple[Path, Path]]
) -> list[LabelledSession]:
    from mdgru_bids.collect import validate_bids
    from mdgru_bids.model.cases import labelled_sessions

    sessions = []
    for i, (bids_dir, labels_dir) in enumerate(datasets):
        if not args.skip_bids_validation:
            validate_bids(bids_dir)
        labels = args.participant_label if i == 0 else None
        sessions += labelled_sessions(bids_dir, labels_dir, labels, args.inputs)
    return sessions


def prepare(
    sessions: list[LabelledSession], args: argparse.Namespace, threads: int
) -> dict[str, dict[str, str]]:
    """The cases preprocessed as the participant workflow does (cached in the work folder)."""
    from mdgru_bids.templates import template_for_run
    from mdgru_bids.workflows.execution import plugin_settings
    from mdgru_bids.workflows.training import prepare_cases

    work_dir = args.work_dir.resolve()
    return prepare_cases(
        {s.name: (s.session, s.label_file) for s in sessions},
        work_dir,
        use_t1w="T1w" in args.inputs,
        template=template_for_run(args.template, work_dir),
        omp_nthreads=max(1, threads // max(1, args.nprocs)),
        seed=args.random_seed,
        plugin_args=plugin_settings(None, args.nprocs, None)[1],
    )


def init_model(spec: str) -> Model:
    """The model to fine-tune: bundled by name or a file; one-line errors as for --model."""
    from mdgru_bids.model.files import choose_model, load_model

    try:
        path, _ = choose_model(spec)
    except (MissingInputError, BadDataError) as err:
        raise type(err)(f"--init-model: {err}") from None
    return load_model(path)


def build_network_seeded(config: NetworkConfig, seed: int) -> torch.nn.Module:
    import torch

    from mdgru_bids.model.network import build_network

    torch.manual_seed(seed)
    return build_network(config)


def batch_source(
    args: argparse.Namespace,
    cfg: TrainConfig,
    sessions: list[LabelledSession],
    files: dict[str, dict],
) -> BatchSource:
    """Synthetic + augmented real patches (mdgru_bids.synth), or real ones lightly augmented."""
    from mdgru_bids.model.cases import load_case, load_label_anatomy
    from mdgru_bids.model.training import CaseBatches

    if args.synth <= 0:
        cases = [load_case(s, files[s.name], args.inputs, args.highpass_mm) for s in sessions]
        if not cases:
            raise NothingSelectedError("no labelled session is left for training")
        return CaseBatches(cases, cfg)
    from mdgru_bids.synth.anatomy import template_anatomy
    from mdgru_bids.synth.sampler import PatchSampler, SynthBatches

    if args.highpass_mm and sessions:
        raise UsageError("--highpass-mm works with --synth 0 only")
    anatomies = [] if args.no_template_anatomy else [template_anatomy()]
    anatomies += [load_label_anatomy(s, files[s.name], args.inputs) for s in sessions]
    return SynthBatches(
        PatchSampler(anatomies, synth_config(args)), cfg.batch_size, tuple(args.patch_size),
        cfg.seed,
    )  # fmt: skip


def synth_config(args: argparse.Namespace) -> SynthConfig:
    """The synthetic-data settings of this command (the rest are SynthConfig's defaults)."""
    from mdgru_bids.synth.sampler import SynthConfig

    return SynthConfig(
        modalities=tuple(args.inputs), synth_p=args.synth, lesion_centre_p=args.lesion_fraction
    )


def training_recipe(
    args: argparse.Namespace,
    argv: Sequence[str] | None,
    datasets: list[tuple[Path, Path]],
    sessions: list[LabelledSession],
    val_sessions: list[LabelledSession],
) -> Recipe:
    """The card's account of this command: its line, data and synthetic settings."""
    from mdgru_bids.model.training_card import Recipe, dataset_facts

    cases: dict[str, list[str]] = {}
    for s in sessions:
        cases.setdefault(s.dataset, []).append(s.name)
    roots = {bids_dir.name: bids_dir for bids_dir, _ in datasets}
    command = ["mdgru-bids-train", *(argv if argv is not None else sys.argv[1:])]
    return Recipe(
        command=shlex.join(command),
        inputs=list(args.inputs),
        highpass_mm=args.highpass_mm,
        inference_patch_side=args.inference_patch_size,
        datasets={name: dataset_facts(roots[name], names) for name, names in cases.items()},
        validation_cases=[s.name for s in val_sessions],
        synthetic_share=args.synth,
        synthetic_patch_sides=list(args.patch_size),
        template_anatomy=not args.no_template_anatomy,
        anatomies_from_cases=[s.name for s in sessions if s not in val_sessions],
        synthetic_settings=asdict(synth_config(args)),
    )


def check_paths(args: argparse.Namespace, datasets: list[tuple[Path, Path]]) -> Path:
    """The model path, refused where it would land inside an input dataset."""
    model_out = args.model_out.resolve()
    if model_out.suffix != ".safetensors":
        raise UsageError(f"MODEL_OUT {args.model_out} must end in .safetensors")
    for bids_dir, labels_dir in datasets:
        for name, folder in (("BIDS_DIR", bids_dir), ("LABELS_DIR", labels_dir)):
            if not folder.is_dir():
                raise MissingInputError(f"{name} {folder} does not exist")
            if folder.resolve() in model_out.parents:
                raise UsageError(
                    f"MODEL_OUT {model_out} is inside {name} {folder}: write it elsewhere"
                )
    for name, value in (("--iterations", args.iterations), ("--batch-size", args.batch_size)):
        if value < 1:
            raise UsageError(f"{name} must be at least 1")
    if not 0 <= args.validation_fraction < 1:
        raise UsageError("--validation-fraction must be in [0, 1)")
    if not 0 <= args.synth <= 1:
        raise UsageError("--synth must be in [0, 1]")
    if args.consistency < 0:
        raise UsageError("--consistency must be at least 0")
    if not 0 < args.recall_weight < 1:
        raise UsageError(f"--recall-weight must be between 0 and 1, got {args.recall_weight:g}")
    model_out.parent.mkdir(parents=True, exist_ok=True)
    return model_out


def network_config(args: argparse.Namespace, init: Model | None = None) -> NetworkConfig:
    """The network configuration by name or from a JSON file, with the right input channels;
    a fine-tuned model keeps its own, and must take the inputs asked for."""
    from mdgru_bids.model.network import CONFIGS, NetworkConfig

    channels = len(args.inputs) * (2 if args.highpass_mm else 1)
    if init is not None:
        normalisation = init.card["normalisation"].get("highpass_mm")
        widened = not normalisation and list(args.inputs[: len(init.inputs)]) == init.inputs
        if not (init.inputs == list(args.inputs) or widened) or normalisation != args.highpass_mm:
            raise UsageError(
                f"--init-model takes {init.inputs} (high-pass {normalisation}), not "
                f"{list(args.inputs)} (high-pass {args.highpass_mm}): match --inputs, or add "
                "inputs after its own"
            )
        config = replace(init.config, in_channels=channels)
    elif args.config in CONFIGS:
        config = CONFIGS[args.config](in_channels=channels)
    else:
        path = Path(args.config)
        try:
            config = NetworkConfig.from_dict(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, TypeError, ValueError) as err:
            raise UsageError(
                f"--config {args.config}: not {', '.join(CONFIGS)} nor a readable network "
                f"JSON file ({err})"
            ) from None
        config = replace(config, in_channels=channels)
    if args.keep_max is not None:
        try:
            config = replace(config, keep_max=args.keep_max)
        except ValueError:  # the configuration's own bound
            raise UsageError(
                f"--keep-max must be above 0 and at most 1, got {args.keep_max:g}"
            ) from None
    if args.consistency and 8 % config.divisor:
        raise UsageError(
            f"--consistency shifts patches by multiples of 8 voxels; this network needs "
            f"multiples of {config.divisor}"
        )
    if args.consistency and min(args.patch_size) < 24:
        raise UsageError(
            "--consistency needs --patch-size of at least 24: its two shifted crops of a "
            "patch must overlap"
        )
    for side in (*args.patch_size, args.inference_patch_size):
        if side % config.divisor:
            raise UsageError(
                f"patch sides must be multiples of {config.divisor} for this network, not {side}"
            )
    return config


if __name__ == "__main__":
    sys.exit(main())
