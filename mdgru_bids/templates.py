"""Template files from a pre-populated TemplateFlow home, never from the network."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mdgru_bids.cli.common import MissingInputError


@dataclass(frozen=True)
class Template:
    name: str
    t1w: Path
    brain_mask: Path


def resolve_template(name: str, resolution: int = 1) -> Template:
    """The template's T1w and brain mask at ``resolution`` from ``TEMPLATEFLOW_HOME``.

    Files are looked up by TemplateFlow's own names directly on disk rather than through
    ``templateflow.api``: the API reads TEMPLATEFLOW_HOME once, when first imported (niworkflows
    imports it early), and downloads whatever it does not find. Compute nodes have no network,
    so a missing file is an error that says how to fetch it beforehand.
    """
    home = os.environ.get("TEMPLATEFLOW_HOME")
    how = (
        f'pre-fetch it on a machine with internet (python -c "import templateflow.api as t; '
        f"t.get('{name}', resolution={resolution}, suffix=['T1w', 'mask'])\") and point "
        "TEMPLATEFLOW_HOME at that folder"
    )
    folder = Path(home or "") / f"tpl-{name}"
    if not home or not folder.is_dir():
        raise MissingInputError(
            f"template {name} not found in TEMPLATEFLOW_HOME={home or '(unset)'}: {how}"
        )
    stem = f"tpl-{name}_res-{resolution:02d}"
    files = {"t1w": folder / f"{stem}_T1w.nii.gz",
             "brain_mask": folder / f"{stem}_desc-brain_mask.nii.gz"}  # fmt: skip
    for path in files.values():
        # an empty file is a placeholder of TemplateFlow's skeleton, never downloaded
        if not path.is_file() or path.stat().st_size == 0:
            raise MissingInputError(f"template file {path} is missing: {how}")
    return Template(name, files["t1w"], files["brain_mask"])
