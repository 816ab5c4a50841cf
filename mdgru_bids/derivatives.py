"""The derivatives dataset as a whole: its shared files and publishing a participant's outputs.

Several participant jobs (SLURM array tasks) may write into one output folder at once, so
every shared file is written to a temporary name and renamed into place: a reader sees the
old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from mdgru_bids import __version__
from mdgru_bids.atomic import TEMP_PREFIX, TEMP_SUFFIX, replacing, replacing_all
from mdgru_bids.io_spec import BIDSIGNORE, OUTPUTS
from mdgru_bids.lesions.change import CHANGE_LABELS

BIDS_VERSION = "1.10.0"
README = """\
Derivatives of mdgru-bids: multiple-sclerosis lesion segmentation with Multi-Dimensional
Gated Recurrent Units (Andermatt et al. 2016, 2017) and lesion change between consecutive
sessions. Files without a space- entity lie on that session's own FLAIR grid; change maps
use the labels in desc-lesionchange_dseg.tsv. Tables (*_table.tsv) have JSON data
dictionaries beside them. Logs are in logs/.
"""


def write_atomic(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


def dataset_description(bids_dir: Path) -> dict:
    container = {"Type": "docker" if Path("/.dockerenv").exists() else "none"}
    if os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER"):
        container = {"Type": "singularity"}
    return {
        "Name": "mdgru-bids: MS lesion segmentation and longitudinal change",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{
            "Name": "mdgru-bids",
            "Version": __version__,
            "CodeURL": "https://pypi.org/project/mdgru-bids/",
            "Container": container,
        }],
        "SourceDatasets": [{"URL": "bids:raw:"}],
        "DatasetLinks": {"raw": bids_dir.resolve().as_uri()},
        "HowToAcknowledge": "Cite Andermatt et al. 2016 and 2017 (MD-GRU) and mdgru-bids.",
    }  # fmt: skip


def init_derivatives(output_dir: Path, bids_dir: Path) -> None:
    """Write the dataset-level files; identical content from concurrent jobs is harmless."""
    output_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(
        output_dir / "dataset_description.json",
        json.dumps(dataset_description(bids_dir), indent=2) + "\n",
    )
    write_atomic(output_dir / ".bidsignore", "\n".join(BIDSIGNORE) + "\n")
    write_atomic(output_dir / "README", README)
    rows = ["index\tname\tabbreviation"] + [
        f"{index}\t{name}\t{name[:3].upper()}" for index, name in CHANGE_LABELS.items()
    ]
    write_atomic(OUTPUTS["change_labels"].dataset_file(output_dir), "\n".join(rows) + "\n")


def publish(staging: Path, output_dir: Path) -> list[Path]:
    """Move a finished participant's files from the staging folder into the output folder.

    Every file is first copied beside its destination, then all are renamed over theirs: no
    output is ever half-written, and when a copy fails (a full disk) none is published. The
    staging folder is removed afterwards. A copy left behind by a run killed while publishing
    (a hidden temporary file: only this participant's job writes these names) is removed first.
    """
    sources = sorted(p for p in staging.rglob("*") if p.is_file())
    published = [output_dir / src.relative_to(staging) for src in sources]
    for dest in published:
        for stale in dest.parent.glob(f"{TEMP_PREFIX}{dest.name}.*{TEMP_SUFFIX}"):
            stale.unlink(missing_ok=True)
    with replacing_all(published) as tmps:
        for src, tmp in zip(sources, tmps, strict=True):
            shutil.copyfile(src, tmp)
    shutil.rmtree(staging)
    return published
