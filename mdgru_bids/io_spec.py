"""Every file mdgru-bids writes, by role: BIDS entities, suffix, extension and fixed sidecar
fields (DESIGN.md, "Output naming"). The data sinks, the ``Sources`` of sidecars,
``.bidsignore``, the group level, the reports, training and the evaluation all read this
table, so a naming change is made here and nowhere else.

Entity values in braces are filled in per run: ``{template}`` is the template's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Literal

Level = Literal["session", "subject", "dataset", "group"]

#: Data dictionaries (BIDS JSON sidecars) of the lesion and change tables, in column order.
LESION_DICTIONARY = {
    "lesion_id": {"Description": "Lesion id; the same id in the session's subject-space labels"},
    "volume_mm3": {
        "Description": "Partial volume in subject space: the lesion probability summed over "
        "the lesion's subject-space voxels and their immediate neighbours, times the voxel "
        "volume (not a count of thresholded voxels, which changes with the grid)",
        "Units": "mm^3",
    },
    "centroid_x": {"Description": "Centroid, scanner x (RAS+)", "Units": "mm"},
    "centroid_y": {"Description": "Centroid, scanner y (RAS+)", "Units": "mm"},
    "centroid_z": {"Description": "Centroid, scanner z (RAS+)", "Units": "mm"},
    "max_probability": {"Description": "Largest lesion probability inside the lesion"},
    "mean_probability": {"Description": "Mean lesion probability inside the lesion"},
    "class": {
        "Description": "Change since the previous session (n/a in the first session)",
        "Levels": {
            "new": "no lesion there before",
            "enlarging": "grew",
            "shrinking": "shrank",
            "stable": "about the same size",
        },
    },
    "previous_lesion_ids": {
        "Description": "Comma-separated ids of the previous session's lesions it overlaps"
    },
}
CHANGE_DICTIONARY = {
    "class": {
        "Description": "Change of a group of overlapping lesions between consecutive sessions",
        "Levels": {
            "new": "no earlier lesion, and the earlier session shows clearly none there "
            "(low lesion probability, FLAIR rose more than around it)",
            "resolved": "no later lesion, and the later session shows clearly none there",
            "enlarging": "partial volume grew, with that evidence in the grown voxels",
            "shrinking": "partial volume shrank, with that evidence in the lost voxels",
            "stable": "otherwise (including a lesion only hinted at in the other session)",
        },
    },
    "lesion_ids": {"Description": "Comma-separated lesion ids in this session (n/a: none)"},
    "previous_lesion_ids": {"Description": "Comma-separated lesion ids in the previous session"},
    "volume_mm3": {
        "Description": "Group partial volume in this session: lesion probability summed over "
        "the group's footprint (both sessions' lesion voxels and their neighbours) in subject "
        "space, times the voxel volume",
        "Units": "mm^3",
    },
    "previous_volume_mm3": {
        "Description": "Group partial volume in the previous session, over the same footprint",
        "Units": "mm^3",
    },
    "volume_change_mm3": {"Description": "volume_mm3 - previous_volume_mm3", "Units": "mm^3"},
}
LESION_COLUMNS = list(LESION_DICTIONARY)
CHANGE_COLUMNS = list(CHANGE_DICTIONARY)


@dataclass(frozen=True)
class Output:
    """One kind of output file."""

    entities: tuple[tuple[str, str], ...]  # in file-name order
    suffix: str
    extension: str
    level: Level = "session"
    sidecar: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    dtype: str | None = None  # images: the data type written
    bids: bool = True  # False: BIDS has no name for it, so .bidsignore lists it

    def values(self, **values: str) -> dict[str, str]:
        """The entities with the run's values filled in, and the suffix."""
        return {k: v.format(**values) for k, v in self.entities} | {"suffix": self.suffix}

    def stem(self, **values: str) -> str:
        """The name without the subject/session prefix, e.g. ``desc-preproc_FLAIR.nii.gz``."""
        parts = [f"{k}-{v.format(**values)}" for k, v in self.entities]
        return "_".join([*parts, self.suffix]) + self.extension

    def relpath(self, subject: str, session: str | None = None, **values: str) -> PurePosixPath:
        """Where a participant's file lies in OUT_DIR, e.g. ``sub-01/ses-02/anat/...``."""
        folder, prefix = PurePosixPath(f"sub-{subject}"), f"sub-{subject}"
        if session and self.level == "session":
            folder, prefix = folder / f"ses-{session}", f"{prefix}_ses-{session}"
        return folder / "anat" / f"{prefix}_{self.stem(**values)}"

    def path(self, root: Path, subject: str, session: str | None = None, **values: str) -> Path:
        return root / self.relpath(subject, session, **values)

    def uri(self, subject: str, session: str | None = None, **values: str) -> str:
        """The BIDS URI a sidecar's ``Sources`` gives for it (``bids::`` is this dataset)."""
        return f"bids::{self.relpath(subject, session, **values)}"

    def dataset_file(self, root: Path, **values: str) -> Path:
        """A dataset- or group-level file in OUT_DIR."""
        return root / ("group" if self.level == "group" else "") / self.stem(**values)

    def pattern(self) -> str:
        """A glob for every participant file of this kind (values in braces match anything)."""
        parts = [f"{k}-{'*' if '{' in v else v}" for k, v in self.entities]
        return "*_" + "_".join([*parts, self.suffix]) + self.extension


def _fixed(**fields: object) -> MappingProxyType:
    return MappingProxyType(fields)


OUTPUTS: dict[str, Output] = {
    "preproc_flair": Output(
        (("desc", "preproc"),), "FLAIR", ".nii.gz", dtype="float32",
        sidecar=_fixed(SkullStripped=False, Description="FLAIR after N4 bias-field correction"),
    ),
    "preproc_t1w": Output(
        (("space", "FLAIR"), ("desc", "preproc")), "T1w", ".nii.gz", dtype="float32",
        sidecar=_fixed(
            SkullStripped=False,
            Description="T1w after N4, rigidly registered onto the FLAIR grid",
        ),
    ),
    "brain_mask": Output(
        (("desc", "brain"),), "mask", ".nii.gz", dtype="uint8",
        sidecar=_fixed(
            Type="Brain", Description="Brain mask from the template's, by affine registration"
        ),
    ),
    "probseg": Output(
        (("label", "lesion"),), "probseg", ".nii.gz", dtype="float32",
        sidecar=_fixed(
            Description="Lesion probability from the MD-GRU network; with sessions segmented "
            "jointly (SessionsSegmented), the mean over the subject's sessions outside lesions "
            "that changed"
        ),
    ),
    "lesion_mask": Output(
        (("label", "lesion"),), "mask", ".nii.gz", dtype="uint8",
        sidecar=_fixed(
            Type="Lesion",
            Description="Lesions: probability above the threshold, components of at least the "
            "minimum volume (mm3)",
        ),
    ),
    "lesion_table": Output(
        (("desc", "lesions"),), "table", ".tsv", sidecar=_fixed(**LESION_DICTIONARY), bids=False
    ),
    "to_subject": Output(
        (("from", "FLAIR"), ("to", "subject"), ("mode", "image")), "xfm", ".txt", bids=False
    ),
    "template_probseg": Output(
        (("space", "{template}"), ("label", "lesion")), "probseg", ".nii.gz", dtype="float32"
    ),
    "change_dseg": Output((("desc", "lesionchange"),), "dseg", ".nii.gz", dtype="uint8"),
    "change_table": Output(
        (("desc", "lesionchange"),), "table", ".tsv", sidecar=_fixed(**CHANGE_DICTIONARY),
        bids=False,
    ),
    "subject_to_template": Output(
        (("from", "subject"), ("to", "{template}"), ("mode", "image")), "xfm", ".h5",
        level="subject", bids=False,
    ),
    # the change labels (index, name, abbreviation) every change map uses
    "change_labels": Output((("desc", "lesionchange"),), "dseg", ".tsv", level="dataset"),
    "group_lesions": Output((), "lesions", ".tsv", level="group"),
    "group_changes": Output((), "changes", ".tsv", level="group"),
    "group_frequency": Output(
        (("space", "{template}"), ("label", "lesion")), "probseg", ".nii.gz", level="group"
    ),
}  # fmt: skip


def _bidsignore() -> list[str]:
    """What our derivatives hold that BIDS has no name for: the files the table marks (with
    their JSON data dictionaries), then whole folders (without a trailing slash: with one,
    bids-validator-deno still flags the folder)."""
    files = []
    for output in OUTPUTS.values():
        if not output.bids:
            files.append(f"*_{output.suffix}{output.extension}")
            if output.sidecar:
                files.append(f"*_{output.suffix}.json")
    return [*dict.fromkeys(files), "logs", "*.html", "sub-*/figures", "group"]


BIDSIGNORE = _bidsignore()
#: The suffixes of each kind of participant file, for the data sinks' path patterns.
IMAGE_SUFFIXES = tuple(
    dict.fromkeys(o.suffix for o in OUTPUTS.values() if o.dtype and o.level != "group")
)
