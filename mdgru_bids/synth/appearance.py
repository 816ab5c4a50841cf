"""Image appearance: random intensities per label, then what an acquisition does to them.

Labels become intensities drawn from per-label Gaussians whose means follow the modality's
contrast only loosely (CSF dark and lesions bright on FLAIR, but by random margins); then a
random acquisition: resolution (isotropic blur, or thick 2-D slices with a boxcar profile),
Rician noise, a smooth multiplicative bias field and a gamma curve. The result is z-scored
in the brain mask exactly as real images are before they reach the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

BACKGROUND, CSF, GM, WM, LESION = range(5)
N_LABELS = 5

# Mean signal per label relative to white matter: (low, high) of a uniform draw.
CONTRAST = {
    "FLAIR": {BACKGROUND: (0.0, 0.3), CSF: (0.05, 0.6), GM: (1.03, 1.5), WM: (1.0, 1.0)},
    "T1w": {BACKGROUND: (0.0, 0.3), CSF: (0.1, 0.45), GM: (0.5, 0.85), WM: (1.0, 1.0)},
}
# Lesion signal per lesion: on FLAIR above the brighter of grey and white matter by this
# factor (expert masks mark hyperintense lesions), drawn log-uniformly in the excess over 1
# so faint lesions are as common as bright ones (the shared c26 case has a 2.7 mL lesion
# whose rim is 1.22x the brain's histogram mode, its 90th percentile); on T1w relative to
# white matter, drawn uniformly.
LESION_CONTRAST = {"FLAIR": (1.05, 2.0), "T1w": (0.3, 0.9)}


@dataclass(frozen=True)
class AcquisitionConfig:
    label_sd: tuple[float, float] = (0.01, 0.1)  # within-label spread, relative to its mean
    thick_slice_p: float = 0.35  # share of images acquired as thick 2-D slices
    slice_mm: tuple[int, ...] = (3, 4, 5)
    iso_voxel_mm: tuple[float, float] = (1.0, 2.0)
    noise: tuple[float, float] = (0.0, 0.06)  # Rician sigma, relative to white matter
    bias: float = 0.3  # largest standard deviation of the log bias field
    gamma_sd: float = 0.25  # of log gamma
    # Signal contrast at a lesion's edge, as a share of its core's (a uniform draw per lesion;
    # 1 is a flat lesion): real lesions fade from a bright core to a faint rim experts still mark.
    rim_share: tuple[float, float] = (0.25, 1.0)
    rim_power: tuple[float, float] = (0.5, 2.0)  # of the rise from rim to core (per patch)
    # Normal FLAIR shows a thin bright lining along the ventricles (and the septum between
    # them) that experts do not mark: the share of FLAIR patches with one, its depth in mm
    # (thinner than any painted periventricular band) and its signal over the brighter of
    # white and grey matter.
    lining_p: float = 0.7
    lining_mm: tuple[float, float] = (1.0, 2.0)  # 1: the tissue voxels next to the ventricles
    lining_gain: tuple[float, float] = (1.0, 1.4)
    # The lining takes in the tissue bridging the ventricles (septum pellucidum, fornix): what
    # a closing of the ventricles by a ball of this radius adds. Both shared cases' models
    # marked the septum and fornix as lesions (c26's largest false positive).
    bridge_mm: tuple[float, float] = (2.0, 3.5)
    # Skull-stripped brains often keep a bright edge (dura, vessels, partial volume with fat)
    # experts do not mark: the share of FLAIR patches with one, its depth inside the brain mask
    # in voxels, the share of the edge it covers and its signal over the brighter tissue.
    edge_p: float = 0.5
    edge_voxels: tuple[int, ...] = (1, 2)
    edge_share: tuple[float, float] = (0.1, 0.6)
    edge_gain: tuple[float, float] = (1.0, 1.6)
    # Normal grey and white matter are not equally bright everywhere (insula, corticospinal
    # tract, cerebellum): each gets its own smooth gain field of up to this standard
    # deviation (of its log); lesions stay brighter than the tissue around them.
    tissue_gain_sd: float = 0.08


def lesion_levels(instances: np.ndarray, modality: str, rng: np.random.Generator) -> np.ndarray:
    """Signal relative to the reference tissue for lesion instances 1..N (index 0 unused)."""
    lo, hi = LESION_CONTRAST[modality]
    count = int(instances.max(initial=0))
    if modality == "FLAIR":
        levels = 1 + np.exp(rng.uniform(np.log(lo - 1), np.log(hi - 1), count))
    else:
        levels = rng.uniform(lo, hi, count)
    return np.concatenate([[1.0], levels])


def lesion_profile(
    instances: np.ndarray, rng: np.random.Generator, cfg: AcquisitionConfig
) -> np.ndarray:
    """Per voxel, the share of its lesion's contrast (core 1, edge its rim share; 1 outside).

    The share rises from the edge to the deepest voxel of each lesion along a random power
    curve, so the network learns that the faint rim experts mark is lesion too.
    """
    count = int(instances.max(initial=0))
    share = np.ones(instances.shape, np.float32)
    if count == 0:
        return share
    inside = instances > 0
    depth = ndi.distance_transform_edt(inside).astype(np.float32)
    deepest = np.ones(count + 1, np.float32)
    deepest[1:] = np.maximum(ndi.maximum(depth, instances, np.arange(1, count + 1)), 1.0)
    rim = np.concatenate([[1.0], rng.uniform(*cfg.rim_share, count)]).astype(np.float32)
    ids = instances[inside].astype(np.int64)
    # depth 1 is the edge voxel: share = rim there, 1 at the deepest voxel; a lesion no voxel
    # deep (a tiny one, or a sheet) has no core to fade from and keeps its whole contrast
    top = deepest[ids] - 1
    rise = np.where(top > 0, (depth[inside] - 1) / np.maximum(top, 1e-6), 1.0)
    share[inside] = rim[ids] + (1 - rim[ids]) * rise ** rng.uniform(*cfg.rim_power)
    return share


def ventricle_lining(
    labels: np.ndarray, dist_vent: np.ndarray, rng: np.random.Generator, cfg: AcquisitionConfig
) -> tuple[np.ndarray, float]:
    """Where a normal bright ependymal lining goes (tissue within a random depth of the
    lateral ventricles or bridging them, never lesion), and its gain; an empty mask for
    patches without one."""
    if rng.random() >= cfg.lining_p:
        return np.zeros(labels.shape, bool), 1.0
    depth, gain = rng.uniform(*cfg.lining_mm), rng.uniform(*cfg.lining_gain)
    radius = rng.uniform(*cfg.bridge_mm)
    near = dist_vent <= radius
    # the closing's erosion: voxels of the dilation farther than the radius from its outside
    bridge = ndi.distance_transform_edt(np.pad(near, 1, constant_values=True))[1:-1, 1:-1, 1:-1]
    tissue = (labels == WM) | (labels == GM)
    return tissue & ((dist_vent <= depth) | (bridge > radius)), gain


def brain_edge(
    labels: np.ndarray, brain: np.ndarray, rng: np.random.Generator, cfg: AcquisitionConfig
) -> tuple[np.ndarray, float]:
    """Where a bright brain edge goes (a random part of the outermost voxels of the brain
    mask, never lesion), and its gain; an empty mask for patches without one."""
    if rng.random() >= cfg.edge_p or not brain.any():
        return np.zeros(labels.shape, bool), 1.0
    depth = int(rng.choice(cfg.edge_voxels))
    rim = brain & ~ndi.binary_erosion(brain, iterations=depth, border_value=1)
    field = smooth_field(labels.shape, 1.0, rng).numpy()
    part = field > np.quantile(field[rim], 1 - rng.uniform(*cfg.edge_share)) if rim.any() else rim
    return rim & part & (labels != LESION), rng.uniform(*cfg.edge_gain)


def label_image(
    labels: torch.Tensor,
    instances: torch.Tensor,
    modality: str,
    rng: np.random.Generator,
    gen: torch.Generator,
    cfg: AcquisitionConfig,
    share: torch.Tensor | None = None,
    bright: Sequence[tuple[torch.Tensor, float]] = (),
) -> torch.Tensor:
    """Noise-free-ish tissue signal: a Gaussian draw per voxel from its label's distribution.

    ``share`` (from lesion_profile, the same for every modality of a patch) scales each lesion
    voxel's contrast; None gives flat lesions. ``bright`` (masks and gains, from
    ventricle_lining and brain_edge) brightens normal tissue on FLAIR.
    """
    contrast = CONTRAST[modality]
    means = torch.tensor(
        [rng.uniform(*contrast[k]) for k in range(LESION)] + [1.0], dtype=torch.float32
    )
    sds = means * torch.tensor(rng.uniform(*cfg.label_sd, N_LABELS), dtype=torch.float32)
    levels = torch.tensor(lesion_levels(instances.numpy(), modality, rng), dtype=torch.float32)
    gm, wm = (means[k] * tissue_gain(labels.shape, rng, cfg) for k in (GM, WM))
    reference = torch.maximum(wm, gm) if modality == "FLAIR" else wm
    excess = levels[instances.long()] - 1
    lesion = reference * (1 + excess * (1.0 if share is None else share))
    mean = torch.where(labels == GM, gm, torch.where(labels == WM, wm, means[labels.long()]))
    mean = torch.where(labels == LESION, lesion, mean)
    for where, gain in bright if modality == "FLAIR" else ():
        mean = torch.where(where, torch.maximum(mean, reference * gain), mean)
    return mean + sds[labels.long()] * torch.randn(labels.shape, generator=gen)


def tissue_gain(
    shape: tuple[int, ...], rng: np.random.Generator, cfg: AcquisitionConfig
) -> torch.Tensor:
    """A smooth regional gain around 1 for one tissue's mean signal."""
    return torch.exp(smooth_field(shape, rng.uniform(0, cfg.tissue_gain_sd), rng))


def acquire(
    image: torch.Tensor,
    rng: np.random.Generator,
    gen: torch.Generator,
    cfg: AcquisitionConfig,
    thick_slices: bool | None = None,
) -> torch.Tensor:
    """Resolution, noise, bias and gamma of a random acquisition, on a (X, Y, Z) signal."""
    if thick_slices is None:
        thick_slices = rng.random() < cfg.thick_slice_p
    sigma = rng.uniform(*cfg.noise)
    if thick_slices:
        axis = int(rng.integers(3))
        thickness = int(rng.choice(cfg.slice_mm))
        phase = int(rng.integers(thickness))
        image = _thick_slices(image, axis, thickness, phase, sigma, gen)
    else:
        voxel = rng.uniform(*cfg.iso_voxel_mm)
        image = _rician(blur(image, (0.4 * np.sqrt(max(voxel**2 - 1.0, 0.0)),) * 3), sigma, gen)
    image = image * torch.exp(smooth_field(image.shape, rng.uniform(0, cfg.bias), rng))
    gamma = float(np.exp(rng.normal(0.0, cfg.gamma_sd)))
    scale = image.max().clamp_min(1e-6)
    return (image.clamp_min(0) / scale) ** gamma * scale


def _thick_slices(
    image: torch.Tensor,
    axis: int,
    thickness: int,
    phase: int,
    sigma: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """Thick slices along ``axis`` on the patch's own grid: slabs of ``thickness`` voxels, the
    first starting ``phase`` voxels before the patch, each the mean over its slab (a boxcar
    slice profile) with Rician noise of ``sigma``, interpolated back linearly between slab
    centres, so the image stays in line with its lesion target (the faces extend by
    replication)."""
    size = image.shape[axis]
    slabs = -(-(size + phase) // thickness)
    x = F.pad(image.movedim(axis, -1), (phase, slabs * thickness - size - phase), "replicate")
    low = _rician(x.reshape(*x.shape[:2], slabs, thickness).mean(-1), sigma, gen)
    high = F.interpolate(low, size=slabs * thickness, mode="linear", align_corners=False)
    return high[..., phase : phase + size].movedim(-1, axis)


def _rician(image: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """Magnitude of the signal with complex Gaussian noise of ``sigma``."""
    if sigma <= 0:
        return image
    real = image + sigma * torch.randn(image.shape, generator=gen)
    imag = sigma * torch.randn(image.shape, generator=gen)
    return torch.sqrt(real * real + imag * imag)


def blur(image: torch.Tensor, sigmas: tuple[float, ...]) -> torch.Tensor:
    """Separable Gaussian blur of a (X, Y, Z) tensor; sigmas in voxels (0 skips the axis)."""
    x = image[None, None]
    for axis, sigma in enumerate(sigmas):
        if sigma < 0.1:
            continue
        radius = max(1, int(np.ceil(3 * sigma)))
        taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1) / sigma) ** 2)
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = taps.numel()
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        x = F.conv3d(F.pad(x, pad, mode="replicate"), (taps / taps.sum()).view(shape))
    return x[0, 0]


def smooth_field(shape: tuple[int, ...], sd: float, rng: np.random.Generator) -> torch.Tensor:
    """A smooth random field of standard deviation about ``sd`` (a few bumps per patch)."""
    nodes = torch.tensor(rng.normal(0.0, sd, (1, 1, 4, 4, 4)), dtype=torch.float32)
    return F.interpolate(nodes, size=tuple(shape), mode="trilinear", align_corners=True)[0, 0]


def zscore_in_mask(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What mdgru_bids.model.normalise.zscore does to real images, in torch."""
    inside = image[mask]
    std = inside.std()
    out = (image - inside.mean()) / torch.where(std > 0, std, torch.ones_like(std))
    return torch.where(mask, out, torch.zeros_like(out))
