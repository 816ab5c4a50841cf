"""Training patches on the fly: generated from label maps, or real images heavily augmented.

One numpy Generator drives every random choice (torch noise comes from a generator seeded
from it), so a training run that saves the Generator's state resumes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage as ndi

from mdgru_bids.synth.anatomy import LabelAnatomy
from mdgru_bids.synth.appearance import (
    LESION,
    WM,
    AcquisitionConfig,
    acquire,
    brain_edge,
    label_image,
    lesion_profile,
    ventricle_lining,
    zscore_in_mask,
)
from mdgru_bids.synth.deform import DeformConfig, crop, margin_side, random_grid, resample
from mdgru_bids.synth.lesions import SITE_BITS, LesionConfig, paint, paste_carved


@dataclass(frozen=True)
class SynthConfig:
    modalities: tuple[str, ...] = ("FLAIR",)
    synth_p: float = 0.6  # share of patches generated from labels (the rest: real images)
    lesion_centre_p: float = 0.6  # share of patches centred where lesions are (or go)
    carve_p: float = 0.5  # share of real patches with carved real lesions pasted in
    degrade_p: float = 0.7  # share of real patches through a random acquisition
    deform: DeformConfig = field(default_factory=DeformConfig)
    lesions: LesionConfig = field(default_factory=LesionConfig)
    acquisition: AcquisitionConfig = field(default_factory=AcquisitionConfig)


class PatchSampler:
    """Batches of (input, lesion target) patches from a list of anatomies.

    Synthetic patches may come from any anatomy; real patches only from anatomies with an
    image. Real lesion shapes and carved lesions are pooled over every anatomy given, so
    leaving a case out of ``anatomies`` leaves everything derived from it out.
    """

    def __init__(self, anatomies: list[LabelAnatomy], cfg: SynthConfig) -> None:
        if not anatomies:
            raise ValueError("no anatomies to sample from")
        channels = {a.image.shape[0] for a in anatomies if a.image is not None}
        if channels - {len(cfg.modalities)}:
            raise ValueError(f"real images have {channels} channels, not {cfg.modalities}")
        self.anatomies = anatomies
        self.real = [a for a in anatomies if a.image is not None]
        self.cfg = cfg
        self.shapes = [s for a in anatomies for s in a.shapes]
        self.carved = [c for a in anatomies for c in a.carved]
        self._pools = [self._centre_pools(a) for a in anatomies]

    @staticmethod
    def _centre_pools(a: LabelAnatomy) -> tuple[np.ndarray, np.ndarray]:
        """Flat indices of likely lesion places (lesions, or lesion sites) and of the brain."""
        likely = np.flatnonzero(a.labels == LESION)
        if likely.size == 0:
            likely = np.flatnonzero(a.sites & (SITE_BITS["periventricular"] | SITE_BITS["deep"]))
        return likely, np.flatnonzero(a.mask)

    def batch(
        self, size: int, patch: int, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``size`` patches of side ``patch``: (N, C, P, P, P) inputs and (N, P, P, P) targets."""
        pairs = [self.patch(patch, rng) for _ in range(size)]
        return torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])

    def patch(self, side: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        synthetic = not self.real or rng.random() < self.cfg.synth_p
        pool = self.anatomies if synthetic else self.real
        index = int(rng.integers(len(pool)))
        anatomy = pool[index]
        likely, brain = self._pools[self.anatomies.index(anatomy)]
        centres = likely if likely.size and rng.random() < self.cfg.lesion_centre_p else brain
        centre = np.array(np.unravel_index(centres[rng.integers(centres.size)], anatomy.mask.shape))
        big = margin_side(side, self.cfg.deform)
        grid = random_grid(side, big, self.cfg.deform, rng)
        discrete = np.stack([anatomy.labels, anatomy.sites, anatomy.mask.astype(np.uint8)])
        labels, sites, mask = (
            resample(torch.from_numpy(crop(discrete, centre, big)), grid, "nearest")
            .round()
            .to(torch.uint8)
            .numpy()
        )
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        if synthetic:
            dist = resample(
                torch.from_numpy(crop(anatomy.dist_vent[None], centre, big)), grid, "bilinear"
            )[0].numpy()
            x, labels = self._synthesise(labels, dist, sites, mask, rng, gen)
        else:
            image = resample(torch.from_numpy(crop(anatomy.image, centre, big)), grid, "bilinear")
            x, labels = self._augment_real(image.numpy(), labels, mask, rng, gen)
        return x, torch.from_numpy((labels == LESION).astype(np.int64))

    def _synthesise(self, labels, dist, sites, mask, rng, gen):
        labels, instances = paint(labels, dist, sites, self.cfg.lesions, rng, self.shapes)
        brain = torch.from_numpy(_jitter_mask(mask > 0, rng))
        if not brain.any():
            brain = torch.ones_like(brain)
        acq = self.cfg.acquisition
        share = torch.from_numpy(lesion_profile(instances, rng, acq))
        bright = [
            (torch.from_numpy(where), gain)
            for where, gain in (ventricle_lining(labels, dist, rng, acq),
                                brain_edge(labels, brain.numpy(), rng, acq))
        ]  # fmt: skip
        channels = []
        for modality in self.cfg.modalities:
            signal = label_image(
                torch.from_numpy(labels), torch.from_numpy(instances), modality, rng, gen,
                acq, share, bright,
            )  # fmt: skip
            channels.append(zscore_in_mask(acquire(signal, rng, gen, acq), brain))
        return torch.stack(channels), labels

    def _augment_real(self, image, labels, mask, rng, gen):
        if self.carved and rng.random() < self.cfg.carve_p:
            image, labels = paste_carved(image, labels, self.carved, 1 + rng.poisson(3), rng)
        brain = torch.from_numpy(mask > 0)
        if not brain.any():
            brain = torch.ones_like(brain)
        wm = torch.from_numpy(labels == WM) & brain
        channels = []
        for channel in torch.from_numpy(image):
            if rng.random() < self.cfg.degrade_p:
                # positive signal with white matter at 1, as label_image makes it
                low = channel[brain].min()
                level = (channel[wm].median() - low) if wm.any() else channel[brain].std()
                signal = (channel - low) / level.clamp_min(1e-3)
                channel = acquire(signal * brain, rng, gen, self.cfg.acquisition)
            channels.append(zscore_in_mask(channel, brain))
        return torch.stack(channels), labels


def _jitter_mask(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The brain mask grown or shrunk by up to 2 voxels: real masks are never exact. The
    patch's faces are not the brain's edge: the brain goes on beyond them."""
    step = int(rng.integers(-2, 3))
    if step > 0:
        return ndi.binary_dilation(mask, iterations=step)
    if step < 0:
        return ndi.binary_erosion(mask, iterations=-step, border_value=1)
    return mask


@dataclass(frozen=True)
class SynthBatches:
    """Training batches from a PatchSampler (a BatchSource of mdgru_bids.model.training).

    Each batch takes one side from ``sides``: a recurrent network trained on one patch size
    learns how far its state runs; several teach it to segment the same whatever the size.
    """

    sampler: PatchSampler
    batch_size: int
    sides: tuple[int, ...]
    seed: int

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from mdgru_bids.model.training import batch_rng

        rng = batch_rng(self.seed, index)
        side = self.sides[int(rng.integers(len(self.sides)))]
        return self.sampler.batch(self.batch_size, side, rng)
