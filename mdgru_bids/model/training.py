"""Training loop: lesion-centred patch sampling, augmentation, Dice + cross-entropy, resumable.

Batch ``i`` is drawn with a numpy Generator seeded by ``(seed, i)`` alone, so batches can be
made ahead in a worker process and a resumed run draws exactly the batches an uninterrupted
one would; torch's global generator (DropConnect) is seeded and saved in every checkpoint.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, safe_open
from tqdm import tqdm

from mdgru_bids.atomic import replacing
from mdgru_bids.lesions.metrics import dice
from mdgru_bids.model.compute import DEFAULT_PRECISION, autocast_dtype
from mdgru_bids.model.files import write_safetensors
from mdgru_bids.model.inference import inference_tiling, sliding_window
from mdgru_bids.model.mdgru import MDGRU
from mdgru_bids.synth.deform import DeformConfig, crop, margin_side, random_grid, resample

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot continue this training run."""


@dataclass(frozen=True)
class TrainConfig:
    iterations: int = 2000
    batch_size: int = 2
    patch_size: tuple[int, int, int] = (64, 64, 64)
    lesion_fraction: float = 0.5  # share of patches centred on a lesion voxel
    learning_rate: float = 1e-3  # at the start; decays as (1 - progress) ** 0.9 (nnU-Net's "poly")
    seed: int = 0
    precision: str = DEFAULT_PRECISION
    checkpoint_every: int = 100
    validate_every: int = 250
    validation_patch_size: tuple[int, int, int] = (96, 96, 96)  # as inference will use
    rotate_deg: float = 10.0
    scale: float = 0.1
    intensity: float = 0.1
    noise: float = 0.05
    workers: int = 0  # processes that make batches ahead of the training step (0: inline)
    consistency: float = 0.0  # weight of the tile-consistency term (consistency_loss); 0: off
    consistency_shift: int = 16  # the two views of a patch are 8 to this many voxels apart
    recall_weight: float = 0.5  # Tversky beta of the overlap term: 0.5 is soft Dice (loss_fn)


@dataclass
class Case:
    """One training image: (C, X, Y, Z) normalised input, lesion labels and brain mask.

    ``group`` names the dataset the case came from: every group is sampled equally often, so
    a few real cases are not drowned by many synthetic ones.
    """

    name: str
    image: np.ndarray
    label: np.ndarray
    mask: np.ndarray
    group: str = ""
    _lesion: np.ndarray = field(init=False, repr=False)
    _brain: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.image.shape[1:] != self.label.shape or self.label.shape != self.mask.shape:
            raise ValueError(f"{self.name}: image, label and mask shapes differ")
        self._lesion = np.flatnonzero(self.label)
        self._brain = np.flatnonzero(self.mask)
        if self._brain.size == 0:
            raise ValueError(f"{self.name}: the brain mask is empty")


@dataclass
class History:
    iteration: int = 0
    loss: list[float] = field(default_factory=list)
    validation: list[dict] = field(default_factory=list)
    seconds: float = 0.0  # training time over every call that made these iterations


def sample_batch(
    cases: list[Case], cfg: TrainConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Patches with a margin for rotation: ``cfg.lesion_fraction`` of them centred on lesions."""
    side = margin_side(max(cfg.patch_size), _deform(cfg))
    groups: dict[str, list[Case]] = {}
    for c in cases:
        groups.setdefault(c.group, []).append(c)
    names = sorted(groups)
    xs, ys = [], []
    for _ in range(cfg.batch_size):
        members = groups[names[rng.integers(len(names))]]
        case = members[rng.integers(len(members))]
        pool = (
            case._lesion
            if case._lesion.size and rng.random() < cfg.lesion_fraction
            else case._brain
        )
        centre = np.array(np.unravel_index(pool[rng.integers(pool.size)], case.label.shape))
        xs.append(crop(case.image, centre, side))
        ys.append(crop(case.label, centre, side))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys).astype(np.float32))


class BatchSource(Protocol):
    """Anything that makes training batch ``index``: (N, C, X, Y, Z) inputs, (N, X, Y, Z) labels."""

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]: ...


def batch_rng(seed: int, index: int) -> np.random.Generator:
    """The random draws of batch ``index``: the same in any process and after any resume."""
    return np.random.default_rng([seed, index])


@dataclass
class CaseBatches:
    """Patches of prepared cases with the light augmentation of ``augment``."""

    cases: list[Case]
    cfg: TrainConfig

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = batch_rng(self.cfg.seed, index)
        return augment(*sample_batch(self.cases, self.cfg, rng), self.cfg, rng)


class _Batches(torch.utils.data.Dataset):
    def __init__(self, source: BatchSource, length: int) -> None:
        self.source, self.length = source, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.source.batch(index)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # the training step has the cores; a worker takes one at most


def _batches(source: BatchSource, start: int, stop: int, workers: int):
    """Batches ``start``..``stop - 1`` in order, made ahead by ``workers`` processes."""
    return torch.utils.data.DataLoader(
        _Batches(source, stop),
        batch_size=None,
        sampler=range(start, stop),
        num_workers=workers,
        worker_init_fn=_one_thread if workers else None,
        prefetch_factor=2 if workers else None,
        generator=torch.Generator(),  # not torch's global one, which DropConnect draws from
    )


def _deform(cfg: TrainConfig) -> DeformConfig:
    return DeformConfig(rotate_deg=cfg.rotate_deg, scale=cfg.scale, elastic_vox=0.0)


def augment(
    x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rotation, scaling and flips (one resampling), then contrast, brightness, noise."""
    n, c = x.shape[:2]
    patch = max(cfg.patch_size)
    grids = [random_grid(patch, x.shape[-1], _deform(cfg), rng) for _ in range(n)]
    x = torch.stack([resample(xi, g, "bilinear") for xi, g in zip(x, grids, strict=True)])
    y = torch.stack([resample(yi[None], g, "nearest")[0] for yi, g in zip(y, grids, strict=True)])
    gain = torch.tensor(rng.uniform(1 - cfg.intensity, 1 + cfg.intensity, (n, c, 1, 1, 1)))
    shift = torch.tensor(rng.uniform(-cfg.intensity, cfg.intensity, (n, c, 1, 1, 1)))
    sigma = torch.tensor(rng.uniform(0, cfg.noise, (n, 1, 1, 1, 1)))
    noise = torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32))
    x = x * gain.float() + shift.float() + sigma.float() * noise
    return x, y.round().long()


def shifted_views(
    x: torch.Tensor, y: torch.Tensor, shifts: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two overlapping crops of every patch, the second ``shifts`` voxels further along each
    axis, stacked: (2N, ...). A voxel of the overlap sits at another place in each crop, as it
    does in the overlapping tiles of inference."""
    first = tuple(slice(0, n - d) for n, d in zip(x.shape[2:], shifts, strict=True))
    second = tuple(slice(d, n) for n, d in zip(x.shape[2:], shifts, strict=True))
    return (
        torch.cat([x[(..., *first)], x[(..., *second)]]),
        torch.cat([y[(..., *first)], y[(..., *second)]]),
    )


def consistency_loss(logits: torch.Tensor, shifts: tuple[int, ...]) -> torch.Tensor:
    """Mean squared difference of the lesion probability that the two views of
    ``shifted_views`` give the voxels they share: the network's answer should not depend on
    where a voxel sits in its patch (a recurrent network's does unless trained so)."""
    p = torch.softmax(logits.float(), dim=1)[:, 1]
    n = p.shape[0] // 2
    in_first = tuple(slice(d, None) for d in shifts)
    in_second = tuple(slice(0, m - d) for m, d in zip(p.shape[1:], shifts, strict=True))
    return ((p[:n][(..., *in_first)] - p[n:][(..., *in_second)]) ** 2).mean()


def _shifts(cfg: TrainConfig, iteration: int, side: int) -> tuple[int, ...]:
    """The views' offset of one iteration, in steps of 8 voxels (a multiple of the bundled
    networks' down-sampling), below half the patch ``side`` so the views overlap: the same
    after any resume."""
    most = min(cfg.consistency_shift, (side - 1) // 2) // 8
    if most < 1:
        raise ValueError(f"the consistency term needs patches of at least 24 voxels, not {side}")
    steps = np.random.default_rng([cfg.seed, iteration, 1]).integers(1, most + 1, 3)
    return tuple(int(v) * 8 for v in steps)


def loss_fn(logits: torch.Tensor, target: torch.Tensor, recall_weight: float = 0.5) -> torch.Tensor:
    """Cross-entropy plus one minus the soft Tversky index of the lesion class (over the whole
    batch): TP / (TP + (1 - b) FP + b FN) with b = ``recall_weight``. At 0.5 it is soft Dice;
    above, missed lesion voxels cost more than false ones, to favour small-lesion recall."""
    logits = logits.float()
    ce = F.cross_entropy(logits, target)
    p = torch.softmax(logits, dim=1)[:, 1]
    t = (target == 1).float()
    tp, fp, fn = (p * t).sum(), (p * (1 - t)).sum(), ((1 - p) * t).sum()
    tversky = (tp + 0.5) / (tp + (1 - recall_weight) * fp + recall_weight * fn + 0.5)
    return ce + (1 - tversky)


def validate(
    network: torch.nn.Module, cases: list[Case], cfg: TrainConfig, device: torch.device
) -> dict:
    """Voxel Dice of each validation case at probability 0.5, and their mean, tiled as the
    trained model's card will tile (a capped network's answer depends on its tiling)."""
    patch = cfg.validation_patch_size
    keep_max = min((m.keep_max for m in network.modules() if isinstance(m, MDGRU)), default=1.0)
    tiling = inference_tiling(min(patch), keep_max)
    overlap = tuple(tiling["overlap"])
    margin = tuple(tiling["blend_margin"]) if "blend_margin" in tiling else None
    scores = {}
    for case in cases:
        prob = sliding_window(
            network, case.image, case.mask, patch, overlap, device, cfg.precision, margin=margin
        )
        scores[case.name] = dice(prob > 0.5, case.label > 0)
    network.train()
    return {"mean_dice": float(np.mean(list(scores.values()))), "dice": scores}


def train(
    network: torch.nn.Module,
    cases: list[Case] | BatchSource,
    cfg: TrainConfig,
    checkpoint: str | Path | None = None,
    validation: list[Case] | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    until: int | None = None,
) -> History:
    """Train ``network`` in place; resume from ``checkpoint`` when it exists.

    ``cases`` are prepared cases (sampled by ``CaseBatches``) or any ``BatchSource``.
    ``until`` stops this call early at that iteration (say, before a job's time limit); a
    later call with the same configuration continues from the checkpoint exactly.
    """
    device = torch.device(device)
    network.to(device).train()
    optimiser = torch.optim.Adam(network.parameters(), lr=cfg.learning_rate)
    torch.manual_seed(cfg.seed)
    history = History()
    if checkpoint is not None and Path(checkpoint).exists():
        history = load_checkpoint(checkpoint, network, optimiser, cfg)
        log.info("resumed from %s at iteration %d", checkpoint, history.iteration)
    source = CaseBatches(cases, cfg) if isinstance(cases, list) else cases
    dtype = autocast_dtype(device, cfg.precision)
    bar = tqdm(total=cfg.iterations, initial=history.iteration, disable=not progress, unit="it")
    stop = min(cfg.iterations, until or cfg.iterations)
    clock = time.perf_counter()
    for x, y in _batches(source, history.iteration, stop, cfg.workers):
        x, y = x.to(device), y.to(device)
        if cfg.consistency:
            shifts = _shifts(cfg, history.iteration, min(x.shape[2:]))
            x, y = shifted_views(x, y, shifts)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = network(x)
        loss = loss_fn(logits, y, cfg.recall_weight)
        if cfg.consistency:
            loss = loss + cfg.consistency * consistency_loss(logits, shifts)
        for group in optimiser.param_groups:
            group["lr"] = cfg.learning_rate * (1 - history.iteration / cfg.iterations) ** 0.9
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        history.iteration += 1
        history.loss.append(loss.item())
        now = time.perf_counter()
        history.seconds, clock = history.seconds + now - clock, now
        bar.update(1)
        bar.set_postfix(loss=f"{history.loss[-1]:.3f}")
        if validation and history.iteration % cfg.validate_every == 0:
            history.validation.append(
                {"iteration": history.iteration, **validate(network, validation, cfg, device)}
            )
            log.info("iteration %d: %s", history.iteration, history.validation[-1]["mean_dice"])
        if checkpoint is not None and (
            history.iteration % cfg.checkpoint_every == 0
            or history.iteration in (cfg.iterations, until)
        ):
            save_checkpoint(checkpoint, network, optimiser, history, cfg)
            recent = history.loss[-cfg.checkpoint_every :]
            log.info(
                "iteration %d/%d: mean loss %.4f over the last %d; checkpoint saved",
                history.iteration, cfg.iterations, float(np.mean(recent)), len(recent),
            )  # fmt: skip
    bar.close()
    network.eval()
    return history


def save_checkpoint(
    path: str | Path,
    network: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    history: History,
    cfg: TrainConfig,
) -> None:
    """Weights, optimiser moments and torch's RNG state as safetensors; the rest as JSON."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    state = optimiser.state_dict()
    for idx, slots in state["state"].items():
        for name, value in slots.items():
            tensors[f"optim.{idx}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {
        "history": asdict(history),
        "param_groups": state["param_groups"],
        "config": asdict(cfg),
    }
    write_safetensors(Path(path), tensors, {"checkpoint": json.dumps(meta)})


def load_checkpoint(
    path: str | Path,
    network: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    cfg: TrainConfig,
) -> History:
    """Restore everything ``save_checkpoint`` wrote; return the history so far."""
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["checkpoint"])
    tensors = load_file(str(path))
    if meta["config"]["patch_size"] != list(cfg.patch_size):
        raise CheckpointError(
            f"checkpoint {path} was trained with another patch size; start afresh"
        )
    trained_with = meta["config"].get("recall_weight", 0.5)  # older runs: soft Dice
    if trained_with != cfg.recall_weight:
        raise CheckpointError(
            f"checkpoint {path} was trained with --recall-weight {trained_with}; resume with it "
            "or start afresh"
        )
    network.load_state_dict(
        {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    )
    slots: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            slots.setdefault(int(idx), {})[name] = value
    optimiser.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    return History(**meta["history"])


def write_training_log(path: Path, history: History) -> None:
    """The loss of every iteration and the validation Dice where measured, as TSV (atomic)."""
    val = {v["iteration"]: v["mean_dice"] for v in history.validation}
    rows = ["iteration\tloss\tvalidation_dice"] + [
        f"{i}\t{loss:.5f}\t{val[i]:.4f}" if i in val else f"{i}\t{loss:.5f}\tn/a"
        for i, loss in enumerate(history.loss, start=1)
    ]
    with replacing(path) as tmp:
        tmp.write_text("\n".join(rows) + "\n")
