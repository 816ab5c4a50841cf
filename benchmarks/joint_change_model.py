"""A joint two-time-point change model against differencing the per-session masks (issue 6).

MSSEG-2's best methods segmented new lesions from both time points at once instead of
comparing two independent segmentations. This experiment trains such a model here and scores
both approaches on the same pairs, with the same truth and the same metrics:

- Pairs come from published participant outputs: the later session's preprocessed FLAIR,
  resampled to 1 mm in its own orientation (as the segmentation's subject space is 1 mm), and
  the earlier session's FLAIR brought onto that grid through subject space.
- Training target (phantoms): voxels of the lesions the truth's fate table calls new or
  enlarging, outside the earlier session's lesion; other lesions are background.
- The network starts from the bundled FLAIR-only segmentation model, whose stem gets a second,
  zero-initialised input channel for the earlier session: it starts out segmenting the later
  session (with what it learned on the real cross-sectional cases) and learns to drop the
  lesions that were already there.
- Scores: held-out phantoms against the truth's appeared voxels (on the later FLAIR grid), and
  the real longitudinal pair (Lesjak et al. 2016, CC-BY) against the experts' change mask in
  its common space (``eval_models.common_space_scores``).

Usage: python benchmarks/joint_change_model.py --train OUT_DIR TRUTH_DIR [--train ...]
       --phantom OUT_DIR TRUTH_DIR --longitudinal OUT_DIR DATA_DIR --work DIR
       [--iterations N] [--json FILE]
(the OUT_DIRs hold ``mdgru-bids participant`` outputs made with the FLAIR-only model)
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import ants
import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval_models import common_space_scores, mask_scores  # noqa: E402

from mdgru_bids.lesions.change import ENLARGING, NEW  # noqa: E402
from mdgru_bids.lesions.components import threshold_mask  # noqa: E402
from mdgru_bids.model.files import bundled_model, load_model, make_card, save_model  # noqa: E402
from mdgru_bids.model.inference import segment  # noqa: E402
from mdgru_bids.model.network import NetworkConfig, build_network  # noqa: E402
from mdgru_bids.model.normalise import network_input  # noqa: E402
from mdgru_bids.model.training import Case, TrainConfig, train  # noqa: E402
from mdgru_bids.transforms import invert_linear  # noqa: E402

INPUTS = ["FLAIR", "FLAIR_previous"]
GRID_MM = 1.0


@dataclass
class Pair:
    """Two consecutive sessions of one participant on the later session's 1 mm grid."""

    name: str
    session: str  # the later session, e.g. ses-02
    flair: ants.ANTsImage  # the later preprocessed FLAIR on its own grid
    later: np.ndarray  # on the 1 mm grid
    earlier: np.ndarray
    mask: np.ndarray
    grid: ants.ANTsImage
    earlier_to_later: list[str]  # ANTs transforms: the earlier FLAIR onto the later one


def anat(out: Path, sub: str, ses: str, stem: str) -> Path:
    return out / sub / ses / "anat" / f"{sub}_{ses}_{stem}"


def load_pairs(out: Path, scratch: Path) -> list[Pair]:
    """Every pair of consecutive sessions with outputs in ``out`` (inverse transforms are
    written to ``scratch``)."""
    pairs = []
    for subject in sorted(out.glob("sub-*/")):
        sub = subject.name
        sessions = sorted(p.name for p in subject.glob("ses-*/") if (p / "anat").is_dir())
        for earlier, later in itertools.pairwise(sessions):  # names sort as acquired here
            flair = ants.image_read(str(anat(out, sub, later, "desc-preproc_FLAIR.nii.gz")))
            grid = ants.resample_image(flair, (GRID_MM,) * 3, use_voxels=False, interp_type=0)
            xfm = "from-FLAIR_to-subject_mode-image_xfm.txt"
            chain = [
                str(anat(out, sub, earlier, xfm)),
                str(invert_linear(anat(out, sub, later, xfm), scratch / f"{sub}_{later}_inv.txt")),
            ]
            moved = ants.apply_transforms(
                grid,
                ants.image_read(str(anat(out, sub, earlier, "desc-preproc_FLAIR.nii.gz"))),
                chain,
                interpolator="linear",
            )
            mask = ants.resample_image_to_target(
                ants.image_read(str(anat(out, sub, later, "desc-brain_mask.nii.gz"))),
                grid,
                interp_type="nearestNeighbor",
            )
            pairs.append(Pair(
                f"{sub}_{later}", later, flair,
                ants.resample_image_to_target(flair, grid, interp_type="linear").numpy(),
                moved.numpy(), mask.numpy() > 0, grid, chain,
            ))  # fmt: skip
    return pairs


def truth_appeared(pair: Pair, truth: Path) -> np.ndarray:
    """On the later FLAIR grid: voxels of new or enlarging truth lesions outside the earlier
    session's lesions (brought over through the estimated transforms)."""
    sub, later = pair.name.split("_")[0], pair.session
    fates = pd.read_csv(truth / sub / f"{sub}_desc-lesionfate_table.tsv", sep="\t")
    fates = fates[fates["session_after"] == later]
    earlier = str(fates["session_before"].iloc[0])
    grown = fates.loc[fates["fate"].isin(["new", "enlarging"]), "lesion_id"].to_numpy()
    ids = ants.image_read(str(anat(truth, sub, later, "desc-lesionid_dseg.nii.gz"))).numpy()
    before = ants.apply_transforms(
        pair.flair,
        ants.image_read(str(anat(truth, sub, earlier, "label-lesion_mask.nii.gz"))),
        pair.earlier_to_later,
        interpolator="nearestNeighbor",
    ).numpy()
    return np.isin(ids, grown) & (before == 0)


def case(pair: Pair, target: np.ndarray) -> Case:
    label = ants.resample_image_to_target(
        pair.flair.new_image_like(target.astype(np.float32)), pair.grid,
        interp_type="nearestNeighbor",
    ).numpy() > 0  # fmt: skip
    image = network_input([pair.later, pair.earlier], pair.mask, (GRID_MM,) * 3, None)
    return Case(pair.name, image, label.astype(np.int64), pair.mask)


def initial_network() -> tuple[torch.nn.Module, NetworkConfig]:
    """The FLAIR-only segmentation model with a zero-weighted second input channel."""
    seg = load_model(bundled_model("flair"))
    config = NetworkConfig.from_dict({**seg.card["network"], "in_channels": len(INPUTS)})
    network = build_network(config)
    weights = seg.network.state_dict()
    stem = weights["stem.weight"]
    weights["stem.weight"] = torch.cat((stem, torch.zeros_like(stem)), dim=1)
    network.load_state_dict(weights)
    return network, config


def predict(model, pair: Pair) -> ants.ANTsImage:
    """The model's appeared-lesion mask on the later FLAIR grid."""
    prob = segment(model, [pair.later, pair.earlier], pair.mask, (GRID_MM,) * 3)
    back = ants.resample_image_to_target(
        pair.grid.new_image_like(prob.astype(np.float32)), pair.flair, interp_type="linear"
    )
    mask = threshold_mask(
        back.numpy(), model.card["threshold"], model.card["min_lesion_mm3"], pair.flair.spacing
    )
    return pair.flair.new_image_like(mask.astype(np.float32))


def differencing(out: Path, pair: Pair) -> ants.ANTsImage:
    """The app's appeared voxels (new + enlarging) from its change map."""
    sub = pair.name.split("_")[0]
    change = ants.image_read(str(anat(out, sub, pair.session, "desc-lesionchange_dseg.nii.gz")))
    return change.new_image_like(np.isin(change.numpy(), (NEW, ENLARGING)).astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", nargs=2, type=Path, action="append", required=True,
                        metavar=("OUT_DIR", "TRUTH_DIR"))  # fmt: skip
    parser.add_argument("--phantom", nargs=2, type=Path, metavar=("OUT_DIR", "TRUTH_DIR"))
    parser.add_argument("--longitudinal", nargs=2, type=Path, metavar=("OUT_DIR", "DATA_DIR"))
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    cases = [
        case(p, truth_appeared(p, truth))
        for out, truth in args.train
        for p in load_pairs(out, args.work)
    ]
    print(f"{len(cases)} training pairs, {sum(int(c.label.sum()) for c in cases)} target voxels")
    network, config = initial_network()
    cfg = TrainConfig(iterations=args.iterations, batch_size=2, patch_size=(48, 48, 48),
                      learning_rate=1e-3, precision="bfloat16", seed=3)  # fmt: skip
    prepared = time.perf_counter()
    history = train(network, cases, cfg, checkpoint=args.work / "checkpoint.safetensors")
    trained = time.perf_counter()
    card = make_card(config, INPUTS, patch_size=[96, 96, 96], overlap=[24, 24, 24], training={
        "experiment": "benchmarks/joint_change_model.py", "pairs": [c.name for c in cases],
        "iterations": cfg.iterations, "final_loss": float(np.mean(history.loss[-50:])),
        "initialised_from": bundled_model("flair").name,
    })  # fmt: skip
    model_path = save_model(args.work / "joint_change_flair.safetensors", network, card)
    model = load_model(model_path)
    results: dict = {
        "pairs": len(cases),
        "iterations": cfg.iterations,
        "prepare_seconds": round(prepared - start, 1),
        "train_seconds": round(trained - prepared, 1),
        "final_loss": card["training"]["final_loss"],
    }
    if args.phantom:
        out, truth = args.phantom
        rows = []
        for pair in load_pairs(out, args.work):
            target = truth_appeared(pair, truth)
            for method, mask in (("joint", predict(model, pair)),
                                 ("differencing", differencing(out, pair))):  # fmt: skip
                rows.append(
                    {
                        "pair": pair.name,
                        "method": method,
                        **mask_scores(mask.numpy() > 0, target, float(np.prod(mask.spacing))),
                    }
                )
        table = pd.DataFrame(rows)
        print(table.to_string(index=False))
        results["phantom"] = table.groupby("method").mean(numeric_only=True).to_dict("index")
    if args.longitudinal:
        out, data = args.longitudinal
        results["longitudinal"] = {}
        for pair in load_pairs(out, args.work):
            sub = pair.name.split("_")[0]
            for method, mask in (("joint", predict(model, pair)),
                                 ("differencing", differencing(out, pair))):  # fmt: skip
                row = common_space_scores(data, sub, pair.session, mask)
                results["longitudinal"][f"{sub}_{method}"] = row
                print(sub, method, " ".join(f"{k}={v:.3f}" for k, v in row.items()))
    print(json.dumps(results, indent=2, default=float))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
