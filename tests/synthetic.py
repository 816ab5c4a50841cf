"""Small synthetic lesion problems for model tests: bright blobs on a smooth, noisy background."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from mdgru_bids.model.training import Case


def blob_case(seed: int, side: int = 32, n_blobs: int = 5) -> Case:
    """One (1, side, side, side) volume with ``n_blobs`` spherical lesions."""
    rng = np.random.default_rng(seed)
    shape = (side, side, side)
    grid = np.indices(shape)
    label = np.zeros(shape, dtype=bool)
    for _ in range(n_blobs):
        centre = rng.uniform(6, side - 6, 3)[:, None, None, None]
        label |= ((grid - centre) ** 2).sum(0) < rng.uniform(1.5, 4.0) ** 2
    background = ndimage.gaussian_filter(rng.normal(0, 1, shape), 3) * 2
    image = background + 0.3 * rng.normal(0, 1, shape)
    image += 2.5 * ndimage.gaussian_filter(label.astype(float), 0.7)
    return Case(
        f"blob{seed}",
        image[None].astype(np.float32),
        label.astype(np.uint8),
        np.ones(shape, dtype=bool),
    )
