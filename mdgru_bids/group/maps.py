"""The template-space lesion frequency map: where in the brain the study's lesions lie."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from mdgru_bids.atomic import replacing
from mdgru_bids.errors import BadDataError
from mdgru_bids.group.outputs import SessionOutputs
from mdgru_bids.nifti import same_grid


def template_probseg(session: SessionOutputs, template: str) -> Path:
    return session.file("template_probseg", template)


def lesion_frequency(
    participants: list[list[SessionOutputs]], template: str
) -> tuple[nib.Nifti1Image, list[Path]] | None:
    """The fraction of participants with a lesion at each template voxel, and its sources.

    Each participant counts once, with their latest session in the template: its lesion
    probability thresholded at the threshold its lesion mask was made with. None when no
    participant has a template-space map.
    """
    sources = []
    for sessions in participants:
        latest = [s for s in sessions if template_probseg(s, template).is_file()]
        if latest:
            sources.append(latest[-1])
    if not sources:
        return None
    first = nib.load(template_probseg(sources[0], template))
    total = np.zeros(first.shape[:3], dtype=np.float32)
    for session in sources:
        path = template_probseg(session, template)
        img = nib.load(path)
        if not same_grid(img, first):
            raise BadDataError(
                f"{path} is not on the grid of {sources[0].name}'s template map: were they made "
                "with different template resolutions? Re-run those participants"
            )
        total += np.asanyarray(img.dataobj) > _threshold(session)
    frequency = nib.Nifti1Image(total / len(sources), first.affine)
    frequency.header.set_xyzt_units("mm")
    return frequency, [template_probseg(s, template) for s in sources]


def _threshold(session: SessionOutputs) -> float:
    sidecar = session.sidecar("lesion_mask")
    return float(json.loads(sidecar.read_text()).get("Threshold", 0.5))


def write_frequency(
    image: nib.Nifti1Image, sources: list[Path], output_dir: Path, path: Path
) -> None:
    """The map (.nii.gz) and its sidecar, each written atomically."""
    with replacing(path) as tmp:
        tmp.write_bytes(gzip.compress(image.to_bytes(), compresslevel=6))
    sidecar = {
        "Description": "Fraction of participants with a lesion at each voxel: each "
        "participant's latest session, lesion probability above its model threshold",
        "NumberOfParticipants": len(sources),
        "Sources": [f"bids::{p.relative_to(output_dir).as_posix()}" for p in sources],
    }
    with replacing(path.with_name(path.name.replace(".nii.gz", ".json"))) as tmp:
        tmp.write_text(json.dumps(sidecar, indent=2) + "\n")
