"""MD-GRU speed and memory figures (printed, never asserted).

1. The layer (C=2, H=16, k=7): forward and forward+backward, slice-by-slice oracle vs the fast
   layer, float32 and bfloat16 autocast, at 32³, 48³ and 64³.
2. Whole-volume inference of a 1 mm brain-sized input (160×192×160, 2 channels) with the
   default and the reference network, each in its own process so peak RSS is its own.

Usage: python benchmarks/bench_mdgru.py [--json FILE] [--quick] [--no-reference-volume]
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mdgru_bids.model.compute import autocast_dtype  # noqa: E402
from mdgru_bids.model.inference import sliding_window  # noqa: E402
from mdgru_bids.model.mdgru import MDGRU  # noqa: E402
from mdgru_bids.model.mdgru_reference import oracle_forward  # noqa: E402
from mdgru_bids.model.network import CONFIGS, build_network, count_parameters  # noqa: E402

BRAIN = (160, 192, 160)


def _best_of(fn, repeats: int) -> float:
    fn()  # warm-up: oneDNN picks and caches its kernels on the first call
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _pass(fn, x: torch.Tensor, grad: bool, dtype: torch.dtype | None):
    """A closure running one forward (or forward+backward) pass of ``fn`` on ``x``."""

    def call() -> None:
        with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            if grad:
                fn(x.clone().requires_grad_(True)).float().sum().backward()
            else:
                with torch.inference_mode():
                    fn(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize()

    return call


def layer_figures(sides: list[int], repeats: int, device: torch.device) -> list[dict]:
    rows = []
    for side in sides:
        torch.manual_seed(0)
        layer = MDGRU(2, 16, 7).to(device)
        x = torch.randn(1, 2, side, side, side, device=device)
        variants = [("fast", layer, None), ("fast", layer, torch.bfloat16)]
        if device.type == "cpu":
            variants.insert(0, ("oracle", functools.partial(oracle_forward, layer), None))
        for grad in (False, True):
            base = None
            for name, fn, dtype in variants:
                seconds = _best_of(_pass(fn, x, grad, dtype), repeats)
                base = base or seconds
                rows.append(
                    {
                        "device": device.type,
                        "side": side,
                        "pass": "fwd+bwd" if grad else "fwd",
                        "impl": name,
                        "precision": "bfloat16" if dtype else "float32",
                        "seconds": seconds,
                        "voxels_per_s": side**3 / seconds,
                        "speedup_vs_first": base / seconds,
                    }
                )
    return rows


def volume_worker(config: str, precision: str, patch: int) -> dict:
    """Run in a child process: one whole-volume inference; report time and peak RSS."""
    torch.manual_seed(0)
    net = build_network(CONFIGS[config]()).eval()
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(2, *BRAIN)).astype(np.float32)
    grid = np.indices(BRAIN, sparse=True)
    centre = [n / 2 for n in BRAIN]
    radii = [n * 0.42 for n in BRAIN]
    mask = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) < 1
    device = torch.device("cpu")
    start = time.perf_counter()
    sliding_window(net, vol, mask, (patch,) * 3, (patch // 4,) * 3, device, precision)
    seconds = time.perf_counter() - start
    return {
        "config": config,
        "parameters": count_parameters(net),
        "precision": precision,
        "autocast": str(autocast_dtype(device, precision)),
        "patch": patch,
        "seconds": seconds,
        "peak_rss_gib": _peak_rss_gib(),
    }


def _peak_rss_gib() -> float:
    """This process's peak RSS. VmHWM starts afresh at exec; getrusage's ru_maxrss does not
    (a child started from a large parent would report the parent's size)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def volume_figures(configs: list[str], precisions: list[str]) -> list[dict]:
    rows = []
    for config in configs:
        patch = 96 if config == "default" else 64
        for precision in precisions:
            out = subprocess.run(
                [sys.executable, __file__, "--volume-worker", config, precision, str(patch)],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def cpu_facts() -> dict:
    """The CPU model and whether it has the bfloat16 units autocast relies on: AVX512-BF16
    roughly doubles convolution speed over float32, AMX tiles (Intel) several times more."""
    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines()
                  if ln.startswith("model name")), "unknown")  # fmt: skip
    flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                      if ln.startswith("flags")), []))  # fmt: skip
    return {"model": model, "avx512_bf16": "avx512_bf16" in flags, "amx": "amx_bf16" in flags}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--quick", action="store_true", help="48³ only, fewer repeats")
    parser.add_argument(
        "--no-reference-volume",
        action="store_true",
        help="skip the slow whole-volume run of the reference network",
    )
    parser.add_argument("--volume-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.volume_worker:
        config, precision, patch = args.volume_worker
        print(json.dumps(volume_worker(config, precision, int(patch))))
        return

    cpu = cpu_facts()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"CPU {cpu['model']}, capability {torch.backends.cpu.get_cpu_capability()}, "
        f"AVX512-BF16 {cpu['avx512_bf16']}, AMX {cpu['amx']}"
    )
    sides = [48] if args.quick else [32, 48, 64]
    layer = layer_figures(sides, 1 if args.quick else 3, torch.device("cpu"))
    if torch.cuda.is_available():
        layer += layer_figures([64, 96], 5, torch.device("cuda"))
    print("\nMD-GRU layer (C=2, H=16, k=7); speed-up relative to the first row of each block")
    print(
        f"{'dev':4} {'side':>4} {'pass':8} {'impl':7} {'precision':9} {'seconds':>9} "
        f"{'Mvox/s':>8} {'speed-up':>8}"
    )
    for r in layer:
        print(
            f"{r['device']:4} {r['side']:>4} {r['pass']:8} {r['impl']:7} {r['precision']:9} "
            f"{r['seconds']:9.3f} {r['voxels_per_s'] / 1e6:8.3f} {r['speedup_vs_first']:8.2f}"
        )

    configs = ["default"] if args.no_reference_volume or args.quick else ["default", "reference"]
    volume = volume_figures(configs, ["float32", "bfloat16"])
    print(f"\nWhole-volume inference, {BRAIN[0]}×{BRAIN[1]}×{BRAIN[2]} × 2 channels (CPU)")
    print(
        f"{'config':10} {'params':>9} {'precision':9} {'patch':>5} {'seconds':>8} {'peak GiB':>8}"
    )
    for r in volume:
        print(
            f"{r['config']:10} {r['parameters']:9d} {r['precision']:9} {r['patch']:5d} "
            f"{r['seconds']:8.1f} {r['peak_rss_gib']:8.2f}"
        )
    if args.json:
        figures = {"cpu": cpu, "layer": layer, "volume": volume}
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
