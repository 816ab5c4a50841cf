"""BIDS files of the phantom: names, NIfTI, JSON and TSV writers, and dataset metadata."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from mdgru_bids import __version__
from mdgru_bids.templates import ICBM152_NOTICE as TEMPLATE_NOTICE
from mdgru_bids.templates import ICBM152_REFERENCES as REFERENCES
from mdgru_bids.templates import ICBM152_URL as TEMPLATE_URL

BIDS_VERSION = "1.10.0"
GENERATOR = "mdgru-bids-phantom"
TRUTH_DIR = Path("derivatives") / "truth"
# Nominal sequence parameters for the sidecars. The images are synthetic: where a field
# names real hardware or a site, it says so rather than invent one.
SEQUENCES = {
    "T1w": {
        "PulseSequenceType": "MPRAGE",
        "ScanningSequence": "GR\\IR",
        "SequenceVariant": "SK\\SP\\MP",
        "SequenceName": "phantom_mprage",
        "MRAcquisitionType": "3D",
        "RepetitionTime": 2.3,
        "EchoTime": 0.00298,
        "InversionTime": 0.9,
        "FlipAngle": 9,
        "DwellTime": 7.8e-06,
    },
    "FLAIR": {
        "PulseSequenceType": "TIRM",
        "ScanningSequence": "SE\\IR",
        "SequenceVariant": "SK\\SP\\MP",
        "SequenceName": "phantom_flair",
        "MRAcquisitionType": "2D",
        "RepetitionTime": 9.0,
        "EchoTime": 0.09,
        "InversionTime": 2.5,
        "FlipAngle": 150,
        "DwellTime": 1.0e-05,
    },
}
NOT_APPLICABLE = "n/a (synthetic data)"
SCANNER = {
    "Manufacturer": "Synthetic",
    "ManufacturersModelName": GENERATOR,
    "SoftwareVersions": f"{GENERATOR} {__version__}",
    "MagneticFieldStrength": 3,
    "PulseSequenceDetails": "Simulated: tissue partial volumes weighted by relative signal, "
    "then bias field and Rician noise (see README)",
    "NonlinearGradientCorrection": False,
    **dict.fromkeys(
        (
            "InstitutionName",
            "InstitutionAddress",
            "InstitutionalDepartmentName",
            "StationName",
            "DeviceSerialNumber",
            "ReceiveCoilName",
            "ReceiveCoilActiveElements",
            "CoilCombinationMethod",
            "MatrixCoilMode",
        ),
        NOT_APPLICABLE,
    ),
}


def label(index: int, count: int) -> str:
    """Zero-padded entity label for item ``index`` (0-based) of ``count``."""
    return str(index + 1).zfill(max(2, len(str(count))))


def anat_path(sub: str, ses: str, suffix: str, ext: str = ".nii.gz", **entities: str) -> Path:
    """``sub-X/ses-Y/anat/sub-X_ses-Y[_key-value...]_suffix.ext`` relative to a dataset."""
    parts = [f"sub-{sub}", f"ses-{ses}", *(f"{k}-{v}" for k, v in entities.items()), suffix]
    return Path(f"sub-{sub}", f"ses-{ses}", "anat", "_".join(parts) + ext)


def sidecar(path: Path) -> Path:
    """The JSON sidecar next to a ``.nii.gz`` image."""
    return path.with_name(path.name.removesuffix(".nii.gz") + ".json")


def write_json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n")


def write_tsv(path: Path, rows: list[dict], columns: list[str]) -> None:
    """A BIDS TSV: tab-separated, header row, ``n/a`` for missing values."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=columns).to_csv(path, sep="\t", index=False, na_rep="n/a")


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, dtype: type) -> None:
    """NIfTI-1 with scanner-space qform and sform, mm units (gzip is deterministic in nibabel)."""
    data = np.asarray(data)
    img = nib.Nifti1Image(data.astype(np.uint8) if data.dtype == bool else data, affine)
    img.set_data_dtype(dtype)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)


def raw_description(settings: str) -> dict:
    return {
        "Name": "mdgru-bids longitudinal MS phantom (synthetic)",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "raw",
        "HEDVersion": "8.3.0",
        "License": TEMPLATE_NOTICE,
        "Authors": ["mdgru-bids developers"],
        "HowToAcknowledge": "Synthetic data from mdgru-bids-phantom; please cite the template "
        "papers in ReferencesAndLinks.",
        "ReferencesAndLinks": REFERENCES,
        "GeneratedBy": [
            {
                "Name": GENERATOR,
                "Version": __version__,
                "Description": f"Synthetic longitudinal MS dataset ({settings}).",
            }
        ],
        "SourceDatasets": [{"URL": TEMPLATE_URL, "Version": "ICBM 2009a nonlinear symmetric"}],
    }


def truth_description(settings: str) -> dict:
    return {
        "Name": "Ground truth of the mdgru-bids longitudinal MS phantom",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "License": TEMPLATE_NOTICE,
        "GeneratedBy": [
            {
                "Name": GENERATOR,
                "Version": __version__,
                "Description": f"Lesion and tissue truth ({settings}).",
            }
        ],
        "SourceDatasets": [{"URL": "bids:raw:"}],
        "DatasetLinks": {"raw": "../../"},
        "ReferencesAndLinks": REFERENCES,
    }


def readme(settings: str) -> str:
    refs = "\n".join(f"- {r}" for r in REFERENCES)
    return f"""# mdgru-bids longitudinal MS phantom

SYNTHETIC DATA: no person was scanned. Made by `{GENERATOR}` {__version__} ({settings}).

Each participant is a smooth random deformation of the MNI ICBM152 2009a nonlinear symmetric
template with a simple skull and scalp, and white-matter lesions shaped and placed like
multiple sclerosis lesions (periventricular, deep, juxtacortical, infratentorial; ovoid,
irregular and confluent; T1w black holes). Between sessions the brain atrophies a little and
lesions appear, grow, shrink or resolve. Each session has its own head position, voxel sizes,
field of view, bias field and Rician noise; `sub-*_sessions.tsv` gives the session dates.
The ground truth is the derivative dataset in `derivatives/truth` (see its README).

## Template

{TEMPLATE_NOTICE}

{refs}
"""


def truth_readme(settings: str) -> str:
    return f"""# Ground truth of the mdgru-bids longitudinal MS phantom

Made by `{GENERATOR}` {__version__} ({settings}) together with the raw dataset two levels up.

Per session, on that session's FLAIR grid (`SpatialReference` in each sidecar):

- `label-lesion_mask`: lesion voxels (lesion partial volume >= 0.5);
- `desc-lesionid_dseg`: persistent lesion id per voxel, the same lesion having the same id in
  every session (ids count up in order of appearance);
- `label-GM_probseg`, `label-WM_probseg`, `label-CSF_probseg`: tissue partial volumes, lesion
  tissue excluded;
- `desc-brain_mask`: intracranial volume;
- `desc-lesions_table.tsv`: every lesion present, its site, whether it is a T1w black hole, and
  its volume;
- `desc-lesionchange_dseg` (every session after the first): the true change since the
  previous session, labelled as mdgru-bids labels its change maps (1 stable, 2 new, 3 the grown
  part of an enlarging lesion, 4 and 5 the lost part of a shrinking or resolved one), with the
  fates of `desc-lesionfate_table.tsv`, so `mdgru-bids-evaluate` scores the appeared voxels.

Per session, in the participant's subject space (the head before the session's pose, the
same for every session):

- `from-FLAIR_to-subject_mode-image_xfm.txt`: the true rigid transform from the FLAIR's
  world (scanner) coordinates to subject space, an ITK/ANTs text transform in the convention
  of mdgru-bids' own transforms: given to `antsApplyTransforms` with a subject-space
  reference, it resamples the FLAIR there (the file stores the inverse, subject to FLAIR, as
  ITK does);
- `space-subject_desc-lesionid_dseg`: the lesion ids on one grid per participant (the
  generator's work grid, of the finest voxel size, cropped to the brain), so that sessions
  can be compared voxel by voxel.

Per participant, `desc-lesionfate_table.tsv` gives every lesion's fate between consecutive
sessions, with the change labels of mdgru-bids: new, enlarging, shrinking, stable, resolved.
Volumes and fates are measured on the `space-subject` id maps (voxel count times voxel
volume): one grid for all sessions, so a fate is not an artefact of two different
acquisition grids, while a lesion too small for the grid can still be absent in one session
and present in the next, exactly as the maps say. The fate rule is in
`desc-lesionfate_table.json`.
"""


def scan_sidecar(modality: str, zooms: np.ndarray, slices: int) -> dict:
    """Sidecar of a raw image; 2D FLAIR gets its slice thickness and interleaved timing."""
    sidecar = SCANNER | SEQUENCES[modality]
    if modality == "FLAIR":
        order = np.r_[0:slices:2, 1:slices:2]
        timing = np.empty(slices)
        timing[order] = np.arange(slices) * sidecar["RepetitionTime"] / slices
        sidecar["SliceThickness"] = round(float(zooms[2]), 4)
        sidecar["SliceTiming"] = [round(float(t), 4) for t in timing]
    return sidecar


def truth_sidecar(source: Path, **fields: str) -> dict:
    """Sidecar of a truth map: what it is, and the raw image whose grid it lies on."""
    uri = f"bids:raw:{source.as_posix()}"
    return fields | {"Sources": [uri], "SpatialReference": uri}


PARTICIPANTS_JSON = {
    "age": {"Description": "Age at the first session", "Units": "year"},
    "sex": {"Description": "Sex", "Levels": {"F": "female", "M": "male"}},
}
SESSIONS_JSON = {"acq_time": {"Description": "Date and time of the session's first scan"}}
LESIONS_JSON = {
    "lesion_id": {"Description": "Persistent lesion id: voxel value in desc-lesionid_dseg"},
    "site": {
        "Description": "Where the lesion was placed",
        "Levels": {s: s for s in ("periventricular", "deep", "juxtacortical", "infratentorial")},
    },
    "black_hole": {
        "Description": "Whether the lesion is a T1w black hole",
        "Levels": {"true": "T1w signal close to CSF", "false": "mildly T1w-dark"},
    },
    "volume_mm3": {"Description": "Voxels with this id times the voxel volume", "Units": "mm^3"},
}


def fate_dictionary(ratio: float) -> dict:
    """Data dictionary of the lesion-fate table, stating the rule that decides a fate."""
    return {
        "lesion_id": LESIONS_JSON["lesion_id"],
        "session_before": {"Description": "Earlier session of a consecutive pair"},
        "session_after": {"Description": "Later session of the pair"},
        "volume_before_mm3": {
            "Description": "Volume at session_before in its space-subject id map (0 = absent)",
            "Units": "mm^3",
        },
        "volume_after_mm3": {
            "Description": "Volume at session_after in its space-subject id map (0 = absent)",
            "Units": "mm^3",
        },
        "fate": {
            "Description": "Change between the sessions, from the id-map volumes",
            "Levels": {
                "new": "absent before, present after",
                "resolved": "present before, absent after",
                "enlarging": f"volume ratio after/before >= {ratio}",
                "shrinking": f"volume ratio after/before <= 1/{ratio}",
                "stable": "otherwise",
            },
        },
    }


#: Entities of the true FLAIR -> subject transform (named as mdgru-bids names its own).
FLAIR_TO_SUBJECT = {"from": "FLAIR", "to": "subject", "mode": "image"}
SUBJECT_IDS_SIDECAR = {
    "Description": "Persistent lesion id per voxel, the same in every session; 0 = none. "
    "Lesion fates (desc-lesionfate_table.tsv) are measured on these maps.",
    "SpatialReference": "The participant's subject space: the phantom head before any "
    "session's pose, where a point stays put from session to session (atrophy aside). No "
    "image defines it; each session's from-FLAIR_to-subject transform maps its FLAIR here.",
}
TRUTH_BIDSIGNORE = "*_table.tsv\n*_table.json\n*_xfm.txt\n"
