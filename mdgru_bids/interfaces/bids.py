"""Writing BIDS-Derivatives: niworkflows' DerivativesDataSink with our file-name patterns.

niworkflows' own patterns require ``desc-`` on masks and know no ``table`` suffix; ours follow
DESIGN.md (no ``space-`` means the session's own FLAIR grid).
"""

from __future__ import annotations

from niworkflows.interfaces.bids import DerivativesDataSink as _DerivativesDataSink

_ANAT = "sub-{subject}[/ses-{session}]/{datatype<anat>|anat}/sub-{subject}[_ses-{session}]"
PATTERNS = (
    _ANAT + "[_space-{space}][_label-{label}][_desc-{desc}]"
    "_{suffix<FLAIR|T1w|mask|probseg|dseg>}{extension<.nii|.nii.gz|.json>|.nii.gz}",
    _ANAT + "_from-{from}_to-{to}_mode-{mode<image|points>|image}_{suffix<xfm>|xfm}"
    "{extension<.txt|.h5>}",
    _ANAT + "[_desc-{desc}]_{suffix<table>}{extension<.tsv|.json>|.tsv}",
)


class DerivativesDataSink(_DerivativesDataSink):
    """Derivatives straight under ``base_directory`` (no pipeline sub-folder)."""

    out_path_base = ""
    _file_patterns = PATTERNS
