"""Training loop: lesion-centred patch sampling, augmentation, Dice + cross-entropy, resumable.

Randomness comes from one numpy Generator (sampling, augmentation) and torch's global
generator (DropConnect); both are seeded and saved in every checkpoint, so a resumed run
continues exactly where an uninterrupted one would be.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, safe_open
from tqdm import tqdm

from mdgru_bids.lesions.metrics import dice
from mdgru_bids.model.files import write_safetensors
from mdgru_bids.model.inference import autocast_dtype, sliding_window

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
    precision: str = "auto"
    checkpoint_every: int = 100
    validate_every: int = 250
    validation_patch_size: tuple[int, int, int] = (96, 96, 96)  # as inference will use
    rotate_deg: float = 10.0
    scale: float = 0.1
    intensity: float = 0.1
    noise: float = 0.05


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


def _crop(array: np.ndarray, centre: np.ndarray, size: int) -> np.ndarray:
    """A cube of side ``size`` around ``centre`` of the last three axes, zero-padded at edges."""
    spatial = array.shape[-3:]
    lo = centre - size // 2
    src = tuple(slice(max(0, a), min(n, a + size)) for a, n in zip(lo, spatial, strict=True))
    pad = [(0, 0)] * (array.ndim - 3) + [
        (s.start - a, a + size - s.stop) for s, a in zip(src, lo, strict=True)
    ]
    return np.pad(array[(..., *src)], pad)


def sample_batch(
    cases: list[Case], cfg: TrainConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Patches with a margin for rotation: ``cfg.lesion_fraction`` of them centred on lesions."""
    side = _margin_side(cfg)
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
        xs.append(_crop(case.image, centre, side))
        ys.append(_crop(case.label, centre, side))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys).astype(np.float32))


def _margin_side(cfg: TrainConfig) -> int:
    return math.ceil(max(cfg.patch_size) * (1 + cfg.scale) * math.sqrt(2))


def augment(
    x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rotation, scaling and flips (one resampling), then contrast, brightness, noise."""
    n, c = x.shape[:2]
    side = x.shape[-1]
    thetas = []
    for _ in range(n):
        angles = np.deg2rad(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg, 3))
        a = _rotation(angles) * rng.uniform(1 - cfg.scale, 1 + cfg.scale)
        a = a @ np.diag(rng.choice([-1.0, 1.0], 3))
        scale = np.array(cfg.patch_size[::-1], dtype=float) / side  # grid axes are (z, y, x)
        thetas.append(np.hstack([a * scale[None, :], np.zeros((3, 1))]))
    theta = torch.tensor(np.stack(thetas), dtype=x.dtype, device=x.device)
    size = (n, c, *cfg.patch_size)
    grid = F.affine_grid(theta, size, align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(y[:, None], grid, mode="nearest", align_corners=False)[:, 0]
    gain = torch.tensor(rng.uniform(1 - cfg.intensity, 1 + cfg.intensity, (n, c, 1, 1, 1)))
    shift = torch.tensor(rng.uniform(-cfg.intensity, cfg.intensity, (n, c, 1, 1, 1)))
    sigma = torch.tensor(rng.uniform(0, cfg.noise, (n, 1, 1, 1, 1)))
    noise = torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32))
    x = x * gain.float() + shift.float() + sigma.float() * noise
    return x, y.round().long()


def _rotation(angles: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus soft Dice of the lesion class (over the whole batch)."""
    logits = logits.float()
    ce = F.cross_entropy(logits, target)
    p = torch.softmax(logits, dim=1)[:, 1]
    t = (target == 1).float()
    soft_dice = (2 * (p * t).sum() + 1.0) / (p.sum() + t.sum() + 1.0)
    return ce + (1 - soft_dice)


def validate(
    network: torch.nn.Module, cases: list[Case], cfg: TrainConfig, device: torch.device
) -> dict:
    """Voxel Dice of each validation case at probability 0.5, and their mean."""
    patch = cfg.validation_patch_size
    overlap = tuple(p // 4 for p in patch)
    scores = {}
    for case in cases:
        prob = sliding_window(network, case.image, case.mask, patch, overlap, device, cfg.precision)
        scores[case.name] = dice(prob > 0.5, case.label > 0)
    network.train()
    return {"mean_dice": float(np.mean(list(scores.values()))), "dice": scores}


def train(
    network: torch.nn.Module,
    cases: list[Case],
    cfg: TrainConfig,
    checkpoint: str | Path | None = None,
    validation: list[Case] | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    until: int | None = None,
) -> History:
    """Train ``network`` in place; resume from ``checkpoint`` when it exists.

    ``until`` stops this call early at that iteration (say, before a job's time limit); a
    later call with the same configuration continues from the checkpoint exactly.
    """
    device = torch.device(device)
    network.to(device).train()
    optimiser = torch.optim.Adam(network.parameters(), lr=cfg.learning_rate)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    history = History()
    if checkpoint is not None and Path(checkpoint).exists():
        history = load_checkpoint(checkpoint, network, optimiser, rng, cfg)
        log.info("resumed from %s at iteration %d", checkpoint, history.iteration)
    dtype = autocast_dtype(device, cfg.precision)
    bar = tqdm(total=cfg.iterations, initial=history.iteration, disable=not progress, unit="it")
    while history.iteration < min(cfg.iterations, until or cfg.iterations):
        x, y = augment(*sample_batch(cases, cfg, rng), cfg, rng)
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = network(x)
        loss = loss_fn(logits, y)
        for group in optimiser.param_groups:
            group["lr"] = cfg.learning_rate * (1 - history.iteration / cfg.iterations) ** 0.9
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        history.iteration += 1
        history.loss.append(loss.item())
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
            save_checkpoint(checkpoint, network, optimiser, rng, history, cfg)
    bar.close()
    network.eval()
    return history


def save_checkpoint(
    path: str | Path,
    network: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    rng: np.random.Generator,
    history: History,
    cfg: TrainConfig,
) -> None:
    """Weights, optimiser moments and RNG states as safetensors; the rest as JSON metadata."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    state = optimiser.state_dict()
    for idx, slots in state["state"].items():
        for name, value in slots.items():
            tensors[f"optim.{idx}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {
        "history": asdict(history),
        "param_groups": state["param_groups"],
        "numpy_rng": rng.bit_generator.state,
        "config": asdict(cfg),
    }
    write_safetensors(Path(path), tensors, {"checkpoint": json.dumps(meta)})


def load_checkpoint(
    path: str | Path,
    network: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    rng: np.random.Generator,
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
    network.load_state_dict(
        {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    )
    slots: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            slots.setdefault(int(idx), {})[name] = value
    optimiser.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})
    rng.bit_generator.state = meta["numpy_rng"]
    torch.set_rng_state(tensors["rng.torch"])
    return History(**meta["history"])
