"""The fast MD-GRU layer against the slice-by-slice oracle, and its symmetries."""

from __future__ import annotations

import pytest
import torch

from mdgru_bids.model import mdgru
from mdgru_bids.model.mdgru import DIRECTIONS, MDGRU, _direction_groups
from mdgru_bids.model.mdgru_reference import oracle_forward


def _layer(c: int = 2, hidden: int = 4, k: int = 3, seed: int = 0, keep_max: float = 1.0) -> MDGRU:
    torch.manual_seed(seed)
    layer = MDGRU(c, hidden, k, keep_max=keep_max)
    with torch.no_grad():  # non-trivial biases, so a mix-up of gates cannot hide
        layer.bias.uniform_(-1, 1)
    return layer


@pytest.mark.parametrize(
    "shape", [(1, 2, 8, 8, 8), (2, 2, 5, 7, 9), (1, 2, 1, 6, 3), (3, 2, 4, 4, 4), (1, 2, 6, 6, 4)]
)
def test_forward_matches_oracle(shape: tuple[int, ...]) -> None:
    layer = _layer()
    x = torch.randn(shape)
    with torch.no_grad():
        expected = oracle_forward(layer, x)
        got = layer(x)
    assert got.shape == (shape[0], 4, *shape[2:])
    assert (got - expected).abs().max().item() <= 1e-5


def test_capped_keep_gate_matches_oracle_forward_and_backward() -> None:
    layer = _layer(keep_max=0.6)
    with torch.no_grad():  # gate biases high enough that the cap binds for most voxels
        layer.bias[:, :4] = 2.0
    x = torch.randn(1, 2, 5, 6, 4, requires_grad=True)
    with torch.no_grad():
        assert (layer(x) - oracle_forward(layer, x)).abs().max().item() <= 1e-5
    weights = torch.randn(1, 4, 5, 6, 4)
    (layer(x) * weights).sum().backward()
    fast = x.grad.clone()
    x.grad = None
    (oracle_forward(layer, x) * weights).sum().backward()
    assert (fast - x.grad).abs().max().item() <= 1e-5 * max(1.0, x.grad.abs().max().item())


@pytest.mark.parametrize("keep_max", [1.0, 0.5])
def test_capped_keep_gate_forgets_the_start_of_a_sweep(keep_max: float) -> None:
    """With the candidate blind to the state, the first slice reaches slice t only through
    the keep gate: by at most keep_max^t (about 1e-5 at t = 16 for 0.5); uncapped, a keep
    gate near 1 carries it across the line."""
    layer = _layer(keep_max=keep_max)
    with torch.no_grad():
        layer.state_weight[:, 8:] = 0  # candidate rows (z, r, candidate; hidden 4)
        layer.bias[:, :4] = 8.0  # σ(8) ≈ 0.9997: the uncapped gate keeps nearly everything
    x = torch.randn(1, 2, 17, 3, 3)
    moved = x.clone()
    moved[:, :, 0] += 5.0
    with torch.no_grad():
        far = (layer(moved) - layer(x))[:, :, 16].abs().max().item()
    if keep_max < 1:
        assert far <= 2 * keep_max**16
    else:
        assert far > 0.01


def test_inference_mode_matches_oracle_with_kernel_7() -> None:
    layer = _layer(c=3, hidden=5, k=7)
    x = torch.randn(1, 3, 9, 6, 7)
    with torch.inference_mode():
        assert (layer(x) - oracle_forward(layer, x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("shape", [(2, 2, 5, 6, 4), (1, 2, 5, 5, 5), (1, 2, 4, 5, 5)])
def test_backward_matches_oracle(shape: tuple[int, ...]) -> None:
    layer = _layer()
    x = torch.randn(shape, requires_grad=True)
    weights = torch.randn(shape[0], 4, *shape[2:])
    (layer(x) * weights).sum().backward()
    fast = [x.grad.clone()] + [p.grad.clone() for p in layer.parameters()]
    x.grad = None
    layer.zero_grad()
    (oracle_forward(layer, x) * weights).sum().backward()
    slow = [x.grad] + [p.grad for p in layer.parameters()]
    for a, b in zip(fast, slow, strict=True):
        assert (a - b).abs().max().item() <= 1e-5 * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("slices_per_chunk", [1, 2])
def test_input_computed_in_chunks_matches_oracle(
    slices_per_chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of 1 and of 2 slices (5 = 2 + 2 + 1) give the same forward and backward."""
    layer = _layer()
    shape = (2, 2, 5, 5, 5)  # one group of six directions, 2·5·5·6·12·4 bytes per slice
    monkeypatch.setattr(mdgru, "_CHUNK_BYTES", slices_per_chunk * 2 * 5 * 5 * 6 * 12 * 4)
    x = torch.randn(shape, requires_grad=True)
    weights = torch.randn(shape[0], 4, *shape[2:])
    got = layer(x)
    (got * weights).sum().backward()
    grad = x.grad.clone()
    x.grad = None
    expected = oracle_forward(layer, x)
    (expected * weights).sum().backward()
    assert (got - expected).abs().max().item() <= 1e-5
    assert (grad - x.grad).abs().max().item() <= 1e-5
    with torch.no_grad():
        assert (layer(x) - expected).abs().max().item() <= 1e-5


def test_gradcheck_double() -> None:
    layer = _layer(hidden=2).double()
    x = torch.randn(1, 2, 3, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,), atol=1e-6)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_flipping_an_axis_swaps_its_two_directions(axis: int) -> None:
    """Mirror the input along an axis = swap that axis' two directions (and mirror the 2-D
    kernels of the other axes' directions along the mirrored axis)."""
    layer = _layer()
    x = torch.randn(1, 2, 5, 6, 7)
    mirrored = _layer()
    fwd, bwd = DIRECTIONS.index((axis, False)), DIRECTIONS.index((axis, True))
    with torch.no_grad():
        for p_src, p_dst in zip(layer.parameters(), mirrored.parameters(), strict=True):
            p_dst[fwd], p_dst[bwd] = p_src[bwd].clone(), p_src[fwd].clone()
        for d, (b, _) in enumerate(DIRECTIONS):
            if b != axis:
                in_plane = [a for a in range(3) if a != b].index(axis)
                for w in (mirrored.input_weight, mirrored.state_weight):
                    w[d] = w[d].flip(in_plane - 2)
        flipped = layer(x.flip(axis + 2)).flip(axis + 2)
        assert (flipped - mirrored(x)).abs().max().item() <= 1e-5
        # a real symmetry only with the swap: the unswapped layer gives something else
        assert (flipped - layer(x)).abs().max().item() > 1e-3


def test_directions_with_the_same_sweep_shape_run_together() -> None:
    """All six directions of a cube are one grouped sweep; otherwise those that fit share one."""
    assert _direction_groups((8, 8, 8)) == [[0, 1, 2, 3, 4, 5]]
    assert _direction_groups((6, 6, 4)) == [[0, 1, 2, 3], [4, 5]]
    assert _direction_groups((5, 7, 9)) == [[0, 1], [2, 3], [4, 5]]


def test_bfloat16_autocast_stays_close_to_float32() -> None:
    layer = _layer(hidden=8, k=5)
    x = torch.randn(1, 2, 12, 12, 12)
    with torch.inference_mode():
        ref = layer(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = layer(x)
    assert low.dtype == torch.float32
    assert (low - ref).abs().max().item() < 0.05


def test_dropconnect_only_in_training() -> None:
    torch.manual_seed(0)
    layer = MDGRU(2, 4, 3, dropconnect=0.3)
    x = torch.randn(1, 2, 4, 4, 4)
    layer.eval()
    with torch.no_grad():
        assert torch.equal(layer(x), layer(x))
        layer.train()
        assert not torch.allclose(layer(x), layer(x))


def test_rejects_bad_shapes_and_arguments() -> None:
    with pytest.raises(ValueError, match="odd"):
        MDGRU(2, 4, 4)
    with pytest.raises(ValueError, match="expected"):
        MDGRU(2, 4, 3)(torch.randn(1, 3, 4, 4, 4))
