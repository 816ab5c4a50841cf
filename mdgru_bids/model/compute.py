"""Where and in which arithmetic the network runs.

The command lines offer these choices, and resolve ``auto`` once per run
(:func:`resolve_compute`), so every worker computes, and every record names, the same device
and precision. Nothing here imports torch until it is asked to decide, so the argument
parsers stay quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mdgru_bids.errors import UsageError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "float32", "bfloat16", "float16")
DEFAULT_DEVICE = "auto"
DEFAULT_PRECISION = "auto"


def resolve_device(spec: str = DEFAULT_DEVICE) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without it is an error, not a fallback."""
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {spec} was asked for but no CUDA device is available")
    return device


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for a precision choice; None means plain float32.

    'auto' is bfloat16 on CPUs with native bfloat16 maths (AVX512-BF16 or AMX) and on CUDA
    devices that support it, float16 on older CUDA devices, else float32.
    """
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if precision == "float32":
        return None
    if precision != "auto":
        return getattr(torch, precision)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bfloat16() else None


def resolve_precision(device: torch.device, precision: str) -> str:
    """The arithmetic ``precision`` means on ``device``: 'auto' made concrete, for the record."""
    dtype = autocast_dtype(device, precision)
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")


def resolve_compute(device: str, precision: str) -> tuple[torch.device, str]:
    """``--device`` and ``--precision`` as used: a usage error (exit 64) for a device that
    is not there."""
    try:
        chosen = resolve_device(device)
    except (ValueError, RuntimeError) as err:
        raise UsageError(f"--device {device}: {err}") from None
    return chosen, resolve_precision(chosen, precision)


def cpu_has_fast_bfloat16() -> bool:
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
