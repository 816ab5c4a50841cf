"""Input normalisation: what the network sees must not depend on scanner intensity scales."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def zscore(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance inside the brain mask; the background becomes 0."""
    inside = image[mask]
    if inside.size == 0:
        raise ValueError("the brain mask is empty")
    std = float(inside.std())
    out = (image - float(inside.mean())) / (std if std > 0 else 1.0)
    out[~mask] = 0.0
    return out.astype(np.float32)


def highpass(image: np.ndarray, mask: np.ndarray, sigma_vox: tuple[float, ...]) -> np.ndarray:
    """f − Gaussian(f): the local contrast the original MD-GRU fed as an extra channel.

    The Gaussian is normalised by the smoothed mask so the brain edge does not leak the
    background into the local mean.
    """
    weight = ndimage.gaussian_filter(mask.astype(np.float32), sigma_vox)
    local = ndimage.gaussian_filter(np.where(mask, image, 0).astype(np.float32), sigma_vox)
    out = image - local / np.maximum(weight, 1e-3)
    out[~mask] = 0.0
    return out.astype(np.float32)


def network_input(
    images: list[np.ndarray],
    mask: np.ndarray,
    zooms: tuple[float, ...],
    highpass_mm: float | None,
) -> np.ndarray:
    """Stack z-scored channels (and their high-pass copies) into a (C, X, Y, Z) array."""
    mask = mask.astype(bool)
    channels = [zscore(np.asarray(im, dtype=np.float32), mask) for im in images]
    if highpass_mm:
        sigma = tuple(highpass_mm / z for z in zooms)
        channels += [highpass(ch, mask, sigma) for ch in channels]
    return np.stack(channels)
