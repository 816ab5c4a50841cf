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
import math
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mdgru_bids.cli.common import (
    BadDataError,
    MissingInputError,
    NothingSelectedError,
    Parser,
    UsageError,
    configure_logging,
    run_command,
)

if TYPE_CHECKING:
    import torch

    from mdgru_bids.collect import Session
    from mdgru_bids.model.files import Model
    from mdgru_bids.model.network import NetworkConfig
    from mdgru_bids.model.training import BatchSource, Case, History, TrainConfig
    from mdgru_bids.synth.anatomy import LabelAnatomy
    from mdgru_bids.templates import Template

log = logging.getLogger("mdgru_bids")


@dataclass(frozen=True)
class LabelledSession:
    """A session with a manual lesion mask; ``dataset`` names the dataset it came from."""

    dataset: str
    participant: str
    session: Session
    label_file: Path

    @property
    def name(self) -> str:
        return f"{self.dataset}_sub-{self.participant}_{self.session.tag}"


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
        "--highpass-mm", type=float, help="add high-pass channels f - G(f, MM) (original MD-GRU)"
    )
    parser.add_argument(
        "--init-model",
        metavar="flair|flair-t1w|PATH",
        help="start from this model's weights and network (fine-tuning) instead of afresh",
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
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--precision", default="auto", choices=["auto", "float32", "bfloat16", "float16"]
    )
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

    from mdgru_bids.model.inference import resolve_device
    from mdgru_bids.model.training import CheckpointError, TrainConfig, train

    datasets = input_datasets(args)
    model_out = check_paths(args, datasets)
    init = init_model(args.init_model) if args.init_model else None
    config = network_config(args, init)
    try:
        device = resolve_device(args.device)
    except (ValueError, RuntimeError) as err:
        raise UsageError(f"--device {args.device}: {err}") from None
    sessions = find_sessions(args, datasets)
    threads = args.omp_nthreads or args.nprocs
    torch.set_num_threads(threads)

    start = time.perf_counter()
    files = {}
    if sessions:
        from mdgru_bids.templates import template_for_run

        template = template_for_run(args.template, args.work_dir.resolve())
        files = prepare_cases(sessions, args, template, threads)
    train_s, val_s = split(sessions, args.validation_fraction, args.random_seed)
    val_cases = [load_case(item, files[item.name], args) for item in val_s]
    cfg = TrainConfig(
        iterations=args.iterations,
        batch_size=args.batch_size,
        patch_size=(max(args.patch_size),) * 3,
        lesion_fraction=args.lesion_fraction,
        learning_rate=args.learning_rate,
        seed=args.random_seed,
        precision=args.precision,
        validate_every=args.validate_every,
        validation_patch_size=(args.inference_patch_size,) * 3,
        workers=args.workers if args.workers is not None else int(args.synth > 0),
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
    network = init.network.train() if init else build_network_seeded(config, args.random_seed)
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
    card = model_card(
        args, argv, config, sessions, val_s, history, cfg, device, prep_seconds, train_seconds,
        init,
    )  # fmt: skip
    write_outputs(model_out, network, card, history)
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
    from mdgru_bids.cli.run import validate_bids

    sessions = []
    for i, (bids_dir, labels_dir) in enumerate(datasets):
        if not args.skip_bids_validation:
            validate_bids(bids_dir)
        labels = args.participant_label if i == 0 else None
        sessions += labelled_sessions(bids_dir, labels_dir, labels, args.inputs)
    return sessions


def init_model(spec: str) -> Model:
    """The model to fine-tune: bundled by name or a file; one-line errors as for --model."""
    from mdgru_bids.cli.run import choose_model
    from mdgru_bids.model.files import load_model

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
    from mdgru_bids.model.training import CaseBatches

    if args.synth <= 0:
        cases = [load_case(item, files[item.name], args) for item in sessions]
        if not cases:
            raise NothingSelectedError("no labelled session is left for training")
        return CaseBatches(cases, cfg)
    from mdgru_bids.synth.anatomy import template_anatomy
    from mdgru_bids.synth.sampler import PatchSampler, SynthBatches, SynthConfig

    anatomies = [] if args.no_template_anatomy else [template_anatomy()]
    anatomies += [load_label_anatomy(item, files[item.name], args) for item in sessions]
    synth = SynthConfig(
        modalities=tuple(args.inputs), synth_p=args.synth, lesion_centre_p=cfg.lesion_fraction
    )
    return SynthBatches(
        PatchSampler(anatomies, synth), cfg.batch_size, tuple(args.patch_size), cfg.seed
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
    model_out.parent.mkdir(parents=True, exist_ok=True)
    return model_out


def network_config(args: argparse.Namespace, init: Model | None = None) -> NetworkConfig:
    """The network configuration by name or from a JSON file, with the right input channels;
    a fine-tuned model keeps its own, and must take the inputs asked for."""
    from dataclasses import replace

    from mdgru_bids.model.network import CONFIGS, NetworkConfig

    channels = len(args.inputs) * (2 if args.highpass_mm else 1)
    if init is not None:
        config = init.config
        normalisation = init.card["normalisation"].get("highpass_mm")
        if init.inputs != list(args.inputs) or normalisation != args.highpass_mm:
            raise UsageError(
                f"--init-model takes {init.inputs} (high-pass {normalisation}), not "
                f"{list(args.inputs)} (high-pass {args.highpass_mm}): match --inputs"
            )
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
    for side in (*args.patch_size, args.inference_patch_size):
        if side % config.divisor:
            raise UsageError(
                f"patch sides must be multiples of {config.divisor} for this network, not {side}"
            )
    return config


def labelled_sessions(
    bids_dir: Path, labels_dir: Path, participants: list[str] | None, inputs: list[str]
) -> list[LabelledSession]:
    """Every selected session that has a manual mask; one-line errors for what cannot be used."""
    from mdgru_bids.collect import check_image, collect_subjects, load_layout

    dataset = bids_dir.resolve().name
    found = []
    for subject in collect_subjects(load_layout(bids_dir.resolve()), participants):
        for session in subject.sessions:
            label = label_file(labels_dir, subject.label, session.label)
            if label is None:
                log.info("sub-%s %s has no manual mask; skipped", subject.label, session.tag)
                continue
            if "T1w" in inputs and session.t1w is None:
                raise MissingInputError(
                    f"sub-{subject.label} {session.tag} has no T1w: train with --inputs FLAIR"
                )
            for image in (session.flair, session.t1w if "T1w" in inputs else None, label):
                if image is not None:
                    check_image(image)
            check_same_grid(label, session.flair)
            found.append(LabelledSession(dataset, subject.label, session, label))
    if not found:
        raise NothingSelectedError(
            f"no session of {bids_dir} has a mask in {labels_dir} "
            "(expected sub-X/[ses-Y/]anat/sub-X[_ses-Y]_*label-lesion_mask.nii.gz)"
        )
    return found


def label_file(labels_dir: Path, participant: str, session: str | None) -> Path | None:
    """The session's manual mask in LABELS_DIR, by BIDS path and entities."""
    folder = labels_dir / f"sub-{participant}"
    stem = f"sub-{participant}"
    if session is not None:
        folder, stem = folder / f"ses-{session}", f"{stem}_ses-{session}"
    matches = sorted((folder / "anat").glob(f"{stem}_*label-lesion_mask.nii*"))
    matches += sorted((folder / "anat").glob(f"{stem}_label-lesion_mask.nii*"))
    return matches[0] if matches else None


def check_same_grid(label: Path, flair: Path) -> None:
    import nibabel as nib

    from mdgru_bids.nifti import same_grid

    a, b = nib.load(str(label)), nib.load(str(flair))
    if not same_grid(a, b):
        raise BadDataError(
            f"{label} is not on the grid of {flair.name} (shape {a.shape[:3]} vs {b.shape[:3]} or "
            "another affine): resample the mask onto the FLAIR"
        )


def prepare_cases(
    sessions: list[LabelledSession], args: argparse.Namespace, template: Template, threads: int
) -> dict[str, dict[str, str]]:
    """Run the preprocessing workflow (cached in the work folder): each case's image files."""
    from nipype import config as nipype_config
    from nipype.pipeline import engine as pe

    from mdgru_bids.cli.run import plugin_settings
    from mdgru_bids.workflows.training import case_files, init_training_case_wf

    work_dir = args.work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    nipype_config.update_config({
        "execution": {"crashdump_dir": str(work_dir / "logs"), "crashfile_format": "txt",
                      "poll_sleep_duration": 0.01, "hash_method": "content"},
        "monitoring": {"enabled": False},
    })  # fmt: skip
    workflow = pe.Workflow(name="training_data_wf", base_dir=str(work_dir))
    for item in sessions:
        workflow.add_nodes([
            init_training_case_wf(
                item.session,
                str(item.label_file),
                use_t1w="T1w" in args.inputs,
                template=template,
                omp_nthreads=max(1, threads // max(1, args.nprocs)),
                seed=args.random_seed,
                name=_node_name(item.name),
            )
        ])  # fmt: skip
    plugin_args = plugin_settings(args)[1]
    try:
        graph = workflow.run(plugin="MultiProc", plugin_args=plugin_args)
    except RuntimeError as err:
        raise BadDataError(
            f"preprocessing the training data failed ({str(err).splitlines()[0]}); crash files "
            f"are in {work_dir / 'logs'}"
        ) from None
    results = case_files(graph)
    return {item.name: results[_node_name(item.name)] for item in sessions}


def _node_name(name: str) -> str:
    return "case_" + "".join(c if c.isalnum() else "_" for c in name)


def _load_images(
    files: dict, args: argparse.Namespace
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Subject-space images in --inputs order, brain mask, lesion label, and the affine."""
    import nibabel as nib

    flair = nib.load(files["flair"])
    mask = np.asarray(nib.load(files["mask"]).dataobj) > 0
    images = [flair.get_fdata(dtype=np.float32)]
    if "T1w" in args.inputs:
        images.append(nib.load(files["t1w"]).get_fdata(dtype=np.float32))
    label = (nib.load(files["label"]).get_fdata(dtype=np.float32) > 0.5) & mask
    return images, mask, label, flair.affine


def load_case(item: LabelledSession, files: dict, args: argparse.Namespace) -> Case:
    """A training case from the subject-space images: normalised as at inference."""
    from mdgru_bids.model.normalise import network_input
    from mdgru_bids.model.training import Case

    images, mask, label, affine = _load_images(files, args)
    zooms = tuple(float(z) for z in np.linalg.norm(affine[:3, :3], axis=0))
    x = network_input(images, mask, zooms, args.highpass_mm)
    return Case(item.name, x, label.astype(np.uint8), mask, group=item.dataset)


def load_label_anatomy(
    item: LabelledSession, files: dict, args: argparse.Namespace
) -> LabelAnatomy:
    """A labelled case as a label map (Atropos tissue classes + its lesions) and its image."""
    from mdgru_bids.model.normalise import network_input
    from mdgru_bids.synth.anatomy import real_anatomy, tissue_labels

    images, mask, label, _ = _load_images(files, args)
    if args.highpass_mm:
        raise UsageError("--highpass-mm works with --synth 0 only")
    labels = tissue_labels(images, mask, label)
    return real_anatomy(item.name, network_input(images, mask, (1.0,) * 3, None), labels, mask)


def split(
    sessions: list[LabelledSession], fraction: float, seed: int
) -> tuple[list[LabelledSession], list[LabelledSession]]:
    """Hold out whole participants (all their sessions) for validation."""
    people = sorted({(s.dataset, s.participant) for s in sessions})
    n_val = math.ceil(fraction * len(people)) if fraction > 0 and len(people) > 1 else 0
    held = {people[i] for i in np.random.default_rng(seed).permutation(len(people))[:n_val]}
    val = [s for s in sessions if (s.dataset, s.participant) in held]
    return [s for s in sessions if s not in val], val


def model_card(
    args: argparse.Namespace,
    argv: Sequence[str] | None,
    config: NetworkConfig,
    sessions: list[LabelledSession],
    val_sessions: list[LabelledSession],
    history: History,
    cfg: TrainConfig,
    device: torch.device,
    prep_s: float,
    train_s: float,
    init: Model | None,
) -> dict:
    """Card: inputs, normalisation, inference settings, and how the model was trained.

    ``training_seconds`` covers every call of a run resumed in pieces; ``total_training_seconds``
    adds the training time of the model this one started from, so a fine-tuned model's card
    says what all of it cost.
    """
    import torch

    from mdgru_bids.model.files import make_card
    from mdgru_bids.phantom.bids import REFERENCES, TEMPLATE_NOTICE

    side = args.inference_patch_size
    datasets = {}
    for s in sessions:
        datasets.setdefault(s.dataset, []).append(s.name)
    last = history.validation[-1] if history.validation else None
    command = ["mdgru-bids-train", *(argv if argv is not None else sys.argv[1:])]
    return make_card(
        config,
        list(args.inputs),
        normalisation={"method": "zscore-brain", "highpass_mm": args.highpass_mm},
        patch_size=[side] * 3,
        overlap=[side // 4] * 3,
        training={
            "command": shlex.join(command),
            "datasets": {
                name: _dataset_facts(args, name, cases) for name, cases in datasets.items()
            },
            "validation_cases": [s.name for s in val_sessions],
            "iterations": history.iteration,
            "planned_iterations": cfg.iterations,
            "batch_size": cfg.batch_size,
            "patch_size": list(cfg.patch_size),
            "learning_rate": cfg.learning_rate,
            "seed": cfg.seed,
            "precision": cfg.precision,
            "device": str(device),
            "hardware": f"{platform.machine()}, {torch.get_num_threads()} threads",
            "torch": torch.__version__,
            "preprocessing_seconds": round(prep_s, 1),
            "training_seconds": round(history.seconds, 1),  # every call that trained it
            "this_call_seconds": round(train_s, 1),
            "total_training_seconds": round(history.seconds + _total_seconds(init), 1),
            "final_loss": float(np.mean(history.loss[-50:])) if history.loss else None,
            "synthetic": None
            if args.synth <= 0
            else {
                "share": args.synth,
                "patch_sides": list(args.patch_size),
                "template_anatomy": None
                if args.no_template_anatomy
                else {"license": TEMPLATE_NOTICE, "references": REFERENCES},
                "anatomies_from_cases": [s.name for s in sessions if s not in val_sessions],
                "generator": "mdgru_bids.synth (default SynthConfig)",
            },
            "init_model": None
            if init is None
            else {
                "command": init.card.get("training", {}).get("command"),
                "mdgru_bids_version": init.card.get("mdgru_bids_version"),
                "total_training_seconds": _total_seconds(init),
            },
        },
        accuracy={"validation_dice": last["mean_dice"] if last else None},
    )


def _total_seconds(model: Model | None) -> float:
    if model is None:
        return 0.0
    training = model.card.get("training", {})
    return float(training.get("total_training_seconds", training.get("training_seconds", 0.0)))


def _dataset_facts(args: argparse.Namespace, name: str, cases: list[str]) -> dict:
    """Name, licence and references from the dataset's description, for the card."""
    roots = [args.bids_dir] + [Path(d[0]) for d in args.add_dataset]
    root = next(r for r in roots if r.resolve().name == name)
    try:
        description = json.loads((root / "dataset_description.json").read_text())
    except (OSError, json.JSONDecodeError):
        description = {}
    return {
        "name": description.get("Name", name),
        "license": description.get("License"),
        "references": description.get("ReferencesAndLinks", []),
        "cases": cases,
    }


def write_outputs(model_out: Path, network: torch.nn.Module, card: dict, history: History) -> None:
    """The model file (atomic, card inside and beside it) and the training log beside it."""
    from mdgru_bids.atomic import replacing
    from mdgru_bids.model.files import save_model

    save_model(model_out, network, card)
    val = {v["iteration"]: v["mean_dice"] for v in history.validation}
    rows = ["iteration\tloss\tvalidation_dice"] + [
        f"{i}\t{loss:.5f}\t{val[i]:.4f}" if i in val else f"{i}\t{loss:.5f}\tn/a"
        for i, loss in enumerate(history.loss, start=1)
    ]
    with replacing(model_out.with_name(model_out.stem + "_training.tsv")) as tmp:
        tmp.write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    sys.exit(main())
