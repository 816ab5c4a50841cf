"""Segmentation networks built from MD-GRU blocks, and the configurations we ship.

Two architectures:

* ``flat`` — the original MD-GRU network (Andermatt et al.): MD-GRU blocks at full
  resolution, each MD-GRU → 1×1×1 convolution → tanh (no activation after the last, which
  gives the logits). The ``reference`` configuration (hidden 16/32/64, outputs 25/45/classes,
  7×7 kernels) has about 8 M parameters and is slow on a CPU; it is kept for comparison.
* ``multiscale`` — our default: the same MD-GRU blocks on 1/2 and 1/4 resolution feature
  maps in a small encoder–decoder, with full-resolution convolutions only at the input and
  output. Recurrence over 8× and 64× fewer voxels is what makes CPU inference practical.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mdgru_bids.model.mdgru import MDGRU


@dataclass(frozen=True)
class NetworkConfig:
    """Everything needed to rebuild a network; stored in every model card."""

    architecture: str = "multiscale"
    in_channels: int = 2
    n_classes: int = 2
    hidden: tuple[int, ...] = (16, 32)
    outputs: tuple[int, ...] = (24, 32)
    kernel_size: tuple[int, ...] = (5, 5)
    stem: int = 8
    dropconnect: float = 0.5
    # "channel" normalises each voxel over its channels, so a voxel's output does not depend
    # on what else is in the patch; "instance" (over the patch) is what the first models used
    norm: str = "instance"
    # cap on the MD-GRU keep gate (1: none, the original); below 1 the recurrent state fades
    # along a sweep, so the answer depends less on where inference's tiles start
    keep_max: float = 1.0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"unknown architecture {self.architecture!r}; choose one of {sorted(ARCHITECTURES)}"
            )
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; choose one of {sorted(NORMS)}")
        if not 0.0 < self.keep_max <= 1.0:
            raise ValueError(f"keep_max must be in (0, 1], got {self.keep_max}")
        if not len(self.hidden) == len(self.outputs) == len(self.kernel_size):
            raise ValueError("hidden, outputs and kernel_size need one entry per block")

    @property
    def divisor(self) -> int:
        """Patch sides must be multiples of this (the total down-sampling)."""
        return 2 ** len(self.hidden) if self.architecture == "multiscale" else 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NetworkConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("hidden", "outputs", "kernel_size"):
            if key in known:
                known[key] = tuple(int(v) for v in known[key])
        return cls(**known)


def reference_config(in_channels: int = 2, n_classes: int = 2) -> NetworkConfig:
    """The original MD-GRU network of Andermatt et al. (about 8 M parameters)."""
    return NetworkConfig(
        architecture="flat",
        in_channels=in_channels,
        n_classes=n_classes,
        hidden=(16, 32, 64),
        outputs=(25, 45, n_classes),
        kernel_size=(7, 7, 7),
        stem=0,
    )


def default_config(in_channels: int = 2, n_classes: int = 2) -> NetworkConfig:
    """Our CPU-friendly default: MD-GRU at 1/2 and 1/4 resolution in an encoder–decoder.

    Channel normalisation: with instance normalisation the same image gave 4.6 to 10.2 mL of
    lesions depending on crop, padding and patch size (patch statistics change with them).
    """
    return NetworkConfig(in_channels=in_channels, n_classes=n_classes, norm="channel")


CONFIGS = {"default": default_config, "reference": reference_config}


class MDGRUBlock(nn.Module):
    """MD-GRU → 1×1×1 convolution → tanh (the tanh is left out on a network's last block)."""

    def __init__(
        self,
        c_in: int,
        hidden: int,
        c_out: int,
        k: int,
        dropconnect: float,
        keep_max: float = 1.0,
        last: bool = False,
    ) -> None:
        super().__init__()
        self.mdgru = MDGRU(c_in, hidden, k, dropconnect=dropconnect, keep_max=keep_max)
        self.project = nn.Conv3d(hidden, c_out, 1)
        self.last = last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.mdgru(x))
        return y if self.last else torch.tanh(y)


class FlatMDGRUNet(nn.Module):
    """The original architecture: a stack of full-resolution MD-GRU blocks."""

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        if cfg.outputs[-1] != cfg.n_classes:
            raise ValueError("the last block of a flat network must output n_classes channels")
        widths = (cfg.in_channels, *cfg.outputs)
        n = len(cfg.hidden)
        self.blocks = nn.Sequential(
            *(
                MDGRUBlock(
                    widths[i],
                    cfg.hidden[i],
                    widths[i + 1],
                    cfg.kernel_size[i],
                    cfg.dropconnect,
                    cfg.keep_max,
                    last=i == n - 1,
                )
                for i in range(n)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class MultiScaleMDGRUNet(nn.Module):
    """Encoder–decoder whose every level below full resolution is an MD-GRU block.

    Full resolution: a 3×3×3 stem; each level halves the grid with a 2×2×2 strided
    convolution and runs an MD-GRU block; the decoder goes back up with trilinear
    up-sampling and 1×1×1 fusions of the skip connections; a 3×3×3 convolution and a
    1×1×1 classifier at full resolution give the logits. Every convolution outside the
    MD-GRU blocks is followed by instance normalisation and a leaky ReLU.
    """

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        self.stem = nn.Conv3d(cfg.in_channels, cfg.stem, 3, padding=1)
        self.down = nn.ModuleList()
        self.blocks = nn.ModuleList()
        c = cfg.stem
        for hidden, out, k in zip(cfg.hidden, cfg.outputs, cfg.kernel_size, strict=True):
            self.down.append(nn.Conv3d(c, out, 2, stride=2))
            self.blocks.append(MDGRUBlock(out, hidden, out, k, cfg.dropconnect, cfg.keep_max))
            c = out
        skips = (cfg.stem, *cfg.outputs[:-1])
        self.fuse = nn.ModuleList(
            nn.Conv3d(c_deep + c_skip, c_skip, 1)
            for c_deep, c_skip in zip(cfg.outputs[::-1], skips[::-1], strict=True)
        )
        self.head = nn.Sequential(
            nn.Conv3d(cfg.stem, cfg.stem, 3, padding=1),
            _norm_act(cfg.stem, cfg.norm),
            nn.Conv3d(cfg.stem, cfg.n_classes, 1),
        )
        self.stem_act = _norm_act(cfg.stem, cfg.norm)
        self.down_act = nn.ModuleList(_norm_act(out, cfg.norm) for out in cfg.outputs)
        self.fuse_act = nn.ModuleList(_norm_act(c, cfg.norm) for c in skips[::-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last is the layout oneDNN convolves fastest (the 1×1×1 classifier 20× so)
        x = x.contiguous(memory_format=torch.channels_last_3d)
        y = self.stem_act(_stem_conv(self.stem, x))
        skips = []
        for down, act, block in zip(self.down, self.down_act, self.blocks, strict=True):
            skips.append(y)
            y = block(act(down(y)))
        for fuse, act, skip in zip(self.fuse, self.fuse_act, skips[::-1], strict=True):
            y = act(_fuse_up(fuse, y, skip))
        return self.head(y)


def _stem_conv(stem: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """``stem`` on ``x``; on the CPU with fewer than 4 input channels zero-padded to 4.

    Same result, but oneDNN's float32 3-D convolution is about 10× slower with 2 input
    channels than with 4 (82 vs 8 ms for the default stem on a 96³ patch, 2-core AVX-512 CPU).
    """
    pad = max(0, 4 - x.shape[1])
    if not pad or x.device.type != "cpu":
        return stem(x)
    x = F.pad(x, (0, 0, 0, 0, 0, 0, 0, pad)).contiguous(memory_format=torch.channels_last_3d)
    weight = F.pad(stem.weight, (0, 0, 0, 0, 0, 0, 0, pad))
    return F.conv3d(x, weight, stem.bias, stem.stride, stem.padding, stem.dilation, stem.groups)


def _fuse_up(fuse: nn.Conv3d, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """``fuse`` (1×1×1) of [deep up-sampled to skip's grid, skip], mixing deep before up-sampling.

    A 1×1×1 convolution commutes with trilinear interpolation (whose weights sum to 1), and
    in the default configuration it has fewer output channels than deep has: up-sampling
    after it moves less data, and the full-resolution concatenation is never built.
    """
    w_deep, w_skip = fuse.weight.split((deep.shape[1], skip.shape[1]), dim=1)
    up = F.interpolate(
        F.conv3d(deep, w_deep), size=skip.shape[2:], mode="trilinear", align_corners=False
    )
    return F.conv3d(skip, w_skip, fuse.bias) + up


def _norm_act(channels: int, norm: str) -> nn.Sequential:
    """Normalisation and leaky ReLU after the convolutions (as in nnU-Net).

    With tanh alone, the first version's convolutions drifted into saturation within a few
    hundred Adam steps and the network collapsed to predicting background everywhere.
    """
    return nn.Sequential(NORMS[norm](channels), nn.LeakyReLU(0.01), _ChannelsLast())


class ChannelNorm(nn.Module):
    """Layer normalisation over the channels of each voxel, with a learnt scale and shift."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight.view(shape) + self.bias.view(
            shape
        )


NORMS = {
    "instance": lambda channels: nn.InstanceNorm3d(channels, affine=True),
    "channel": ChannelNorm,
}


class _ChannelsLast(nn.Module):
    """Back to channels-last, which instance normalisation gives up.

    The convolution after it runs faster so (whole network 20 % faster in float32 on a 96³
    patch, measured).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last_3d)


ARCHITECTURES = {"flat": FlatMDGRUNet, "multiscale": MultiScaleMDGRUNet}


def build_network(cfg: NetworkConfig) -> nn.Module:
    """The network a configuration describes, freshly initialised."""
    return ARCHITECTURES[cfg.architecture](cfg)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def widen_inputs(network: nn.Module, cfg: NetworkConfig, in_channels: int) -> nn.Module:
    """A copy of ``network`` that takes ``in_channels`` inputs, the first ``cfg.in_channels``
    as before: the weights of the new input channels start at zero, so the widened network
    gives exactly the old answer until training teaches it to use them (a FLAIR+T1w model
    fine-tuned from a FLAIR model)."""
    if in_channels < cfg.in_channels:
        raise ValueError(f"cannot narrow a {cfg.in_channels}-input network to {in_channels}")
    wide = build_network(replace(cfg, in_channels=in_channels))
    state = wide.state_dict()
    for name, old in network.state_dict().items():
        new = state[name]
        if old.shape != new.shape:
            (axis,) = np.flatnonzero(np.array(old.shape) != np.array(new.shape))
            new.zero_()
            new.narrow(int(axis), 0, old.shape[axis]).copy_(old)
        else:
            new.copy_(old)
    wide.load_state_dict(state)
    return wide
