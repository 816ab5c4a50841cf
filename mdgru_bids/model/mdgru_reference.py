"""An obviously-correct, slow MD-GRU: one direction at a time, one slice at a time.

It is the oracle the fast layer in ``mdgru_bids.model.mdgru`` is tested (and benchmarked)
against: it reads the same parameters and follows the published equations literally.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mdgru_bids.model.mdgru import DIRECTIONS, MDGRU


def _slice(x: torch.Tensor, axis: int, t: int) -> torch.Tensor:
    """The 2-D slice t of a (N, C, D, H, W) volume across spatial axis 0, 1 or 2."""
    return x.select(axis + 2, t)


def oracle_forward(layer: MDGRU, x: torch.Tensor) -> torch.Tensor:
    """Evaluate ``layer`` on ``x`` with the textbook slice-by-slice recurrence."""
    hid, pad = layer.hidden, layer.kernel_size // 2
    total = torch.zeros(x.shape[0], hid, *x.shape[2:], dtype=x.dtype)
    for d, (axis, reverse) in enumerate(DIRECTIONS):
        w, u, b = layer.input_weight[d], layer.state_weight[d], layer.bias[d]
        w_z, w_r, w_h = w[:hid], w[hid : 2 * hid], w[2 * hid :]
        u_z, u_r, u_h = u[:hid], u[hid : 2 * hid], u[2 * hid :]
        b_z, b_r, b_h = b[:hid], b[hid : 2 * hid], b[2 * hid :]
        length = x.shape[axis + 2]
        order = range(length - 1, -1, -1) if reverse else range(length)
        first = _slice(x, axis, 0)
        h = torch.zeros(x.shape[0], hid, *first.shape[2:], dtype=x.dtype)
        outputs = {}
        for t in order:
            xt = _slice(x, axis, t)
            z = torch.sigmoid(F.conv2d(xt, w_z, b_z, padding=pad) + F.conv2d(h, u_z, padding=pad))
            z = z.clamp(max=layer.keep_max)
            r = torch.sigmoid(F.conv2d(xt, w_r, b_r, padding=pad) + F.conv2d(h, u_r, padding=pad))
            cand = torch.tanh(
                F.conv2d(xt, w_h, b_h, padding=pad) + r * F.conv2d(h, u_h, padding=pad)
            )
            h = z * h + (1 - z) * cand
            outputs[t] = h
        total = total + torch.stack([outputs[t] for t in range(length)], dim=axis + 2)
    return total / len(DIRECTIONS)
