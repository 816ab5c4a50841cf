"""Templates: TemplateFlow's where ``TEMPLATEFLOW_HOME`` has them, else the embedded one.

Nothing here touches the network. Compute nodes have none, and ``templateflow.api`` downloads
whatever it does not find, so TemplateFlow files are looked up on disk by their own names.
The embedded template is nilearn's packaged copy of the MNI ICBM152 2009a nonlinear symmetric
T1w and tissue maps (TemplateFlow's ``MNI152NLin2009aSym``): it is installed with the app, so
a fresh machine without network or pre-fetched templates still runs end to end.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from dataclasses import dataclass
from importlib import resources
from importlib.metadata import version
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from mdgru_bids.atomic import replacing
from mdgru_bids.errors import AppError, MissingInputError

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "MNI152NLin2009cAsym"
EMBEDDED_TEMPLATE = "MNI152NLin2009aSym"
#: nilearn's packaged ICBM152 2009a maps (t1, gm, wm), 1 mm, intensities 0-255.
ICBM152_FILE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
TEMPLATEFLOW_URL = "https://templateflow.s3.amazonaws.com"
ICBM152_URL = "https://www.bic.mni.mcgill.ca/ServicesAtlases/ICBM152NLin2009"
ICBM152_NOTICE = (
    "Anatomy derived from the MNI ICBM 152 nonlinear symmetric 2009a template, "
    "Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal "
    "Neurological Institute, McGill University; used under its permissive licence, which "
    "asks that this notice accompany copies."
)
ICBM152_REFERENCES = [
    "Fonov VS, Evans AC, McKinstry RC, Almli CR, Collins DL. Unbiased nonlinear average "
    "age-appropriate brain templates from birth to adulthood. NeuroImage 2009;47(Suppl 1):S102. "
    "doi:10.1016/S1053-8119(09)70884-5",
    "Fonov V, Evans AC, Botteron K, Almli CR, McKinstry RC, Collins DL. Unbiased average "
    "age-appropriate atlases for pediatric studies. NeuroImage 2011;54(1):313-327. "
    "doi:10.1016/j.neuroimage.2010.07.033",
]
EMBEDDED_RESOLUTIONS = (1, 2)  # mm, as TemplateFlow's res-01 and res-02
#: The embedded brain mask: grey + white matter above 0.5, holes (ventricles) filled, then
#: dilated by this many millimetres towards the intracranial surface.
BRAIN_MASK_DILATION_MM = 2


@dataclass(frozen=True)
class Template:
    name: str
    t1w: Path
    brain_mask: Path
    #: Where the files came from, in words: for the methods text, sidecars and the report.
    origin: str
    #: The template's public address: the SpatialReference of outputs in its space.
    uri: str
    embedded: bool = False
    #: Why this template stands in for the one asked for (None when it is the one asked for).
    fallback: str | None = None


def icbm152_map(name: str) -> nib.Nifti1Image:
    """One of nilearn's packaged ICBM152 2009a maps (``t1``, ``gm`` or ``wm``), in memory."""
    path = resources.files("nilearn") / "datasets" / "data" / ICBM152_FILE.format(name)
    with resources.as_file(path) as real:
        img = nib.load(real)
        return nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header)


def icbm152_brain_mask() -> nib.Nifti1Image:
    """The embedded template's brain mask (uint8), on its 1 mm grid."""
    gm, wm = (icbm152_map(name) for name in ("gm", "wm"))
    tissue = (np.asanyarray(gm.dataobj, np.float32) + np.asanyarray(wm.dataobj)) / 255.0
    brain = ndimage.binary_fill_holes(tissue > 0.5)
    brain = ndimage.binary_dilation(brain, iterations=BRAIN_MASK_DILATION_MM)
    return nib.Nifti1Image(brain.astype(np.uint8), gm.affine)


def _templateflow_files(name: str, resolution: int) -> dict[str, Path] | None:
    """The TemplateFlow T1w and brain mask in TEMPLATEFLOW_HOME, or None where either is
    missing (an empty file is a placeholder of TemplateFlow's skeleton, never downloaded)."""
    home = os.environ.get("TEMPLATEFLOW_HOME")
    if not home:
        return None
    folder = Path(home) / f"tpl-{name}"
    stem = f"tpl-{name}_res-{resolution:02d}"
    files = {"t1w": folder / f"{stem}_T1w.nii.gz",
             "brain_mask": folder / f"{stem}_desc-brain_mask.nii.gz"}  # fmt: skip
    if all(p.is_file() and p.stat().st_size > 0 for p in files.values()):
        return files
    return None


def resolve_template(name: str | None, cache: Path, resolution: int = 1) -> Template:
    """The template's T1w and brain mask at ``resolution`` mm.

    ``name`` None is the default: TemplateFlow's MNI152NLin2009cAsym where TEMPLATEFLOW_HOME
    has it, else the embedded template, built in ``cache`` (a folder of the run's own: the
    work folder). A template named explicitly that is neither there nor embedded is an error
    that says both ways out.
    """
    wanted = name or DEFAULT_TEMPLATE
    files = _templateflow_files(wanted, resolution)
    if files is not None:
        home = os.environ["TEMPLATEFLOW_HOME"]
        uri = f"{TEMPLATEFLOW_URL}/tpl-{wanted}/{files['t1w'].name}"
        origin = f"TemplateFlow, TEMPLATEFLOW_HOME={home}"
        return Template(wanted, files["t1w"], files["brain_mask"], origin, uri)
    home = os.environ.get("TEMPLATEFLOW_HOME") or "(unset)"
    if wanted != EMBEDDED_TEMPLATE and name is not None:
        raise MissingInputError(
            f"template {wanted} (res-{resolution:02d} T1w and brain mask) not found in "
            f"TEMPLATEFLOW_HOME={home}: pre-fetch it on a machine with internet "
            f"(python -c \"import templateflow.api as t; t.get('{wanted}', "
            f"resolution={resolution}, suffix=['T1w', 'mask'])\") and point TEMPLATEFLOW_HOME "
            f"at that folder, or use the embedded template (--template {EMBEDDED_TEMPLATE})"
        )
    if resolution not in EMBEDDED_RESOLUTIONS:
        raise MissingInputError(
            f"the embedded template {EMBEDDED_TEMPLATE} has no res-{resolution:02d}: use "
            f"{' or '.join(map(str, EMBEDDED_RESOLUTIONS))} mm, or put {wanted} into "
            "TEMPLATEFLOW_HOME"
        )
    fallback = None
    if wanted != EMBEDDED_TEMPLATE:
        fallback = (
            f"{wanted} is not in TEMPLATEFLOW_HOME={home}, so the embedded "
            f"{EMBEDDED_TEMPLATE} template was used instead"
        )
    return embedded_template(cache, resolution, fallback)


def template_for_run(name: str | None, work_dir: Path, resolution: int = 1) -> Template:
    """resolve_template for a run with this work folder: a fallback said once in the log, and
    TEMPLATEFLOW_HOME kept off the network where the embedded template is used."""
    template = resolve_template(name, work_dir / "templates", resolution)
    if template.fallback:
        log.warning(template.fallback)
    if template.embedded:
        keep_templateflow_offline(work_dir / "templates")
    return template


def keep_templateflow_offline(cache: Path) -> None:
    """Point TEMPLATEFLOW_HOME at ``cache``, which holds the embedded template in TemplateFlow's
    layout, where it is unset or an empty folder.

    templateflow, which niworkflows imports, fills such a home (~/.cache/templateflow when
    unset) with its skeleton on import, and fails where that is read-only (a container's home
    or image); a populated home it leaves alone. Call before niworkflows is imported.
    """
    home = os.environ.get("TEMPLATEFLOW_HOME")
    if not (home and Path(home).is_dir() and any(Path(home).iterdir())):
        os.environ["TEMPLATEFLOW_HOME"] = str(cache)


def coarsen(img: nib.Nifti1Image, step: int, mask: bool = False) -> nib.Nifti1Image:
    """Every ``step``-th voxel of an image after an anti-aliasing blur; a mask stays a mask
    (where the blurred mask is at least 0.5)."""
    volume = np.asanyarray(img.dataobj, np.float32)
    smooth = ndimage.gaussian_filter(volume, 0.4 * np.sqrt(step**2 - 1))[::step, ::step, ::step]
    if mask:
        smooth = (smooth >= 0.5).astype(np.uint8)
    return nib.Nifti1Image(smooth, img.affine @ np.diag([step, step, step, 1.0]))


def embedded_template(cache: Path, resolution: int = 1, fallback: str | None = None) -> Template:
    """The embedded template's files in ``cache``, built there once, deterministically (the
    same bytes for the same nilearn data), with TemplateFlow's names and its licence notice.
    Its 2 mm version is the 1 mm one coarsened."""
    folder = cache / f"tpl-{EMBEDDED_TEMPLATE}"
    stem = f"tpl-{EMBEDDED_TEMPLATE}_res-{resolution:02d}"
    t1w, mask = folder / f"{stem}_T1w.nii.gz", folder / f"{stem}_desc-brain_mask.nii.gz"
    description = folder / "template_description.json"
    text = json.dumps(_description(), indent=2) + "\n"
    fresh = description.is_file() and description.read_text() == text
    if not (fresh and t1w.is_file() and mask.is_file()):
        images = [icbm152_map("t1"), icbm152_brain_mask()]
        if resolution > 1:
            images = [coarsen(images[0], resolution), coarsen(images[1], resolution, mask=True)]
        try:
            for path, image in zip((t1w, mask), images, strict=True):
                with replacing(path) as tmp:  # no time stamp in the gzip header
                    tmp.write_bytes(gzip.compress(image.to_bytes(), mtime=0))
            with replacing(description) as tmp:
                tmp.write_text(text)
        except OSError as err:
            raise AppError(
                f"cannot write the embedded template into {folder} ({err.strerror}): "
                "choose a work folder (-w) you can write to"
            ) from None
    origin = f"embedded in mdgru-bids: nilearn {version('nilearn')}'s MNI ICBM152 2009a copy"
    return Template(EMBEDDED_TEMPLATE, t1w, mask, origin, ICBM152_URL, True, fallback)


def _description() -> dict:
    return {
        "Name": "MNI ICBM 152 nonlinear symmetric 2009a (embedded in mdgru-bids)",
        "Identifier": EMBEDDED_TEMPLATE,
        "License": ICBM152_NOTICE,
        "ReferencesAndLinks": [*ICBM152_REFERENCES, ICBM152_URL],
        "GeneratedBy": [
            {"Name": "nilearn", "Version": version("nilearn"),
             "Description": f"T1w: {ICBM152_FILE.format('t1')}; brain mask: grey + white "
             f"matter above 0.5, holes filled, dilated by {BRAIN_MASK_DILATION_MM} mm; res-02: "
             "res-01 blurred (sigma 0.7 voxels) and every second voxel taken"},
        ],
    }  # fmt: skip
