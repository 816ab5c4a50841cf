"""Writing BIDS-Derivatives: niworkflows' DerivativesDataSink with path patterns made from
:data:`mdgru_bids.io_spec.OUTPUTS`.

niworkflows' own patterns require ``desc-`` on masks and know no ``table`` suffix; ours follow
DESIGN.md (no ``space-`` means the session's own FLAIR grid).
"""

from __future__ import annotations

from niworkflows.interfaces.bids import DerivativesDataSink as _DerivativesDataSink

from mdgru_bids.io_spec import IMAGE_SUFFIXES, OUTPUTS

_ANAT = "sub-{subject}[/ses-{session}]/{datatype<anat>|anat}/sub-{subject}[_ses-{session}]"
_XFM = "|".join(dict.fromkeys(o.extension for o in OUTPUTS.values() if o.suffix == "xfm"))
PATTERNS = (
    _ANAT + "[_space-{space}][_label-{label}][_desc-{desc}]"
    f"_{{suffix<{'|'.join(IMAGE_SUFFIXES)}>}}{{extension<.nii|.nii.gz|.json>|.nii.gz}}",
    _ANAT + "_from-{from}_to-{to}_mode-{mode<image|points>|image}_{suffix<xfm>|xfm}"
    f"{{extension<{_XFM}>}}",
    _ANAT + "[_desc-{desc}]_{suffix<table>}{extension<.tsv|.json>|.tsv}",
)


class DerivativesDataSink(_DerivativesDataSink):
    """Derivatives straight under ``base_directory`` (no pipeline sub-folder)."""

    out_path_base = ""
    _file_patterns = PATTERNS
