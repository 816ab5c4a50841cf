"""Model files: safetensors weights with the model card (JSON) in the file's metadata.

One file carries both, so a weight file can never travel without the facts needed to use it
(inputs, normalisation, patch size, training data, measured accuracy). A readable copy of the
card is written next to it as ``<name>.json``. Nothing is ever pickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from mdgru_bids import __version__
from mdgru_bids.atomic import replacing
from mdgru_bids.errors import BadDataError, MissingInputError
from mdgru_bids.lesions.components import LESION_THRESHOLD, MIN_LESION_MM3
from mdgru_bids.model.network import NetworkConfig, build_network

FORMAT = "mdgru-bids-model"
FORMAT_VERSION = 1


#: The models shipped in mdgru_bids/data, by the name ``--model`` takes.
BUNDLED = {"flair": "mdgru_flair.safetensors", "flair-t1w": "mdgru_flair_t1w.safetensors"}
#: FLAIR only: on the real longitudinal pair it found change better than FLAIR + T1w (appeared
#: voxel Dice 0.57 vs 0.45; benchmarks/results/eval_mdgru_flair*.json), and it does not depend
#: on the quality of a T1w, which clinical protocols often acquire with thick slices.
DEFAULT_MODEL = "flair"


def bundled_model(name: str) -> Path:
    """Path of a bundled model by name (it may not be installed)."""
    return Path(__file__).resolve().parents[1] / "data" / BUNDLED[name]


class ModelFileError(Exception):
    """A model file that cannot be used; the message is one line naming the file and the fix."""


@dataclass
class Model:
    """A network ready for inference together with its card."""

    network: nn.Module
    card: dict

    @property
    def config(self) -> NetworkConfig:
        return NetworkConfig.from_dict(self.card["network"])

    @property
    def inputs(self) -> list[str]:
        return list(self.card["inputs"])


def make_card(config: NetworkConfig, inputs: list[str], **fields: object) -> dict:
    """A model card with the required fields; training and accuracy facts go in ``fields``."""
    n_in = len(inputs) * (2 if fields.get("normalisation", {}).get("highpass_mm") else 1)
    if n_in != config.in_channels:
        raise ValueError(
            f"{len(inputs)} inputs {inputs} give {n_in} channels but the network takes "
            f"{config.in_channels}"
        )
    card = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mdgru_bids_version": __version__,
        "network": config.to_dict(),
        "inputs": list(inputs),
        "normalisation": {"method": "zscore-brain", "highpass_mm": None},
        "patch_size": [64, 64, 64],
        "overlap": [16, 16, 16],
        "threshold": LESION_THRESHOLD,
        "min_lesion_mm3": MIN_LESION_MM3,
    }
    card.update(fields)
    return card


def save_model(path: str | Path, network: nn.Module, card: dict) -> Path:
    """Write weights + card atomically (temp file, then rename), and the readable card."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in network.state_dict().items()}
    write_safetensors(path, tensors, {"card": json.dumps(card)})
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return path


def update_card(path: str | Path, **fields: object) -> None:
    """Rewrite a model file with ``fields`` set in its card (figures a benchmark measured), its
    weights unchanged."""
    model = load_model(path)
    save_model(path, model.network, json.loads(json.dumps(model.card | fields, default=float)))


def write_safetensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> None:
    """Write a safetensors file atomically (a reader never sees half a model)."""
    with replacing(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def read_card(path: str | Path) -> dict:
    """The card embedded in a model file, checked for format and version."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(
            f"model file {path} does not exist: give the path of a .safetensors model"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFileError(
            f"model file {path} is not a readable safetensors file ({err}): "
            "re-download it or train a new one with mdgru-bids-train"
        ) from None
    try:
        card = json.loads(meta["card"])
    except (KeyError, json.JSONDecodeError):
        raise ModelFileError(
            f"model file {path} has no mdgru-bids model card: it was not written by mdgru-bids"
        ) from None
    if card.get("format") != FORMAT:
        raise ModelFileError(
            f"model file {path} is not an mdgru-bids model (format {card.get('format')!r})"
        )
    if card.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"model file {path} has card version {card.get('format_version')}, this mdgru-bids "
            f"reads version {FORMAT_VERSION}: use a matching mdgru-bids or retrain the model"
        )
    return card


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Model:
    """Rebuild the network a model file describes and load its weights, in eval mode."""
    card = read_card(path)
    try:
        network = build_network(NetworkConfig.from_dict(card["network"]))
    except (KeyError, TypeError, ValueError) as err:
        raise ModelFileError(f"model file {path} describes an unknown network ({err})") from None
    try:
        network.load_state_dict(load_file(str(path)))
    except (RuntimeError, SafetensorError) as err:
        first = str(err).strip().splitlines()[0]
        raise ModelFileError(
            f"model file {path} has weights that do not fit its network ({first}): "
            "the file is damaged; re-download or retrain it"
        ) from None
    return Model(network.to(device).eval(), card)


def choose_model(spec: str | None) -> tuple[Path, dict]:
    """The model file to use and its card; one-line errors for missing or broken files.

    ``spec`` is a bundled model's name, a model file, or None for the default bundled model
    (the same for every participant and session, so results stay comparable).
    """
    spec = spec or DEFAULT_MODEL
    if spec in BUNDLED:
        path = bundled_model(spec)
        if not path.is_file():
            raise MissingInputError(
                f"the bundled model {path.name} is not installed: pass --model PATH"
            )
    else:
        path = Path(spec)
    if not path.is_file():
        raise MissingInputError(
            f"model file {path} does not exist: check --model (or use a bundled model: "
            f"{', '.join(BUNDLED)})"
        )
    path = path.resolve()  # the nodes run in their own folders
    try:
        return path, read_card(path)
    except ModelFileError as err:
        raise BadDataError(str(err)) from None
