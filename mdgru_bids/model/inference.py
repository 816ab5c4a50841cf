"""Whole-volume inference: overlapping patches, blended with linear ramps, in bounded memory.

Memory is two float32 accumulators the size of the brain's bounding box plus one batch of
patches, so a 1 mm brain fits a laptop. Patches that do not touch the brain mask are never
evaluated. The tiles start at the corner of the brain mask's bounding box (nnU-Net likewise
crops to the non-zero region first): a recurrent network's answer depends on where the patch
edges fall, and so they fall on the same anatomy however the image is cropped, padded or
placed in its grid. A card may also set ``blend_margin``: that many voxels at each tile edge
get almost no weight where another tile covers them, because there the recurrent state has
only just started (it matters for networks whose state fades, ``keep_max`` < 1: their answer
then depends on where the tiles fall only through those edge voxels).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import torch
from tqdm import tqdm

from mdgru_bids.lesions.metrics import bounding_box
from mdgru_bids.model.compute import DEFAULT_PRECISION, autocast_dtype
from mdgru_bids.model.files import Model
from mdgru_bids.model.normalise import network_input

#: Test-time augmentation: the image as it is and mirrored along each axis in turn.
TTA_FLIPS = ((), (0,), (1,), (2,))


#: Weight of the edge voxels within ``blend_margin``: small, but above zero, so a voxel that
#: no other tile covers (at the brain box's own edge) still gets this tile's answer.
EDGE_WEIGHT = 1e-3


def blend_weights(
    patch: tuple[int, ...], overlap: tuple[int, ...], margin: tuple[int, ...] | None = None
) -> np.ndarray:
    """Weights that rise linearly across each overlap and are flat in between; with
    ``margin``, the first ``margin`` voxels of each overlap get EDGE_WEIGHT and the ramp
    rises across the rest."""
    margin = margin or (0,) * len(patch)
    weight = np.ones(patch, dtype=np.float32)
    for axis, (size, ov, m) in enumerate(zip(patch, overlap, margin, strict=True)):
        if not 0 <= m < max(ov, 1):
            raise ValueError(f"blend margin {m} must be below the overlap {ov}")
        ramp = np.ones(size, dtype=np.float32)
        if ov > 0:
            up = np.full(ov, EDGE_WEIGHT, dtype=np.float32)
            up[m:] = np.arange(1, ov - m + 1, dtype=np.float32) / (ov - m + 1)
            ramp[:ov] = up
            ramp[size - ov :] = np.minimum(ramp[size - ov :], up[::-1])
        shape = [1] * len(patch)
        shape[axis] = size
        weight = weight * ramp.reshape(shape)
    return weight


def patch_starts(length: int, patch: int, step: int) -> list[int]:
    """Start positions that tile [0, length) with the last patch flush with the end."""
    if length <= patch:
        return [0]
    starts = list(range(0, length - patch, step))
    return [*starts, length - patch]


def _patches(
    shape: tuple[int, ...], patch: tuple[int, ...], overlap: tuple[int, ...], mask: np.ndarray
) -> Iterator[tuple[slice, ...]]:
    axes = [
        patch_starts(n, p, max(1, p - o)) for n, p, o in zip(shape, patch, overlap, strict=True)
    ]
    for corner in itertools.product(*axes):
        box = tuple(slice(c, c + p) for c, p in zip(corner, patch, strict=True))
        if mask[box].any():
            yield box


def sliding_window(
    network: torch.nn.Module,
    volume: np.ndarray,
    mask: np.ndarray,
    patch: tuple[int, ...],
    overlap: tuple[int, ...],
    device: torch.device,
    precision: str = DEFAULT_PRECISION,
    batch_size: int = 1,
    progress: bool = False,
    tta: bool = False,
    margin: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Lesion (class 1) probability of a (C, X, Y, Z) volume; zero outside patches on the mask
    and outside the mask's bounding box. The box is zero-padded up to the patch size where it
    is smaller. ``margin``: see blend_weights.

    With ``tta`` the probabilities are averaged over the volume and its mirror images along
    each axis (TTA_FLIPS), at four times the cost.
    """
    total = np.zeros(mask.shape, np.float32)
    flips = TTA_FLIPS if tta else ((),)
    for axes in flips:
        prob = _one_pass(
            network,
            np.ascontiguousarray(np.flip(volume, [a + 1 for a in axes])),
            np.ascontiguousarray(np.flip(mask, axes)),
            patch, overlap, margin, device, precision, batch_size, progress,
        )  # fmt: skip
        total += np.flip(prob, axes)
    return total / len(flips)


@torch.inference_mode()
def _one_pass(
    network: torch.nn.Module,
    volume: np.ndarray,
    mask: np.ndarray,
    patch: tuple[int, ...],
    overlap: tuple[int, ...],
    margin: tuple[int, ...] | None,
    device: torch.device,
    precision: str,
    batch_size: int,
    progress: bool,
) -> np.ndarray:
    mask = mask.astype(bool)
    box = bounding_box(mask) if mask.any() else tuple(slice(0, n) for n in mask.shape)
    sub = volume[(slice(None), *box)]
    spatial = sub.shape[1:]
    pad = [(0, 0)] + [(0, max(0, p - n)) for n, p in zip(spatial, patch, strict=True)]
    sub = np.pad(sub, pad)
    sub_mask = np.pad(mask[box], pad[1:])
    weight = torch.from_numpy(blend_weights(patch, overlap, margin)).to(device)
    total = torch.zeros(sub.shape[1:], dtype=torch.float32, device=device)
    norm = torch.zeros_like(total)
    dtype = autocast_dtype(device, precision)
    boxes = list(_patches(sub.shape[1:], patch, overlap, sub_mask))
    network = network.to(device).eval()
    for i in tqdm(range(0, len(boxes), batch_size), disable=not progress, unit="batch"):
        batch = boxes[i : i + batch_size]
        x = torch.from_numpy(np.stack([sub[(slice(None), *b)] for b in batch])).to(device)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = network(x)
        prob = torch.softmax(logits.float(), dim=1)[:, 1]
        for b, p in zip(batch, prob, strict=True):
            total[b] += p * weight
            norm[b] += weight
    inside = torch.where(norm > 0, total / norm.clamp_min(1e-12), 0.0).cpu().numpy()
    out = np.zeros(volume.shape[1:], np.float32)
    out[box] = inside[tuple(slice(0, n) for n in spatial)]
    return out


def inference_tiling(side: int, keep_max: float) -> dict[str, list[int]]:
    """Tile overlap (and blend margin) for a card, by whether the keep gate is capped.

    A capped network's answer at a voxel depends on how far the voxel sits from its tile's
    edge; overlapping tiles by half a patch and giving the first half of each overlap (a
    quarter patch) almost no weight kept the lesion volume within 3 % across crops and tile
    offsets on both real cases (benchmarks/results/keep_folds.json). An uncapped network
    keeps the quarter-patch overlap it was evaluated with.
    """
    if keep_max < 1:
        return {"overlap": [side // 2] * 3, "blend_margin": [side // 4] * 3}
    return {"overlap": [side // 4] * 3}


def card_tiling(card: dict) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """A card's patch size, overlap and blend margin (cards without a margin: none)."""
    overlap = tuple(card["overlap"])
    return tuple(card["patch_size"]), overlap, tuple(card.get("blend_margin", (0,) * len(overlap)))


def segment(
    model: Model,
    images: list[np.ndarray],
    mask: np.ndarray,
    zooms: tuple[float, ...],
    device: torch.device | str = "cpu",
    precision: str = DEFAULT_PRECISION,
    progress: bool = False,
    tta: bool = False,
) -> np.ndarray:
    """Lesion probability of one session: images in the order of ``model.inputs``; ``tta``:
    averaged over mirror images too (sliding_window)."""
    if len(images) != len(model.inputs):
        raise ValueError(f"the model takes {model.inputs}, got {len(images)} images")
    volume = network_input(images, mask, zooms, model.card["normalisation"].get("highpass_mm"))
    patch, overlap, margin = card_tiling(model.card)
    return sliding_window(
        model.network, volume, mask, patch, overlap, torch.device(device), precision,
        progress=progress, tta=tta, margin=margin,
    )  # fmt: skip
