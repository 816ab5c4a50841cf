"""The multi-dimensional gated recurrent unit (MD-GRU) layer of Andermatt et al. (2016).

For each of the three axes and both directions an independent convolutional GRU sweeps the
volume slice by slice, with k×k 2-D convolutions over the other two axes::

    z, r = σ(W_zr∗x_t + b_zr + U_zr∗h_{t-1})
    h̃    = tanh(W_h∗x_t + b_h + r ⊙ (U_h∗h_{t-1}))
    h_t  = z ⊙ h_{t-1} + (1 − z) ⊙ h̃,        h_0 = 0

and the layer output is the mean of the six directional outputs. Optionally the keep gate
is capped, z ≤ ``keep_max`` < 1 (ours, not in the paper): the state's direct carry-over
then shrinks at least geometrically along a sweep, so what lies far up it fades instead of
reaching across the whole patch, and the answer depends less on where the patch starts.

Why this implementation is fast (figures: benchmarks/bench_mdgru.py): directions whose
sweeps have the same length and slice shape (all six in a cube, at least the two of an axis)
run in lock-step as one grouped convolution per step, so a step costs one call per operation
for the whole group, which also keeps a GPU from being launch-bound; the input-side convolutions
run batched over a chunk of slices before the recurrence reads them; the three state
convolutions of a direction are fused into one; every tensor a step touches is channels-last,
the layout oneDNN convolves fastest, so the gate arithmetic never re-lays out data; tanh is
computed through the cheaper sigmoid; and without autograd each step's output is added
straight into the result. Under bfloat16 autocast the convolutions run in bfloat16 while the
recurrent state and the gate arithmetic stay float32.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

#: Directions in parameter order: (axis, reverse). Axis 0..2 index the D, H, W dimensions.
DIRECTIONS: tuple[tuple[int, bool], ...] = tuple((a, r) for a in range(3) for r in (False, True))

# Permutation of (N, C, D, H, W) that puts the swept axis right after the batch dimension,
# giving (N, T, C, A, B); its inverse restores the layout.
_TO_SWEEP = {0: (0, 2, 1, 3, 4), 1: (0, 3, 1, 2, 4), 2: (0, 4, 1, 2, 3)}
_FROM_SWEEP = {a: tuple(p.index(i) for i in range(5)) for a, p in _TO_SWEEP.items()}
# The same for a channels-last (N, D, H, W, C) volume, giving (N, T, A, B, C).
_SWEEP_VIEW = {0: (0, 1, 2, 3, 4), 1: (0, 2, 1, 3, 4), 2: (0, 3, 1, 2, 4)}
#: Size of the input pre-activation chunks the sweep computes ahead (see _preactivations).
_CHUNK_BYTES = 4 * 2**20


class MDGRU(nn.Module):
    """Six directional convolutional GRUs over a 3-D volume, averaged.

    Maps (N, in_channels, D, H, W) to (N, hidden, D, H, W).
    ``dropconnect`` is the rate p of Gaussian DropConnect (multiplicative noise with mean 1 and
    variance p / (1 − p)) on the gate weights, applied in training mode only. ``keep_max``
    caps the keep gate z (1: no cap, the original MD-GRU).
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        kernel_size: int = 7,
        dropconnect: float = 0.0,
        keep_max: float = 1.0,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        if not 0.0 <= dropconnect < 1.0:
            raise ValueError(f"dropconnect must be in [0, 1), got {dropconnect}")
        if not 0.0 < keep_max <= 1.0:
            raise ValueError(f"keep_max must be in (0, 1], got {keep_max}")
        self.in_channels, self.hidden, self.kernel_size = in_channels, hidden, kernel_size
        self.dropconnect, self.keep_max = dropconnect, keep_max
        k, n_dir = kernel_size, len(DIRECTIONS)
        # Gate order along the 3·hidden dimension: z, r, candidate.
        self.input_weight = nn.Parameter(torch.empty(n_dir, 3 * hidden, in_channels, k, k))
        self.state_weight = nn.Parameter(torch.empty(n_dir, 3 * hidden, hidden, k, k))
        self.bias = nn.Parameter(torch.empty(n_dir, 3 * hidden))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform kernels; gate biases 1 (start by remembering), candidate bias 0."""
        k2 = self.kernel_size**2
        for w, fan_in in ((self.input_weight, self.in_channels), (self.state_weight, self.hidden)):
            bound = math.sqrt(6.0 / (fan_in * k2 + self.hidden * k2))
            nn.init.uniform_(w, -bound, bound)
        with torch.no_grad():
            self.bias.zero_()
            self.bias[:, : 2 * self.hidden] = 1.0

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, hidden={self.hidden}, "
            f"kernel_size={self.kernel_size}, dropconnect={self.dropconnect}, "
            f"keep_max={self.keep_max}"
        )

    def _gate_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        w, u = self.input_weight, self.state_weight
        if self.training and self.dropconnect > 0:
            std = math.sqrt(self.dropconnect / (1.0 - self.dropconnect))
            w = w * (1.0 + std * torch.randn_like(w))
            u = u * (1.0 + std * torch.randn_like(u))
        return w, u

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (N, {self.in_channels}, D, H, W), got {tuple(x.shape)}")
        w, u = self._gate_weights()
        w, u, b = (_scale_candidate(p, self.hidden) for p in (w, u, self.bias))
        if torch.is_autocast_enabled(x.device.type):  # cast the state weights once, not per step
            u = u.to(torch.get_autocast_dtype(x.device.type))
        groups = _direction_groups(x.shape[2:])
        if torch.is_grad_enabled() and (x.requires_grad or u.requires_grad):
            total = sum(_sweep(x, g, w[g], u[g], b[g], self.keep_max) for g in groups)
        else:  # without autograd every step's output is added straight into one result
            total = x.new_zeros((x.shape[0], *x.shape[2:], self.hidden))  # channels-last
            for g in groups:
                _sweep_into(total, x, g, w[g], u[g], b[g], self.keep_max)
            total = total.permute(0, 4, 1, 2, 3)
        return total / len(DIRECTIONS)


def _scale_candidate(p: torch.Tensor, hidden: int) -> torch.Tensor:
    """Double the candidate rows (the last third of dimension 1) of a gate parameter."""
    scale = p.new_ones(3 * hidden)
    scale[2 * hidden :] = 2.0
    return p * scale.view(1, -1, *([1] * (p.dim() - 2)))


def _direction_groups(shape: tuple[int, ...]) -> list[list[int]]:
    """Indices of the directions whose sweeps share their length and slice shape."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for d, (axis, _) in enumerate(DIRECTIONS):
        key = (shape[axis], *(s for i, s in enumerate(shape) if i != axis))
        groups.setdefault(key, []).append(d)
    return list(groups.values())


def _group_start(
    x: torch.Tensor, group: list[int], w: torch.Tensor, u: torch.Tensor, b: torch.Tensor
) -> tuple[Iterator[torch.Tensor], torch.Tensor, torch.Tensor]:
    """The per-step input pre-activations, the zero state and the grouped state weights.

    The state is laid out (N, A, B, direction, hidden): channels-last for the grouped
    convolution, whose weights stack the directions' (3·hidden, hidden, k, k) kernels, also
    channels-last (else the convolution would re-lay them out at every step).
    """
    axis = DIRECTIONS[group[0]][0]
    a_len, b_len = (s for i, s in enumerate(x.shape[2:]) if i != axis)
    h = x.new_zeros((x.shape[0], a_len, b_len, len(group), u.shape[2]))
    u = u.flatten(0, 1).contiguous(memory_format=torch.channels_last)
    return _preactivations(x, group, w, b), h, u


def _sweep(
    x: torch.Tensor,
    group: list[int],
    w: torch.Tensor,
    u: torch.Tensor,
    b: torch.Tensor,
    keep_max: float,
) -> torch.Tensor:
    """Run a group of directions in lock-step; return the sum of their outputs."""
    steps, h, u = _group_start(x, group, w, u, b)
    seq = []
    for gx_t in steps:
        h = _step(gx_t, h, u, keep_max)
        seq.append(h)
    states = torch.stack(seq, dim=1)  # (N, T, A, B, G, hidden)
    total = None
    # unbind's backward stacks the directions' gradients into one tensor (indexing each
    # direction out would build a zero-filled gradient of all states per direction)
    for d, part in zip(group, states.unbind(-2), strict=True):
        axis, reverse = DIRECTIONS[d]
        part = part.flip(1) if reverse else part
        part = part.permute(0, 1, 4, 2, 3).permute(_FROM_SWEEP[axis])
        total = part if total is None else total + part
    return total


def _sweep_into(
    out: torch.Tensor,
    x: torch.Tensor,
    group: list[int],
    w: torch.Tensor,
    u: torch.Tensor,
    b: torch.Tensor,
    keep_max: float,
) -> None:
    """Run a group of directions in lock-step, adding every step into the channels-last ``out``."""
    steps, h, u = _group_start(x, group, w, u, b)
    views = [out.permute(_SWEEP_VIEW[DIRECTIONS[d][0]]) for d in group]  # each (N, T, A, B, H)
    t_len = views[0].shape[1]
    for t, gx_t in enumerate(steps):
        h = _step(gx_t, h, u, keep_max)
        for j, d in enumerate(group):
            views[j][:, t_len - 1 - t if DIRECTIONS[d][1] else t] += h[:, :, :, j]


def _preactivations(
    x: torch.Tensor, group: list[int], w: torch.Tensor, b: torch.Tensor
) -> Iterator[torch.Tensor]:
    """W∗x_t + b for each step of a group of directions, (N, A, B, G, 3, H), in sweep order.

    The directions' input slices are put side by side as channels and convolved as G groups.
    Computed a few slices at a time, batched over the slices: large batches keep the
    convolution efficient, while chunks of about ``_CHUNK_BYTES`` are still in cache when the
    recurrence reads them (one tensor for the whole volume would be read back from memory,
    and for wide layers would need gigabytes). Chunks are unbound into steps, so autograd
    never builds a zero-filled gradient of a whole chunk per step.
    """
    cl = x.permute(0, 2, 3, 4, 1)  # (N, D, H, W, C)
    views = [(cl.permute(_SWEEP_VIEW[DIRECTIONS[d][0]]), DIRECTIONS[d][1]) for d in group]
    n, t_len, a_len, b_len, c = views[0][0].shape
    g, gates = w.shape[:2]
    chunk = max(1, _CHUNK_BYTES // (n * a_len * b_len * g * gates * 4))
    w, b = w.flatten(0, 1), b.flatten()
    for t0 in range(0, t_len, chunk):
        tc = min(chunk, t_len - t0)
        # a reverse direction reads its input back to front
        parts = [
            v[:, t_len - t0 - tc : t_len - t0].flip(1) if rev else v[:, t0 : t0 + tc]
            for v, rev in views
        ]
        flat = torch.cat(parts, dim=-1).view(n * tc, a_len, b_len, g * c).permute(0, 3, 1, 2)
        pre = F.conv2d(flat, w, b, padding=w.shape[-1] // 2, groups=g).permute(0, 2, 3, 1)
        yield from pre.reshape(n, tc, a_len, b_len, g, 3, gates // 3).unbind(1)


def _step(gx_t: torch.Tensor, h: torch.Tensor, u: torch.Tensor, keep_max: float) -> torch.Tensor:
    """One GRU step of a group of directions; gx_t (N, A, B, G, 3, H), h (N, A, B, G, H).

    The gate arithmetic runs in h's precision: under bfloat16 autocast only the convolutions
    are bfloat16, the recurrent state stays float32 (and CPU element-wise maths is faster so).
    """
    n, a_len, b_len, g, hidden = h.shape
    hc = h.reshape(n, a_len, b_len, g * hidden).permute(0, 3, 1, 2)
    gh = F.conv2d(hc, u, padding=u.shape[-1] // 2, groups=g).permute(0, 2, 3, 1)
    gh = gh.reshape(gx_t.shape).to(h.dtype)
    x_zr, x_c = gx_t.split((2, 1), dim=-2)
    h_zr, h_c = gh.split((2, 1), dim=-2)
    z, r = torch.add(x_zr, h_zr).sigmoid_().unbind(-2)
    if keep_max < 1.0:
        z = z.clamp(max=keep_max)
    # tanh(y) = 2σ(2y) − 1, and σ is several times cheaper than tanh on the CPU; the factor 2
    # is already in the candidate weights (see _scale_candidate).
    s = torch.addcmul(x_c.squeeze(-2), r, h_c.squeeze(-2)).sigmoid_()
    return torch.lerp(2 * s - 1, h, z)
