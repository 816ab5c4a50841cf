"""Scoring mdgru-bids derivatives against manual masks: which files pair up, and the table.

Files are paired by their BIDS entities (pybids' parser), less the entities that say which map
a file holds (``label``, ``desc``, ``space``, suffix, extension), so ``sub-01_ses-02`` of the
predictions meets ``sub-01_ses-02`` of the truth whatever else either name carries.

* ``lesion``: predicted ``*_label-lesion_mask`` against truth ``*_label-lesion_mask``.
* ``new``: the appeared voxels (labels 2 new and 3 enlarging) of a predicted
  ``*_desc-lesionchange_dseg`` against the truth's, read from its own
  ``*_desc-lesionchange_dseg`` (the same labels) or else a ``*_label-newlesion_mask``
  (MSSEG-2 style: nonzero = appeared).

Files with a ``space-`` entity are not read: scores are taken on each session's own grid,
which the truth must share (mdgru-bids writes its masks and change maps there).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from mdgru_bids.errors import BadDataError, MissingInputError, NothingSelectedError
from mdgru_bids.io_spec import OUTPUTS
from mdgru_bids.lesions.change import ENLARGING, NEW
from mdgru_bids.lesions.metrics import (
    DetectionRule,
    absolute_volume_difference,
    dice,
    hd95,
    lesion_detection,
)
from mdgru_bids.nifti import same_grid

#: Entities that name the map in a file rather than the image it belongs to.
MAP_ENTITIES = frozenset({"suffix", "extension", "label", "desc", "space", "datatype"})
COLUMNS = [
    "image",
    "map",
    "dice",
    "lesion_f1",
    "lesion_precision",
    "lesion_recall",
    "truth_lesions",
    "predicted_lesions",
    "detected_lesions",
    "truth_mm3",
    "predicted_mm3",
    "avd_percent",
    "hd95_mm",
]
STATISTICS = {"mean": np.nanmean, "median": np.nanmedian}


@dataclass(frozen=True)
class MapFile:
    """A kind of file holding a binary map: how to know it, and which voxel values are in."""

    suffix: str
    entity: str
    value: str
    labels: tuple[int, ...] | None = None  # None: every nonzero voxel

    def matches(self, entities: dict) -> bool:
        return (
            entities.get("suffix") == self.suffix
            and entities.get(self.entity) == self.value
            and "space" not in entities
        )

    def read(self, data: np.ndarray) -> np.ndarray:
        return data != 0 if self.labels is None else np.isin(data, self.labels)


def _our(role: str, labels: tuple[int, ...] | None = None) -> MapFile:
    """The map file of one of our outputs, as io_spec names it (one entity besides suffix)."""
    ((entity, value),) = OUTPUTS[role].entities
    return MapFile(OUTPUTS[role].suffix, entity, value, labels)


LESION_MASK = _our("lesion_mask")
CHANGE_DSEG = _our("change_dseg", (NEW, ENLARGING))
NEW_LESION_MASK = MapFile("mask", "label", "newlesion")
#: Per map: the prediction's file kinds, and the truth's in order of preference.
MAPS = {
    "lesion": ((LESION_MASK,), (LESION_MASK,)),
    "new": ((CHANGE_DSEG,), (CHANGE_DSEG, NEW_LESION_MASK)),
}


@dataclass(frozen=True)
class Found:
    """One file of a map, on one side."""

    path: Path
    kind: MapFile
    image: str  # e.g. sub-01_ses-02: the entities that pair it, in file-name order


@dataclass(frozen=True)
class Pair:
    map: str
    prediction: Found
    truth: Found


def find_pairs(pred_dir: Path, truth_dir: Path) -> tuple[list[Pair], list[str]]:
    """Predictions and truths that belong to the same image, and a warning for every truth
    without a prediction (left out, which would flatter the summary if unnoticed).

    Raises MissingInputError for a missing folder or one without maps, NothingSelectedError
    when no prediction meets a truth, BadDataError when two files claim one image.
    """
    found = []
    for name, folder, side in (("PRED_DIR", pred_dir, 0), ("TRUTH_DIR", truth_dir, 1)):
        if not folder.is_dir():
            raise MissingInputError(f"{name} {folder} does not exist or is not a directory")
        files = _index(folder, side)
        if not files:
            raise MissingInputError(
                f"{name} {folder} holds no sub-*/**/*_label-lesion_mask.nii[.gz], "
                "*_desc-lesionchange_dseg.nii[.gz] or (truth) *_label-newlesion_mask.nii[.gz]"
            )
        found.append(files)
    predicted, truths = found
    keys = sorted(predicted.keys() & truths.keys(), key=lambda k: (k[0], predicted[k].image))
    if not keys:
        raise NothingSelectedError(
            f"no map in {pred_dir} has a truth in {truth_dir} for the same subject, session "
            "and other entities"
        )
    missing = sorted(truths.keys() - predicted.keys(), key=lambda k: str(truths[k].path))
    warnings = [f"{truths[k].path} has no prediction; left out" for k in missing]
    return [Pair(k[0], predicted[k], truths[k]) for k in keys], warnings


def _index(root: Path, side: int) -> dict[tuple, Found]:
    """The maps under ``root`` by (map, pairing entities); ``side`` 0 reads as prediction,
    1 as truth (whose kinds are in order of preference)."""
    from bids.layout import parse_file_entities

    index: dict[tuple, Found] = {}
    for path in sorted(root.glob("sub-*/**/*.nii*")):
        # parsed inside the folder: entity-like names above it would otherwise count
        entities = parse_file_entities("/" + path.relative_to(root).as_posix())
        pairing = tuple(sorted((k, str(v)) for k, v in entities.items() if k not in MAP_ENTITIES))
        for map_name, kinds in MAPS.items():
            for rank, kind in enumerate(kinds[side]):
                if not kind.matches(entities):
                    continue
                key = (map_name, pairing)
                held = index.get(key)
                if held is not None and held.kind == kind:
                    raise BadDataError(
                        f"{path} and {held.path} are both {map_name} maps of one image"
                    )
                if held is None or kinds[side].index(held.kind) > rank:
                    index[key] = Found(path, kind, _image_name(path))
    return index


def _image_name(path: Path) -> str:
    """The file name without the entities that name its map, nor suffix and extension."""
    parts = path.name.split(".")[0].split("_")[:-1]
    return "_".join(p for p in parts if p.split("-")[0] not in {"label", "desc", "space"})


def score(pair: Pair, rule: DetectionRule) -> dict[str, object]:
    """One table row: the prediction's scores against its truth."""
    prediction, truth, zooms = _read_pair(pair)
    voxel_mm3 = float(np.prod(zooms))
    found = lesion_detection(prediction, truth, voxel_mm3, rule)
    return {
        "image": pair.prediction.image,
        "map": pair.map,
        "dice": dice(prediction, truth),
        "lesion_f1": found.f1,
        "lesion_precision": found.precision,
        "lesion_recall": found.recall,
        "truth_lesions": found.truth_lesions,
        "predicted_lesions": found.predicted_lesions,
        "detected_lesions": found.detected,
        "truth_mm3": int(np.count_nonzero(truth)) * voxel_mm3,
        "predicted_mm3": int(np.count_nonzero(prediction)) * voxel_mm3,
        "avd_percent": absolute_volume_difference(prediction, truth),
        "hd95_mm": hd95(prediction, truth, zooms),
    }


def _read_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Both binary maps and the voxel size; BadDataError unless they share one grid.

    A prediction on another grid is refused rather than resampled: resampling a mask changes
    the very volumes and boundaries being scored, and a grid mismatch more often means the
    wrong file than a deliberate choice.
    """
    (pred, pred_img), (truth, truth_img) = (_load(f) for f in (pair.prediction, pair.truth))
    if not same_grid(pred_img, truth_img):
        raise BadDataError(
            f"{pair.prediction.path} is not on the grid of {pair.truth.path} (shape "
            f"{pred.shape} vs {truth.shape}, or another affine): both must be on the session's "
            "FLAIR grid"
        )
    return pred, truth, tuple(float(z) for z in truth_img.header.get_zooms()[:3])


def _load(found: Found) -> tuple[np.ndarray, nib.Nifti1Image]:
    """A file's binary map, checked to be one 3-D volume."""
    try:
        img = nib.load(str(found.path))
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # nibabel raises many kinds for damaged files
        raise BadDataError(f"{found.path} cannot be read as NIfTI ({err})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise BadDataError(f"{found.path} is {data.ndim}-D {data.shape}; a 3-D map is needed")
    return found.kind.read(data), img


def evaluate(pairs: Iterable[Pair], rule: DetectionRule) -> pd.DataFrame:
    """Per map, its per-image rows, then a mean and a median row (NaN scores skipped)."""
    rows = pd.DataFrame([score(p, rule) for p in pairs], columns=COLUMNS)
    parts = []
    for map_name, group in rows.groupby("map", sort=False):
        summary = [
            {"image": name, "map": map_name} | {c: _summary(stat, group[c]) for c in COLUMNS[2:]}
            for name, stat in STATISTICS.items()
        ]
        parts += [group, pd.DataFrame(summary, columns=COLUMNS)]
    return pd.concat(parts, ignore_index=True)


def _summary(statistic, values: pd.Series) -> float:
    """The statistic over the defined values; NaN (not a warning) when none is."""
    finite = values.to_numpy(dtype=float)
    finite = finite[~np.isnan(finite)]
    return float(statistic(finite)) if finite.size else math.nan


def write_tsv(table: pd.DataFrame, out) -> None:
    """The table as BIDS-style TSV (n/a for undefined scores) to a path or an open file."""
    table.to_csv(out, sep="\t", index=False, na_rep="n/a", float_format="%.6g")


def pretty(table: pd.DataFrame) -> str:
    """The table for a terminal: three decimals, n/a for undefined scores."""
    return table.to_string(index=False, na_rep="n/a", float_format=lambda x: f"{x:.3f}")
