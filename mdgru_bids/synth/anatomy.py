"""Label maps the synthetic images are drawn from: the template's and real cases' anatomies.

Each anatomy is a 1 mm map of background, CSF, grey matter, white matter and (for real cases)
expert-marked lesions, with the distance to the lateral ventricles and the MS lesion sites
used to place synthetic lesions. A real case also keeps its z-scored image, so the same
sampler can serve augmented real patches and pasted real lesions.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from mdgru_bids.phantom.anatomy import load_anatomy, site_masks
from mdgru_bids.synth.appearance import BACKGROUND, CSF, GM, LESION, WM
from mdgru_bids.synth.lesions import SITE_BITS, CarvedLesion, carve, lesion_shapes

MAX_DIST_MM = 40.0  # distances to the ventricles beyond this make no difference
DEEP_MM = 12.0  # the ventricles lie at least this far inside the brain mask
SEPTUM_HALF = 1  # voxels either side of the midline: a septum 3 mm thick


@dataclass(frozen=True, eq=False)
class LabelAnatomy:
    """One anatomy on a 1 mm grid; ``image`` (C, X, Y, Z, z-scored) only for real cases."""

    name: str
    labels: np.ndarray  # uint8: BACKGROUND, CSF, GM, WM, LESION
    dist_vent: np.ndarray  # float32 mm to the lateral ventricles, capped at MAX_DIST_MM
    sites: np.ndarray  # uint8 bit field of SITE_BITS
    mask: np.ndarray  # bool brain mask (what the network input is normalised in)
    image: np.ndarray | None = None
    shapes: list[np.ndarray] = field(default_factory=list)  # its lesions, as boolean crops
    carved: list[CarvedLesion] = field(default_factory=list)  # its lesions with their signal

    @property
    def has_lesions(self) -> bool:
        return bool(self.shapes)


def _site_bits(masks: dict[str, np.ndarray]) -> np.ndarray:
    bits = np.zeros(next(iter(masks.values())).shape, np.uint8)
    for name, mask in masks.items():
        bits[mask] |= SITE_BITS[name]
    return bits


def template_anatomy() -> LabelAnatomy:
    """The MNI ICBM152 2009a tissue maps (as the phantoms use them), as hard labels."""
    anatomy = load_anatomy(1.0)
    t = anatomy.tissues
    fractions = np.stack([1.0 - t["csf"] - t["gm"] - t["wm"], t["csf"], t["gm"], t["wm"]])
    labels = np.argmax(fractions, axis=0).astype(np.uint8)  # BACKGROUND, CSF, GM, WM
    # The averaged tissue maps merge the two lateral ventricles across the septum pellucidum,
    # which FLAIR shows as a bright midline wall (the ventricle lining brightens it here).
    midline = round(float(anatomy.to_voxel(np.zeros(3))[0]))
    near_midline = np.abs(np.arange(anatomy.shape[0]) - midline)[:, None, None] <= SEPTUM_HALF
    labels[(anatomy.ventricles >= 0.5) & (labels == CSF) & near_midline] = WM
    bits = np.zeros(anatomy.shape, np.uint8)
    for name, ijk in anatomy.sites.items():
        bits[tuple(ijk.T)] |= SITE_BITS[name]
    return LabelAnatomy(
        name="template",
        labels=labels,
        dist_vent=np.minimum(anatomy.dist_ventricle, MAX_DIST_MM).astype(np.float32),
        sites=bits,
        mask=labels != BACKGROUND,
    )


def tissue_labels(images: list[np.ndarray], mask: np.ndarray, lesion: np.ndarray) -> np.ndarray:
    """CSF, grey and white matter by 3-class k-means (ANTs Atropos) in the brain, then lesions.

    Classes are ordered by the last image's mean: a T1w (CSF < GM < WM) when given last, else
    the FLAIR (CSF < WM < GM).
    """
    import ants

    brain = mask & ~lesion
    with _private_tempdir():  # ANTsPy's Atropos leaves its probability images in the tempdir
        seg = (
            ants.atropos(
                a=[ants.from_numpy(im.astype(np.float32)) for im in images],
                x=ants.from_numpy(brain.astype(np.float32)),
                i="Kmeans[3]",
                m="[0.1,1x1x1]",
                c="[5,0]",
            )["segmentation"]
            .numpy()
            .astype(np.uint8)
        )
    means = [images[-1][seg == k].mean() for k in (1, 2, 3)]
    order = np.argsort(means)
    by_rank = (CSF, GM, WM) if len(images) > 1 else (CSF, WM, GM)
    labels = np.zeros(mask.shape, np.uint8)
    for rank, k in enumerate(order):
        labels[seg == k + 1] = by_rank[rank]
    labels[lesion & mask] = LESION
    return labels


@contextmanager
def _private_tempdir() -> Iterator[None]:
    """Python's temporary files go into a folder of their own, removed afterwards (it swaps the
    process-wide ``tempfile.tempdir``: not for threads, and tissue_labels runs in none)."""
    saved = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="mdgru_atropos_") as folder:
        tempfile.tempdir = folder
        try:
            yield
        finally:
            tempfile.tempdir = saved


def ventricles(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The largest CSF component deep inside the brain: the lateral ventricles.

    By depth, not by template coordinates, so any subject space will do.
    """
    depth = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1, 1:-1]
    components, count = ndi.label((labels == CSF) & (depth > DEEP_MM))
    if count == 0:
        return np.zeros(labels.shape, bool)
    sizes = np.bincount(components.ravel())[1:]
    return components == 1 + int(np.argmax(sizes))


def real_anatomy(
    name: str, image: np.ndarray, labels: np.ndarray, mask: np.ndarray
) -> LabelAnatomy:
    """A real case on a 1 mm grid: z-scored ``image`` (C, X, Y, Z), tissue and lesion
    ``labels`` (tissue_labels) and brain ``mask``. Its lesion sites leave out the
    infratentorial one, which needs template coordinates (the template anatomy has it)."""
    vent = ventricles(labels, mask)
    dist = ndi.distance_transform_edt(~vent).astype(np.float32) if vent.any() else None
    if dist is None:
        dist = np.full(labels.shape, MAX_DIST_MM, np.float32)
    tissues = {
        "gm": (labels == GM).astype(np.float32),
        "wm": ((labels == WM) | (labels == LESION)).astype(np.float32),
    }
    lesion = labels == LESION
    return LabelAnatomy(
        name=name,
        labels=labels,
        dist_vent=np.minimum(dist, MAX_DIST_MM),
        sites=_site_bits(site_masks(tissues, dist, np.zeros(labels.shape, bool), 1.0)),
        mask=mask.astype(bool),
        image=image.astype(np.float32),
        shapes=lesion_shapes(lesion),
        carved=carve(image, lesion, labels),
    )
