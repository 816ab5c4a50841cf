"""Networks, model files, whole-volume inference and the training loop."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from mdgru_bids.lesions.metrics import bounding_box, dice
from mdgru_bids.model.files import (
    ModelFileError,
    load_model,
    make_card,
    read_card,
    save_model,
    update_card,
)
from mdgru_bids.model.inference import (
    EDGE_WEIGHT,
    blend_weights,
    patch_starts,
    segment,
    sliding_window,
)
from mdgru_bids.model.network import (
    ChannelNorm,
    NetworkConfig,
    _fuse_up,
    _stem_conv,
    build_network,
    count_parameters,
    default_config,
    reference_config,
    widen_inputs,
)
from mdgru_bids.model.normalise import network_input
from mdgru_bids.model.training import (
    Case,
    CheckpointError,
    TrainConfig,
    consistency_loss,
    loss_fn,
    sample_batch,
    shifted_views,
    train,
)
from tests.synthetic import blob_case

TINY = NetworkConfig(
    in_channels=1, hidden=(4, 8), outputs=(8, 8), kernel_size=(3, 3), stem=4, dropconnect=0.0
)
CPU = torch.device("cpu")


def test_reference_configuration_is_the_original_size() -> None:
    n = count_parameters(build_network(reference_config()))
    assert 7.5e6 < n < 8.5e6


@pytest.mark.parametrize("cfg", [default_config(), reference_config()])
def test_networks_map_input_to_class_logits(cfg: NetworkConfig) -> None:
    net = build_network(cfg).eval()
    side = 8 * cfg.divisor
    with torch.no_grad():
        out = net(torch.randn(2, cfg.in_channels, side, side // 2 + cfg.divisor, side))
    assert out.shape == (2, cfg.n_classes, side, side // 2 + cfg.divisor, side)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("architecture", ["multiscale", "flat"])
def test_a_widened_network_answers_as_before_until_it_learns_the_new_input(
    architecture: str,
) -> None:
    cfg = NetworkConfig(
        architecture=architecture, in_channels=1, hidden=(4, 4), outputs=(8, 2),
        kernel_size=(3, 3), stem=4, dropconnect=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    narrow = build_network(cfg).eval()
    wide = widen_inputs(narrow, cfg, 2).eval()
    x = torch.randn(1, 2, 8, 8, 8)
    with torch.no_grad():
        assert (wide(x) - narrow(x[:, :1])).abs().max().item() < 1e-5
    assert count_parameters(wide) > count_parameters(narrow)
    with pytest.raises(ValueError, match="narrow"):
        widen_inputs(wide, replace(cfg, in_channels=2), 1)


def test_fusing_before_up_sampling_equals_up_sampling_then_fusing() -> None:
    torch.manual_seed(0)
    fuse = nn.Conv3d(12, 5, 1)
    deep, skip = torch.randn(2, 8, 3, 4, 5), torch.randn(2, 4, 6, 8, 10)
    up = F.interpolate(deep, size=skip.shape[2:], mode="trilinear", align_corners=False)
    with torch.no_grad():
        expected = fuse(torch.cat((up, skip), dim=1))
        assert (_fuse_up(fuse, deep, skip) - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_stem_with_padded_input_channels_is_the_same_convolution(channels: int) -> None:
    torch.manual_seed(0)
    stem = nn.Conv3d(channels, 8, 3, padding=1)
    x = torch.randn(1, channels, 6, 7, 8)
    weights = torch.randn(1, 8, 6, 7, 8)
    got, expected = _stem_conv(stem, x), stem(x)
    assert (got - expected).abs().max().item() < 1e-5
    (got * weights).sum().backward()
    grad = stem.weight.grad.clone()
    stem.zero_grad()
    (expected * weights).sum().backward()
    assert (grad - stem.weight.grad).abs().max().item() < 1e-4


def test_blend_weights_ramp_over_the_overlap_only() -> None:
    w = blend_weights((8, 8, 8), (2, 2, 2))
    assert w[4, 4, 4] == 1.0
    assert w[0, 4, 4] == pytest.approx(1 / 3) and w[1, 4, 4] == pytest.approx(2 / 3)
    assert w[7, 4, 4] == pytest.approx(1 / 3)
    assert w[0, 0, 0] == pytest.approx(1 / 27)


def test_blend_margin_gives_the_tile_edge_almost_no_weight_and_ramps_after_it() -> None:
    w = blend_weights((12, 12, 12), (4, 4, 4), (2, 2, 2))[:, 6, 6]
    assert w[0] == w[1] == w[11] == EDGE_WEIGHT
    assert w[2] == pytest.approx(1 / 3) and w[3] == pytest.approx(2 / 3) and w[6] == 1.0
    with pytest.raises(ValueError, match="blend margin 4 must be below the overlap 4"):
        blend_weights((12, 12, 12), (4, 4, 4), (4, 4, 4))


def test_segment_follows_the_cards_blend_margin_and_covers_the_box_edge(tmp_path: Path) -> None:
    model = load_model(_tiny_model_file(tmp_path / "m.safetensors"))
    case = blob_case(3, side=20)
    model.card.update(patch_size=[12, 12, 12], overlap=[4, 4, 4])
    plain = segment(model, [case.image[0]], case.mask, (1.0,) * 3, precision="float32")
    model.card["blend_margin"] = [2, 2, 2]
    edged = segment(model, [case.image[0]], case.mask, (1.0,) * 3, precision="float32")
    inside = case.mask.astype(bool)
    assert np.abs(edged - plain)[inside].max() > 1e-4  # the edge voxels count less now
    assert (edged[inside] > 0).all()  # a voxel only one tile covers still gets its answer


def test_patch_starts_cover_the_axis_and_end_flush() -> None:
    assert patch_starts(10, 16, 12) == [0]
    assert patch_starts(40, 16, 12) == [0, 12, 24]
    assert patch_starts(41, 16, 12) == [0, 12, 24, 25]


def test_sliding_window_equals_one_pass_when_the_patch_covers_the_volume() -> None:
    torch.manual_seed(0)
    net = build_network(TINY).eval()
    vol = np.random.default_rng(0).normal(size=(1, 16, 16, 16)).astype(np.float32)
    mask = np.ones((16, 16, 16), bool)
    tiled = sliding_window(net, vol, mask, (16, 16, 16), (0, 0, 0), CPU, "float32")
    with torch.no_grad():
        direct = torch.softmax(net(torch.from_numpy(vol)[None]), 1)[0, 1].numpy()
    np.testing.assert_allclose(tiled, direct, atol=1e-6)
    # overlapping tiles of a fully convolutional net agree away from tile borders
    overlapped = sliding_window(net, vol, mask, (8, 8, 8), (4, 4, 4), CPU, "float32")
    assert overlapped.shape == direct.shape
    assert np.abs(overlapped - direct).mean() < 0.1


def test_sliding_window_covers_the_mask_box_only_and_pads_small_boxes() -> None:
    net = build_network(TINY).eval()
    vol = np.ones((1, 12, 20, 6), np.float32)
    mask = np.zeros((12, 20, 6), bool)
    mask[2:5, 3:7, 1:4] = True
    prob = sliding_window(net, vol, mask, (8, 8, 8), (0, 0, 0), CPU, "float32")
    assert prob.shape == (12, 20, 6)
    box = (slice(2, 5), slice(3, 7), slice(1, 4))
    assert (prob[box] > 0).all() and (np.delete(prob, range(2, 5), 0) == 0).all()
    assert prob.sum() == prob[box].sum()


@pytest.fixture(scope="module")
def blob_model() -> tuple:
    """The tiny network with per-voxel channel normalisation, trained to find bright blobs:
    (network, training history, training cases)."""
    cases = [blob_case(0), blob_case(1)]
    torch.manual_seed(0)
    net = build_network(NetworkConfig(**{**TINY.to_dict(), "norm": "channel"}))
    cfg = TrainConfig(
        iterations=200, batch_size=2, patch_size=(16, 16, 16), learning_rate=1e-2,
        precision="float32", checkpoint_every=1000,
    )  # fmt: skip
    history = train(net, cases, cfg, progress=False)
    return net.eval(), history, cases


def test_tiny_network_learns_a_synthetic_lesion_problem(blob_model: tuple) -> None:
    net, history, cases = blob_model
    assert np.mean(history.loss[-10:]) < 0.5 * np.mean(history.loss[:10])
    for case in cases:
        prob = sliding_window(net, case.image, case.mask, (16, 16, 16), (4, 4, 4), CPU, "float32")
        assert dice(prob > 0.5, case.label) > 0.9


def test_every_dataset_is_sampled_equally_often() -> None:
    """Three cases of one dataset and one of another: half the patches come from each."""
    shape = (1, 12, 12, 12)

    def case(name: str, group: str, value: float) -> Case:
        ones = np.ones(shape[1:], np.uint8)
        return Case(name, np.full(shape, value, np.float32), ones, ones.astype(bool), group)

    cases = [case(f"p{i}", "phantom", 0.0) for i in range(3)] + [case("r", "real", 1.0)]
    cfg = TrainConfig(batch_size=200, patch_size=(4, 4, 4))
    x, _ = sample_batch(cases, cfg, np.random.default_rng(0))
    centre = x.shape[-1] // 2
    from_real = float((x[:, 0, centre, centre, centre] == 1.0).float().mean())
    assert 0.4 < from_real < 0.6  # uniform over cases would give 0.25


def test_consistency_is_zero_only_for_an_answer_that_ignores_the_voxels_place_in_its_patch() -> (
    None
):
    x = torch.randn(2, 1, 40, 40, 40)
    y = (x[:, 0] > 1).long()
    views, labels = shifted_views(x, y, (8, 16, 8))
    assert views.shape == (4, 1, 32, 24, 32) and labels.shape == (4, 32, 24, 32)
    shared = x[:, :, 8:32, 16:24, 8:32]
    assert torch.equal(views[:2, :, 8:, 16:, 8:], shared)
    assert torch.equal(views[2:, :, :24, :8, :24], shared)
    voxelwise = torch.cat([-views, views], dim=1)  # each voxel's answer from its own value
    assert consistency_loss(voxelwise, (8, 16, 8)) == 0
    place = torch.arange(32.0)[None, None, :, None, None].expand_as(views)
    assert consistency_loss(torch.cat([-place, place], dim=1), (8, 16, 8)) > 0.01


def test_training_loss_follows_the_recall_weight() -> None:
    cases = [blob_case(2, side=24)]
    first = {}
    for weight in (0.5, 0.9):
        torch.manual_seed(1)  # the same start and the same batch: only the loss differs
        cfg = TrainConfig(iterations=1, batch_size=1, patch_size=(8,) * 3, precision="float32",
                          recall_weight=weight)  # fmt: skip
        first[weight] = train(build_network(TINY), cases, cfg, progress=False).loss[0]
    assert abs(first[0.9] - first[0.5]) > 1e-3


@pytest.mark.parametrize("consistency", [0.0, 10.0])
def test_training_resumes_exactly_from_a_checkpoint(tmp_path: Path, consistency: float) -> None:
    cases = [blob_case(2, side=24)]
    side = 24 if consistency else 8  # the shifted views of a patch need room to overlap
    cfg = TrainConfig(
        iterations=6, batch_size=1, patch_size=(side,) * 3, precision="float32",
        checkpoint_every=3, consistency=consistency,
    )  # fmt: skip
    dropconnect = NetworkConfig(**{**TINY.to_dict(), "dropconnect": 0.3})
    torch.manual_seed(1)
    straight = build_network(dropconnect)
    start = {k: v.clone() for k, v in straight.state_dict().items()}
    full = train(straight, cases, cfg, progress=False)

    ckpt = tmp_path / "ckpt.safetensors"
    first = build_network(dropconnect)
    first.load_state_dict(start)
    train(first, cases, cfg, ckpt, progress=False, until=3)
    resumed = build_network(dropconnect)  # fresh weights: the checkpoint must restore them
    history = train(resumed, cases, cfg, ckpt, progress=False)
    assert history.iteration == 6
    assert history.loss == pytest.approx(full.loss, rel=1e-5)
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_validation_tiles_a_capped_network_as_its_card_will() -> None:
    capped = replace(TINY, keep_max=0.7)
    case = blob_case(3, side=32)
    cfg = TrainConfig(iterations=1, batch_size=1, patch_size=(8,) * 3, precision="float32",
                      validate_every=1, validation_patch_size=(16,) * 3)  # fmt: skip
    torch.manual_seed(2)
    network = build_network(capped)
    scored = train(network, [case], cfg, validation=[case], progress=False).validation[0]["dice"]

    def tiled(overlap: int, margin: int | None) -> float:
        prob = sliding_window(network, case.image, case.mask, (16,) * 3, (overlap,) * 3, CPU,
                              "float32", margin=margin and (margin,) * 3)  # fmt: skip
        return dice(prob > 0.5, case.label > 0)

    assert scored[case.name] == pytest.approx(tiled(8, 4))  # half-patch overlap, quarter margin
    assert tiled(8, 4) != pytest.approx(tiled(4, None))  # the tiling shows in the score


def test_resuming_with_another_recall_weight_is_refused(tmp_path: Path) -> None:
    cfg = TrainConfig(iterations=2, batch_size=1, patch_size=(8,) * 3, precision="float32")
    ckpt = tmp_path / "ckpt.safetensors"
    train(build_network(TINY), [blob_case(2, side=24)], cfg, ckpt, progress=False, until=1)
    with pytest.raises(CheckpointError, match=r"--recall-weight 0\.5"):
        train(build_network(TINY), [blob_case(2, side=24)], replace(cfg, recall_weight=0.7), ckpt,
              progress=False)  # fmt: skip


def _tiny_model_file(path: Path) -> Path:
    torch.manual_seed(0)
    card = make_card(TINY, ["FLAIR"], patch_size=[16, 16, 16], overlap=[4, 4, 4])
    return save_model(path, build_network(TINY), card)


def test_model_file_round_trip(tmp_path: Path) -> None:
    path = _tiny_model_file(tmp_path / "m.safetensors")
    model = load_model(path)
    assert model.inputs == ["FLAIR"] and model.config == TINY
    assert json.loads((tmp_path / "m.json").read_text()) == read_card(path)
    torch.manual_seed(0)
    original = build_network(TINY)
    for key, value in original.state_dict().items():
        assert torch.equal(model.network.state_dict()[key], value)
    case = blob_case(3, side=16)
    prob = segment(model, [case.image[0]], case.mask, (1.0, 1.0, 1.0), precision="float32")
    assert prob.shape == case.label.shape and prob.min() >= 0 and prob.max() <= 1


def test_card_must_match_the_network_inputs() -> None:
    with pytest.raises(ValueError, match="channels"):
        make_card(TINY, ["FLAIR", "T1w"])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing", "does not exist"),
        ("garbage", "not a readable safetensors"),
        ("no_card", "no mdgru-bids model card"),
        ("version", "card version"),
        ("weights", "do not fit"),
    ],
)
def test_bad_model_files_give_one_line_errors(tmp_path: Path, damage: str, message: str) -> None:
    path = tmp_path / "bad.safetensors"
    if damage == "garbage":
        path.write_bytes(b"\x00\x01 this is not a model")
    elif damage == "no_card":
        save_file({"w": torch.zeros(2)}, str(path))
    elif damage == "version":
        card = make_card(TINY, ["FLAIR"], format_version=99)
        save_file({"w": torch.zeros(2)}, str(path), metadata={"card": json.dumps(card)})
    elif damage == "weights":
        card = make_card(TINY, ["FLAIR"])
        save_file({"stem.weight": torch.zeros(2)}, str(path), metadata={"card": json.dumps(card)})
    with pytest.raises(ModelFileError, match=message) as err:
        load_model(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_zero_voxels_inside_the_brain_mask_do_not_shift_the_normalisation() -> None:
    """A skull-stripped image under a generous brain mask: its zeros are not brain."""
    rng = np.random.default_rng(0)
    brain = np.zeros((20, 20, 20), bool)
    brain[4:16, 4:16, 4:16] = True
    image = np.where(brain, rng.normal(100, 10, brain.shape), 0).astype(np.float32)
    generous = np.zeros_like(brain)
    generous[2:18, 2:18, 2:18] = True  # 58 % of it is background
    x = network_input([image], generous, (1.0, 1.0, 1.0), None)[0]
    np.testing.assert_allclose(x, network_input([image], brain, (1.0,) * 3, None)[0])
    assert abs(x[brain].mean()) < 1e-4 and abs(x[brain].std() - 1) < 1e-3
    assert (x[~brain] == 0).all()


def test_channel_norm_normalises_each_voxel_on_its_own() -> None:
    norm = ChannelNorm(6)
    x = torch.randn(1, 6, 5, 5, 5)
    y = norm(x)
    torch.testing.assert_close(y.mean(dim=1), torch.zeros(1, 5, 5, 5), atol=1e-5, rtol=0)
    x2 = x.clone()
    x2[..., 3:, :, :] = 100.0  # other voxels change: this one's output does not
    torch.testing.assert_close(norm(x2)[..., :3, :, :], y[..., :3, :, :])


def test_loss_is_soft_dice_at_half_and_weighs_misses_above() -> None:
    torch.manual_seed(0)
    target = (torch.rand(2, 6, 6, 6) < 0.3).long()
    logits = torch.randn(2, 2, 6, 6, 6)
    p, t = torch.softmax(logits, 1)[:, 1], target.float()
    soft_dice = (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    expected = F.cross_entropy(logits, target) + 1 - soft_dice
    torch.testing.assert_close(loss_fn(logits, target), expected)
    sure = torch.stack([-8.0 * (2 * t - 1), 8.0 * (2 * t - 1)], dim=1)  # right everywhere
    misses, false = sure.clone(), sure.clone()
    misses[:, :, 0] = torch.tensor([8.0, -8.0]).view(1, 2, 1, 1)  # slab 0: background
    false[:, :, 0] = torch.tensor([-8.0, 8.0]).view(1, 2, 1, 1)  # slab 0: lesion
    assert loss_fn(misses, target, 0.8) > loss_fn(misses, target) + 0.01
    assert loss_fn(false, target, 0.8) < loss_fn(false, target) - 0.01


def test_cards_without_a_norm_build_the_instance_norm_network_they_were_trained_as() -> None:
    old = {k: v for k, v in default_config(1).to_dict().items() if k != "norm"}
    assert NetworkConfig.from_dict(old).norm == "instance"
    assert default_config(1).norm == "channel"
    with pytest.raises(ValueError, match="unknown norm"):
        NetworkConfig(norm="batch")


def _lesion_voxels(net: nn.Module, image: np.ndarray, mask: np.ndarray, side: int) -> int:
    prob = sliding_window(net, image, mask, (side,) * 3, (side // 4,) * 3, CPU, "float32")
    return int((prob > 0.5).sum())


def test_lesion_volume_does_not_depend_on_crop_padding_patch_size_or_offset(
    blob_model: tuple,
) -> None:
    net = blob_model[0]
    case = blob_case(5, side=40, n_blobs=8)
    ijk = np.indices(case.mask.shape) - 19.5
    mask = (ijk**2).sum(0) < 17**2  # a "brain" with background around it
    image = np.where(mask, case.image, 0.0).astype(np.float32)
    reference = _lesion_voxels(net, image, mask, 16)
    truth = int((case.label.astype(bool) & mask).sum())
    assert reference > 0.5 * truth  # real lesions found, not an empty answer
    tight = bounding_box(mask)
    variants = {
        "tight crop": (image[(slice(None), *tight)], mask[tight], 16),
        "zero-padded 12": (np.pad(image, [(0, 0)] + [(12, 12)] * 3), np.pad(mask, 12), 16),
        "shifted 5": (np.pad(image, [(0, 0)] + [(5, 0)] * 3), np.pad(mask, [(5, 0)] * 3), 16),
        "patch 24": (image, mask, 24),
        "patch 32": (image, mask, 32),
    }
    for name, (im, m, side) in variants.items():
        voxels = _lesion_voxels(net, im, m, side)
        assert abs(voxels - reference) <= 0.05 * reference, (name, voxels, reference)
        if side == 16:  # tiles start at the brain's box: the same patches, the same answer
            assert voxels == reference, name


def test_test_time_augmentation_averages_the_mirrored_answers(tmp_path: Path) -> None:
    model = load_model(_tiny_model_file(tmp_path / "m.safetensors"))
    case = blob_case(3, side=20)
    image, mask = case.image[0], case.mask
    plain = segment(model, [image], mask, (1.0, 1.0, 1.0), precision="float32")
    mirrored = [
        np.flip(segment(model, [np.flip(image, axis)], np.flip(mask, axis), (1.0,) * 3,
                        precision="float32"), axis)
        for axis in range(3)
    ]  # fmt: skip
    tta = segment(model, [image], mask, (1.0, 1.0, 1.0), precision="float32", tta=True)
    np.testing.assert_allclose(tta, (plain + sum(mirrored)) / 4, atol=1e-6)
    assert not np.allclose(tta, plain, atol=1e-4)  # the mirrored answers differ: TTA did work


def test_update_card_records_figures_and_keeps_the_weights(
    tiny_model: Path, tmp_path: Path
) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(tiny_model.read_bytes())
    before = load_model(path)
    update_card(path, repeatability={"joint_1mm": {"volume_cv_pct": np.float64(0.5)}})
    after = load_model(path)
    assert after.card["repeatability"] == {"joint_1mm": {"volume_cv_pct": 0.5}}
    assert {k: v for k, v in after.card.items() if k != "repeatability"} == before.card
    for name, tensor in before.network.state_dict().items():
        assert torch.equal(tensor, after.network.state_dict()[name])
    assert json.loads(path.with_suffix(".json").read_text()) == after.card
