"""Tissue signal: FLAIR and T1w images synthesised from tissue and lesion fractions."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from mdgru_bids.phantom.anatomy import Anatomy
from mdgru_bids.phantom.lesions import LesionMaps

TEXTURE_SD, TEXTURE_MM = 0.03, 1.5  # fine tissue heterogeneity, so no tissue is flat


@dataclass(frozen=True)
class Contrast:
    """Signal of each tissue relative to white matter for one acquisition."""

    gm: float
    csf: float
    skull: float
    scalp: float
    wm: float = 1.0


# FLAIR: CSF suppressed, grey matter a little brighter than white; T1w: white matter bright.
# Lesion signal is per lesion (see lesions.py): bright on FLAIR, dark on T1w.
BASE = {
    "FLAIR": Contrast(gm=1.25, csf=0.12, skull=0.05, scalp=1.1),
    "T1w": Contrast(gm=0.62, csf=0.22, skull=0.05, scalp=1.25),
}


def draw_contrast(rng: np.random.Generator, modality: str) -> Contrast:
    """The modality's contrast with a few percent of session-to-session scanner variation."""
    base = BASE[modality]
    return dataclasses.replace(
        base,
        **{
            f.name: getattr(base, f.name) * rng.uniform(0.96, 1.04)
            for f in dataclasses.fields(base)
            if f.name != "wm"
        },
    )


def make_texture(anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """A participant's multiplicative tissue texture on the work grid (mean 1)."""
    noise = rng.standard_normal(anatomy.shape, dtype=np.float32)
    noise = ndi.gaussian_filter(noise, TEXTURE_MM / anatomy.voxel_mm)
    return (1.0 + TEXTURE_SD * noise / noise.std()).astype(np.float32)


def normal_appearing(
    gm: np.ndarray, wm: np.ndarray, lesion: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Grey and white matter left once lesion tissue replaces white matter first, then grey."""
    wm_lost = np.minimum(lesion, wm)
    return np.clip(gm - (lesion - wm_lost), 0.0, 1.0), wm - wm_lost


def synthesise(
    anatomy: Anatomy,
    lesions: LesionMaps,
    modality: str,
    contrast: Contrast,
    texture: np.ndarray,
) -> np.ndarray:
    """Noise-free image on the work grid: tissue fractions weighted by their signal."""
    t = anatomy.tissues
    gm, wm = normal_appearing(t["gm"], t["wm"], lesions.fraction)
    lesion_signal = lesions.flair if modality == "FLAIR" else lesions.t1
    brain = gm * contrast.gm + wm * contrast.wm + lesions.fraction * lesion_signal
    brain *= texture
    brain += t["csf"] * contrast.csf + t["skull"] * contrast.skull + t["scalp"] * contrast.scalp
    return brain
