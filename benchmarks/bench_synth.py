"""How fast the synthetic training data are made (printed figures, never asserted).

Patches per second, one thread, from the template anatomy, for each training patch side:
mdgru_bids.synth's sampler, and for comparison the same steps with torchio's transforms
(RandomAffine + RandomElasticDeformation, RandomLabelsToImage, RandomAnisotropy,
RandomBiasField, RandomGamma, RandomNoise) on the same label crops, where torchio is
installed. A training step (batch 2, default network) is timed beside them, so the figures
say whether making data keeps up with training. Also writes a figure of sample patches.

Usage: python benchmarks/bench_synth.py [--sides 48 64 80] [--n 20] [--json FILE] [--png FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mdgru_bids.model.network import build_network, default_config  # noqa: E402
from mdgru_bids.model.training import loss_fn  # noqa: E402
from mdgru_bids.synth.anatomy import template_anatomy  # noqa: E402
from mdgru_bids.synth.deform import crop, margin_side  # noqa: E402
from mdgru_bids.synth.sampler import PatchSampler, SynthConfig  # noqa: E402


def ours(sampler: PatchSampler, side: int, n: int) -> tuple[float, list]:
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    pairs = [sampler.patch(side, rng) for _ in range(n)]
    return n / (time.perf_counter() - start), pairs


def with_torchio(sampler: PatchSampler, side: int, n: int) -> float | None:
    try:
        import torchio as tio
    except ImportError:
        return None
    anatomy = sampler.anatomies[0]
    cfg = sampler.cfg
    big = margin_side(side, cfg.deform)
    transform = tio.Compose([
        tio.RandomAffine(scales=cfg.deform.scale, degrees=cfg.deform.rotate_deg),
        tio.RandomElasticDeformation(max_displacement=cfg.deform.elastic_vox),
        tio.CropOrPad(side),
        tio.RandomLabelsToImage(label_key="label", image_key="image"),
        tio.RandomAnisotropy(downsampling=(3, 5), p=cfg.acquisition.thick_slice_p),
        tio.RandomBiasField(coefficients=cfg.acquisition.bias),
        tio.RandomGamma(log_gamma=cfg.acquisition.gamma_sd),
        tio.RandomNoise(std=cfg.acquisition.noise),
    ])  # fmt: skip
    likely, _ = sampler._centre_pools(anatomy)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(n):
        centre = np.unravel_index(likely[rng.integers(likely.size)], anatomy.labels.shape)
        labels = crop(anatomy.labels, np.array(centre), big)
        subject = tio.Subject(label=tio.LabelMap(tensor=torch.from_numpy(labels[None]).long()))
        transform(subject)
    return n / (time.perf_counter() - start)


def train_step_seconds(side: int) -> float:
    torch.manual_seed(0)
    net = build_network(default_config(in_channels=1)).train()
    opt = torch.optim.Adam(net.parameters())
    x, y = torch.randn(2, 1, side, side, side), torch.zeros(2, side, side, side, dtype=torch.long)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return min(times[1:])


def figure(pairs: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 6, figsize=(18, 9.5))
    for ax in axes.flat:
        ax.axis("off")
    for ax, (x, y) in zip(axes.flat, pairs, strict=False):
        image, target = x[0].numpy(), y.numpy()
        k = int(np.argmax(target.sum((0, 1)))) if target.any() else image.shape[2] // 2
        ax.imshow(image[:, :, k].T, cmap="gray", origin="lower", vmin=-3, vmax=4)
        if target[:, :, k].any():
            ax.contour(target[:, :, k].T, [0.5], colors="red", linewidths=0.6)
    fig.suptitle("synthetic FLAIR patches (z-scored) with their lesion targets (red)")
    fig.tight_layout()
    fig.savefig(path, dpi=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[48, 64, 80])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--png", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    sampler = PatchSampler([template_anatomy()], SynthConfig())
    print(f"template anatomy: {time.perf_counter() - start:.1f} s")
    results = {}
    for side in args.sides:
        rate, pairs = ours(sampler, side, args.n)
        tio_rate = with_torchio(sampler, side, args.n)
        torch.set_num_threads(2)
        step = train_step_seconds(side)
        torch.set_num_threads(1)
        results[side] = {"mdgru_bids_per_s": rate, "torchio_per_s": tio_rate,
                         "train_step_s_batch2_2threads": step}  # fmt: skip
        tio_text = f"{tio_rate:.2f}" if tio_rate else "n/a"
        print(
            f"{side}³: mdgru_bids.synth {rate:.2f} patches/s, torchio {tio_text} patches/s; "
            f"training step (batch 2, 2 threads) {step:.2f} s = {2 / step:.2f} patches/s"
        )
        if args.png and side == args.sides[-1]:
            figure(pairs, args.png)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
