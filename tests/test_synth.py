"""Synthetic training data: label maps, lesions, appearance, deformation and the sampler."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from mdgru_bids.synth.anatomy import LabelAnatomy, real_anatomy, template_anatomy, tissue_labels
from mdgru_bids.synth.appearance import (
    CSF,
    GM,
    LESION,
    WM,
    AcquisitionConfig,
    _thick_slices,
    acquire,
    brain_edge,
    label_image,
    lesion_levels,
    lesion_profile,
    ventricle_lining,
    zscore_in_mask,
)
from mdgru_bids.synth.deform import DeformConfig, crop, margin_side, random_grid, resample
from mdgru_bids.synth.lesions import (
    LesionConfig,
    _band,
    _diameter,
    _tiny,
    carve,
    lesion_shapes,
    paint,
    paste_carved,
)
from mdgru_bids.synth.sampler import PatchSampler, SynthBatches, SynthConfig, _jitter_mask

SHAPE = (64, 64, 64)


def _toy_labels() -> np.ndarray:
    """A ball of white matter under a grey-matter shell, two ventricles, CSF around."""
    ijk = np.indices(SHAPE).astype(float) - 32
    r = np.sqrt(((ijk / np.array([29, 29, 27])[:, None, None, None]) ** 2).sum(0))
    labels = np.zeros(SHAPE, np.uint8)
    labels[r < 1.0] = CSF
    labels[r < 0.96] = GM
    labels[r < 0.84] = WM
    for side in (-5, 5):
        vent = ((ijk[0] - side) / 3) ** 2 + (ijk[1] / 10) ** 2 + (ijk[2] / 5) ** 2 < 1
        labels[vent] = CSF
    return labels


@pytest.fixture(scope="module")
def toy() -> LabelAnatomy:
    """A 'real' case: the toy anatomy with two lesions and a FLAIR-like z-scored image."""
    labels = _toy_labels()
    labels[40:44, 30:34, 30:33] = LESION
    labels[20:23, 36:40, 38:41] = LESION
    rng = np.random.default_rng(0)
    level = np.array([0.0, 0.2, 1.3, 1.0, 2.0], np.float32)
    flair = level[labels] + rng.normal(0, 0.03, SHAPE).astype(np.float32)
    mask = labels > 0
    image = zscore_in_mask(torch.from_numpy(flair), torch.from_numpy(mask)).numpy()[None]
    return real_anatomy("toy", image, labels, mask)


def test_real_anatomy_finds_ventricles_sites_and_lesions(toy: LabelAnatomy) -> None:
    assert toy.dist_vent[toy.labels == CSF].min() == 0
    assert len(toy.shapes) == 2 and len(toy.carved) == 2
    assert sorted(int(s.sum()) for s in toy.shapes) == [36, 48]
    periventricular = (toy.sites & 1) > 0
    assert periventricular.any()
    assert toy.dist_vent[periventricular].max() <= 5.0
    assert set(np.unique(toy.labels[toy.sites > 0])) <= {WM, LESION}


def test_tissue_labels_recover_the_classes_from_flair_and_t1w(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    truth = _toy_labels()
    rng = np.random.default_rng(1)
    flair = np.array([0, 0.2, 1.3, 1.0], np.float32)[truth] + rng.normal(0, 0.05, SHAPE)
    t1w = np.array([0, 0.3, 0.65, 1.0], np.float32)[truth] + rng.normal(0, 0.05, SHAPE)
    mask = truth > 0
    lesion = np.zeros(SHAPE, bool)
    lesion[30:33, 30:33, 40:43] = True
    labels = tissue_labels([flair, t1w], mask, lesion)
    agree = (labels == truth)[mask & ~lesion].mean()
    assert agree > 0.95
    assert (labels[lesion] == LESION).all() and (labels[~mask] == 0).all()
    assert not list(tmp_path.iterdir())  # Atropos' temporary images are gone


def test_painted_lesions_replace_tissue_only_and_span_loads(toy: LabelAnatomy) -> None:
    loads, bands = [], 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        labels, instances = paint(
            toy.labels, toy.dist_vent, toy.sites, LesionConfig(lesion_free_p=0), rng, toy.shapes
        )
        new = (labels == LESION) & (toy.labels != LESION)
        assert set(np.unique(toy.labels[new])) <= {GM, WM}
        assert ((instances > 0) == (labels == LESION)).all()
        loads.append(int(new.sum()))
        near = new & (toy.dist_vent <= 1.5)
        bands += bool(near.sum() > 50)
    assert min(loads) < 300 < max(loads)  # from a few small lesions to heavy loads
    assert bands >= 1  # confluent periventricular lesions occur


def test_periventricular_bands_leave_the_septum_alone() -> None:
    """White matter inside the ventricles' outline (the template's septum) is a bright normal
    structure, never a periventricular lesion."""
    labels = np.full((40, 40, 40), WM, np.uint8)
    labels[10:30, 10:30, 10:30] = CSF
    septum = np.zeros(labels.shape, bool)
    septum[10:30, 10:30, 19:21] = True
    labels[septum] = WM
    ventricles = np.zeros(labels.shape, bool)
    ventricles[10:30, 10:30, 10:30] = True
    dist = ndi.distance_transform_edt(~ventricles).astype(np.float32)
    hits = 0
    for seed in range(8):
        band = _band(labels, dist, 20.0, np.random.default_rng(seed))
        assert not band[septum].any()
        hits += int(band.sum())
    assert hits > 1000  # the white matter around the ventricles does get bands


def test_large_lesions_come_only_where_the_load_has_room_for_them() -> None:
    cfg = LesionConfig(large_p=0.5)
    rng = np.random.default_rng(0)
    light = [_diameter(cfg, 500.0, rng) for _ in range(200)]  # 500 voxels: a 10 mm ball
    heavy = [_diameter(cfg, 40000.0, rng) for _ in range(200)]
    assert np.mean([d >= cfg.large_mm[0] for d in light]) < 0.1  # log-normal tail only
    assert 0.4 < np.mean([d >= cfg.large_mm[0] for d in heavy]) < 0.7
    assert max(heavy) <= cfg.large_mm[1] and max(heavy) > 25.0


def test_tiny_lesions_are_3_to_10_cubic_mm() -> None:
    rng = np.random.default_rng(0)
    sizes = [int(_tiny(rng).sum()) for _ in range(50)]
    assert min(sizes) >= 3 and max(sizes) <= 10


def test_flair_lesions_are_brighter_and_t1w_lesions_darker(toy: LabelAnatomy) -> None:
    labels = torch.from_numpy(toy.labels)
    instances = torch.from_numpy(ndi.label(toy.labels == LESION)[0].astype(np.int16))
    cfg = AcquisitionConfig()
    for seed in range(5):
        rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
        flair = label_image(labels, instances, "FLAIR", rng, gen, cfg)
        t1w = label_image(labels, instances, "T1w", rng, gen, cfg)
        mean = {k: (flair[labels == k].mean(), t1w[labels == k].mean()) for k in (GM, WM, LESION)}
        assert mean[LESION][0] > max(mean[WM][0], mean[GM][0])
        assert mean[LESION][1] < mean[WM][1]
        assert flair[labels == CSF].mean() < mean[WM][0]  # CSF suppressed


def test_faint_flair_lesions_are_as_common_as_bright_ones() -> None:
    excess = lesion_levels(np.ones(1, np.int16) * 4000, "FLAIR", np.random.default_rng(0))[1:] - 1
    assert excess.min() >= 0.05 and excess.max() <= 1.0
    # log-uniform over 0.05-1: half the lesions under 0.22 over their tissue (uniform: 0.52)
    assert 0.19 < np.median(excess) < 0.26


def test_grey_and_white_matter_brightness_varies_by_region(toy: LabelAnatomy) -> None:
    labels = torch.from_numpy(toy.labels)
    instances = torch.from_numpy(ndi.label(toy.labels == LESION)[0].astype(np.int16))
    cfg = AcquisitionConfig(label_sd=(0.0, 0.0))
    spreads = []
    for seed in range(5):
        rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
        flair = label_image(labels, instances, "FLAIR", rng, gen, cfg)
        wm = flair[labels == WM]
        spreads.append(float(wm.std() / wm.mean()))
        assert flair[labels == LESION].mean() > max(wm.mean(), flair[labels == GM].mean())
    flat = AcquisitionConfig(label_sd=(0.0, 0.0), tissue_gain_sd=0.0)
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    assert label_image(labels, instances, "FLAIR", rng, gen, flat)[labels == WM].std() == 0
    assert max(spreads) > 0.01 and max(spreads) < 0.2


def test_lesions_fade_from_a_bright_core_to_a_fainter_rim() -> None:
    ijk = np.indices((32, 32, 32)) - 16
    instances = (np.sqrt((ijk**2).sum(0)) < 9).astype(np.int16)  # one ball, 8 voxels deep
    instances[2:4, 2:4, 2:4] = 2  # a lesion too thin to have a core
    rims, cores = [], []
    for seed in range(20):
        share = lesion_profile(instances, np.random.default_rng(seed), AcquisitionConfig())
        assert (share[instances == 0] == 1).all()
        rims.append(share[16, 16, 8])  # the ball's edge voxel
        cores.append(share[16, 16, 16])
        assert (share[instances == 2] == 1).all()  # no voxel deep: keeps its whole contrast
    assert np.allclose(cores, 1.0)
    assert min(rims) < 0.5 and max(rims) > 0.8  # each lesion draws its own rim
    flat = label_image(torch.zeros(8, 8, 8, dtype=torch.uint8) + LESION,
                       torch.ones(8, 8, 8, dtype=torch.int16), "FLAIR",
                       np.random.default_rng(0), torch.Generator().manual_seed(0),
                       AcquisitionConfig(label_sd=(0.0, 0.0), tissue_gain_sd=0.0))  # fmt: skip
    faded = label_image(torch.zeros(8, 8, 8, dtype=torch.uint8) + LESION,
                        torch.ones(8, 8, 8, dtype=torch.int16), "FLAIR",
                        np.random.default_rng(0), torch.Generator().manual_seed(0),
                        AcquisitionConfig(label_sd=(0.0, 0.0), tissue_gain_sd=0.0),
                        torch.full((8, 8, 8), 0.5))  # fmt: skip
    # half the contrast over the brighter of white and grey matter (1.0-1.5 on FLAIR)
    reference = 2 * faded - flat
    assert (faded < flat).all()
    assert torch.allclose(reference, reference.flatten()[0]) and 1.0 <= reference[0, 0, 0] <= 1.5


def test_a_normal_ventricle_lining_is_bright_on_flair_and_never_lesion(toy: LabelAnatomy) -> None:
    labels = torch.from_numpy(toy.labels)
    instances = torch.from_numpy(ndi.label(toy.labels == LESION)[0].astype(np.int16))
    cfg = AcquisitionConfig(label_sd=(0.0, 0.0), tissue_gain_sd=0.0)
    seen = 0
    for seed in range(10):
        where, gain = ventricle_lining(toy.labels, toy.dist_vent, np.random.default_rng(seed), cfg)
        if not where.any():
            continue
        seen += 1
        assert toy.dist_vent[where].max() <= cfg.lining_mm[1]
        assert not (toy.labels[where] == LESION).any()
        lining = (torch.from_numpy(where), gain)

        def draw(
            modality: str, with_lining: bool, seed: int = seed, lining: tuple = lining
        ) -> torch.Tensor:
            rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
            extra = (None, [lining]) if with_lining else ()
            return label_image(labels, instances, modality, rng, gen, cfg, *extra)

        flair, plain = draw("FLAIR", True), draw("FLAIR", False)
        t1w, t1w_plain = draw("T1w", True), draw("T1w", False)
        inside = lining[0]
        assert (flair[~inside] == plain[~inside]).all()
        reference = max(plain[labels == WM].max(), plain[labels == GM].max())  # no label spread
        assert torch.allclose(flair[inside], reference * gain)
        assert torch.equal(t1w, t1w_plain)  # hyperintense on FLAIR only
    assert seen >= 3


def test_the_lining_bridges_ventricles_a_few_mm_apart() -> None:
    labels = np.full((40, 40, 40), WM, np.uint8)
    labels[10:30, 10:30, 10:18] = CSF  # two ventricles 4 voxels apart
    labels[10:30, 10:30, 22:30] = CSF
    labels[10:30, 10:30, 18:22] = GM  # partly grey: the lining takes any tissue
    dist = ndi.distance_transform_edt(labels != CSF).astype(np.float32)
    cfg = AcquisitionConfig(lining_p=1.0, lining_mm=(1.0, 1.0), bridge_mm=(2.5, 2.5))
    where, _ = ventricle_lining(labels, dist, np.random.default_rng(0), cfg)
    assert where[12:28, 12:28, 18:22].all()  # the whole wall between them
    assert not where[labels == CSF].any()
    assert not where[20, 20, 31:].any() and where[20, 20, 30]  # elsewhere only the lining
    apart = labels.copy()
    apart[10:30, 10:30, 16:24] = WM  # 8 voxels apart: no bridge, only the two linings
    dist = ndi.distance_transform_edt(apart != CSF).astype(np.float32)
    where, _ = ventricle_lining(apart, dist, np.random.default_rng(0), cfg)
    assert where[20, 20, 16] and where[20, 20, 23] and not where[20, 20, 17:23].any()


def test_the_template_has_a_septum_between_its_ventricles() -> None:
    anatomy = template_anatomy()
    ventricles = anatomy.dist_vent == 0
    septum = ventricles & (anatomy.labels == WM)
    xs = np.nonzero(septum)[0]
    assert septum.sum() > 200 and xs.max() - xs.min() == 2  # 3 mm thick, at the midline
    assert (anatomy.labels[ventricles & ~septum] == CSF).mean() > 0.9
    cfg = AcquisitionConfig(lining_p=1.0)
    where, _ = ventricle_lining(anatomy.labels, anatomy.dist_vent, np.random.default_rng(0), cfg)
    assert where[septum].all()  # brightened with the lining


def test_a_bright_brain_edge_lies_on_the_outermost_voxels_and_is_never_lesion() -> None:
    ijk = np.indices((48, 48, 48)) - 24
    brain = np.sqrt((ijk**2).sum(0)) < 20
    labels = np.where(brain, WM, 0).astype(np.uint8)
    labels[brain & (ijk[0] > 15)] = LESION  # a lesion reaching the edge
    cfg = AcquisitionConfig(edge_p=1.0, edge_voxels=(2,), edge_share=(0.3, 0.3))
    where, gain = brain_edge(labels, brain, np.random.default_rng(1), cfg)
    outermost = brain & ~ndi.binary_erosion(brain, iterations=2)
    assert where.any() and not (where & ~outermost).any()
    assert not (where & (labels == LESION)).any()
    assert 0.15 < where.sum() / outermost.sum() < 0.31  # 30 % of the edge, less the lesion
    assert 1.0 <= gain <= 1.6
    none = AcquisitionConfig(edge_p=0.0)
    assert not brain_edge(labels, brain, np.random.default_rng(1), none)[0].any()


def test_a_jittered_brain_mask_moves_its_edge_not_the_patch_faces() -> None:
    full = np.ones((16, 16, 16), bool)
    ball = np.sqrt(((np.indices(full.shape) - 8) ** 2).sum(0)) < 6
    sizes = set()
    for seed in range(12):
        assert _jitter_mask(full, np.random.default_rng(seed)).all()
        sizes.add(int(_jitter_mask(ball, np.random.default_rng(seed)).sum()))
    assert len(sizes) >= 4  # grown and shrunk by different steps


def test_thick_slices_smear_along_one_axis_only() -> None:
    noise = torch.randn(48, 48, 48, generator=torch.Generator().manual_seed(0)) + 5.0
    cfg = AcquisitionConfig(noise=(0.0, 0.0), bias=0.0, gamma_sd=0.0)
    for seed in range(4):
        out = acquire(noise, np.random.default_rng(seed), torch.Generator(), cfg, True)
        lag1 = []
        for axis in range(3):
            a = out.narrow(axis, 0, 47).flatten() - out.mean()
            b = out.narrow(axis, 1, 47).flatten() - out.mean()
            lag1.append(float((a * b).mean() / (a * a).mean()))
        assert sum(c > 0.5 for c in lag1) == 1, lag1
        assert sum(abs(c) < 0.1 for c in lag1) == 2, lag1


@pytest.mark.parametrize("size", [48, 50])
def test_thick_slices_stay_in_line_with_the_lesion_target(size: int) -> None:
    """A one-voxel bright plane lands, averaged over the slab phases, where it was, and keeps
    its signal; each phase puts it within its slab (patch sides that the slabs do not divide
    included)."""
    plane = torch.zeros(8, 8, size)
    plane[..., 21] = 1.0
    z = torch.arange(size, dtype=torch.float32)
    for thickness in (3, 5):
        centres = []
        for phase in range(thickness):
            out = _thick_slices(plane, 2, thickness, phase, 0.0, torch.Generator())[0, 0]
            assert out.shape == (size,)
            assert float(out.sum()) == pytest.approx(1.0, abs=0.02)
            centres.append(float((out * z).sum() / out.sum()))
            assert abs(centres[-1] - 21) <= (thickness - 1) / 2 + 1e-4
        assert np.mean(centres) == pytest.approx(21.0, abs=1e-3)


def test_an_undeformed_patch_is_the_centre_crop_up_to_flips() -> None:
    volume = np.random.default_rng(0).normal(size=(1, 40, 40, 40)).astype(np.float32)
    cfg = DeformConfig(rotate_deg=0.0, scale=0.0, elastic_vox=0.0)
    side = margin_side(16, cfg)
    big = crop(volume, np.array([20, 20, 20]), side)
    out = resample(
        torch.from_numpy(big), random_grid(16, side, cfg, np.random.default_rng(3)), "nearest"
    )
    lo = (side - 16) // 2
    centre = big[:, lo : lo + 16, lo : lo + 16, lo : lo + 16]
    flips = [np.flip(centre, [a + 1 for a in range(3) if f >> a & 1]) for f in range(8)]
    assert any(np.array_equal(out.numpy(), f) for f in flips)


def test_rotated_patches_stay_inside_their_margin() -> None:
    cfg = DeformConfig()
    for seed in range(10):
        grid = random_grid(32, margin_side(32, cfg), cfg, np.random.default_rng(seed))
        assert grid.abs().max() < 1.0


def test_carved_lesions_keep_their_signal_where_pasted(toy: LabelAnatomy) -> None:
    carved = carve(toy.image, toy.labels == LESION, toy.labels)
    image, labels = paste_carved(toy.image, toy.labels, carved, 3, np.random.default_rng(0))
    new = (labels == LESION) & (toy.labels != LESION)
    assert new.sum() > 20
    wm = image[0][labels == WM].mean()
    assert image[0][new].mean() > wm + 0.5 * (toy.image[0][toy.labels == LESION].mean() - wm)


def test_lesion_shapes_are_connected_components() -> None:
    label = np.zeros((20, 20, 20), bool)
    label[2:5, 2:5, 2:5] = True
    label[10, 10, 10:12] = True  # 2 voxels: too small to keep
    label[15:17, 15:18, 15] = True
    assert sorted(int(s.sum()) for s in lesion_shapes(label)) == [6, 27]


def test_batches_are_reproducible_and_carry_lesions(toy: LabelAnatomy) -> None:
    cfg = SynthConfig(synth_p=0.5, lesion_centre_p=1.0, lesions=LesionConfig(lesion_free_p=0))
    batches = SynthBatches(PatchSampler([toy], cfg), 3, (16, 32), seed=4)
    x, y = batches.batch(7)
    x2, y2 = batches.batch(7)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert x.shape[:2] == (3, 1) and x.shape[2:] == y.shape[1:]
    assert x.shape[-1] in (16, 32) and y.dtype == torch.int64
    assert not torch.equal(batches.batch(8)[0][:, :, :16, :16, :16], x[:, :, :16, :16, :16])
    assert all(int(t.sum()) > 0 for t in y)
    assert torch.isfinite(x).all()


def test_real_patches_are_z_scored_in_the_mask(toy: LabelAnatomy) -> None:
    sampler = PatchSampler([toy], SynthConfig(synth_p=0.0, lesion_centre_p=1.0))
    x, y = sampler.patch(32, np.random.default_rng(0))
    inside = x[0][x[0] != 0]
    assert abs(float(inside.mean())) < 0.5 and 0.5 < float(inside.std()) < 2.0
    assert y.sum() > 0
