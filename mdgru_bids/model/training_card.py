"""What a trained model's card records about its training: data, recipe and compute, so a
reader can judge the model and repeat its training."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mdgru_bids.model.files import Model, make_card
from mdgru_bids.model.inference import inference_tiling
from mdgru_bids.model.network import NetworkConfig
from mdgru_bids.model.training import History, TrainConfig
from mdgru_bids.phantom.bids import REFERENCES, TEMPLATE_NOTICE


@dataclass(frozen=True)
class Recipe:
    """How a model was trained, beyond the training loop's own configuration."""

    command: str
    inputs: list[str]
    highpass_mm: float | None
    inference_patch_side: int
    datasets: dict[str, dict]  # name -> dataset_facts(...)
    validation_cases: list[str]
    synthetic_share: float  # 0: no synthetic data
    synthetic_patch_sides: list[int]
    template_anatomy: bool
    anatomies_from_cases: list[str]
    synthetic_settings: dict[str, Any] | None = None  # SynthConfig as a dict: its settings


def dataset_facts(root: Path, cases: list[str]) -> dict:
    """Name, licence and references from the dataset's description, and the cases used."""
    try:
        description = json.loads((root / "dataset_description.json").read_text())
    except (OSError, json.JSONDecodeError):
        description = {}
    return {
        "name": description.get("Name", root.name),
        "license": description.get("License"),
        "references": description.get("ReferencesAndLinks", []),
        "cases": cases,
    }


def training_card(
    config: NetworkConfig,
    recipe: Recipe,
    history: History,
    cfg: TrainConfig,
    device: torch.device,
    prep_s: float,
    train_s: float,
    init: Model | None,
) -> dict:
    """Card: inputs, normalisation, inference settings, and how the model was trained.

    ``training_seconds`` covers every call of a run resumed in pieces; ``total_training_seconds``
    adds the training time of the model this one started from, so a fine-tuned model's card
    says what all of it cost.
    """
    side = recipe.inference_patch_side
    last = history.validation[-1] if history.validation else None
    return make_card(
        config,
        list(recipe.inputs),
        normalisation={"method": "zscore-brain", "highpass_mm": recipe.highpass_mm},
        patch_size=[side] * 3,
        **inference_tiling(side, config.keep_max),
        training={
            "command": recipe.command,
            "datasets": recipe.datasets,
            "validation_cases": recipe.validation_cases,
            "iterations": history.iteration,
            "planned_iterations": cfg.iterations,
            "batch_size": cfg.batch_size,
            "patch_size": list(cfg.patch_size),
            "learning_rate": cfg.learning_rate,
            "consistency": cfg.consistency,
            "recall_weight": cfg.recall_weight,
            "consistency_shift": cfg.consistency_shift,
            "seed": cfg.seed,
            "precision": cfg.precision,
            "device": str(device),
            "hardware": f"{platform.machine()}, {torch.get_num_threads()} threads",
            "torch": torch.__version__,
            "preprocessing_seconds": round(prep_s, 1),
            "training_seconds": round(history.seconds, 1),  # every call that trained it
            "this_call_seconds": round(train_s, 1),
            "total_training_seconds": round(history.seconds + total_seconds(init), 1),
            "final_loss": float(np.mean(history.loss[-50:])) if history.loss else None,
            "synthetic": _synthetic(recipe),
            "init_model": None
            if init is None
            else {
                "command": init.card.get("training", {}).get("command"),
                "mdgru_bids_version": init.card.get("mdgru_bids_version"),
                "total_training_seconds": total_seconds(init),
            },
        },
        accuracy={"validation_dice": last["mean_dice"] if last else None},
    )


def _synthetic(recipe: Recipe) -> dict | None:
    if recipe.synthetic_share <= 0:
        return None
    return {
        "share": recipe.synthetic_share,
        "patch_sides": recipe.synthetic_patch_sides,
        "template_anatomy": {"license": TEMPLATE_NOTICE, "references": REFERENCES}
        if recipe.template_anatomy
        else None,
        "anatomies_from_cases": recipe.anatomies_from_cases,
        "generator": "mdgru_bids.synth",
        "settings": recipe.synthetic_settings,
    }


def total_seconds(model: Model | None) -> float:
    """All the training time behind ``model``, including the models it started from."""
    if model is None:
        return 0.0
    training = model.card.get("training", {})
    return float(training.get("total_training_seconds", training.get("training_seconds", 0.0)))
