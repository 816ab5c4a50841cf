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

    TemplateFlow would download what is missing; compute nodes have no network, so a missing
    file is an error that says how to fetch it beforehand.
    """
    os.environ.setdefault("TEMPLATEFLOW_AUTOUPDATE", "0")
    home = os.environ.get("TEMPLATEFLOW_HOME")
    how = (
        f'pre-fetch it on a machine with internet (python -c "import templateflow.api as t; '
        f"t.get('{name}', resolution={resolution}, suffix=['T1w', 'mask'])\") and point "
        "TEMPLATEFLOW_HOME at that folder"
    )
    if not home or not (Path(home) / f"tpl-{name}").is_dir():
        raise MissingInputError(
            f"template {name} not found in TEMPLATEFLOW_HOME={home or '(unset)'}: {how}"
        )
    from templateflow import api

    found = {}
    for key, query in (
        ("t1w", {"suffix": "T1w", "desc": None}),
        ("brain_mask", {"suffix": "mask", "desc": "brain"}),
    ):
        files = api.get(name, resolution=resolution, extension=".nii.gz", **query)
        files = files if isinstance(files, list) else [files]
        files = [Path(f) for f in files if Path(f).is_file()]
        if len(files) != 1:
            raise MissingInputError(
                f"template {name}: {query['suffix']} at resolution {resolution} is missing from "
                f"TEMPLATEFLOW_HOME={home}: {how}"
            )
        found[key] = files[0]
    return Template(name, found["t1w"], found["brain_mask"])
