"""The methods boilerplate: the participant workflow's own descriptions (``__desc__`` on each
Nipype workflow), with the software versions and the references they cite.

It is written when a participant's outputs are published (``logs/sub-X_CITATION.md``, as
fMRIPrep does), so ``--reports-only`` shows the methods of the run that made the outputs.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from nipype.pipeline import engine as pe
from nipype.pipeline.engine.utils import topological_sort

from mdgru_bids import __version__
from mdgru_bids.derivatives import write_atomic
from mdgru_bids.templates import ICBM152_NOTICE, Template

REFERENCES_HEADING = "### References"
#: Each reference, keyed by the citation that calls it in the text.
REFERENCES = {
    "Andermatt et al.": [
        "Andermatt S, Pezold S, Cattin P. Multi-dimensional Gated Recurrent Units for the "
        "Segmentation of Biomedical 3D-Data. Deep Learning and Data Labeling for Medical "
        "Applications (DLMIA), LNCS 10008, 2016.",
        "Andermatt S, Pezold S, Cattin P. Automated Segmentation of Multiple Sclerosis Lesions "
        "using Multi-Dimensional Gated Recurrent Units. Brainlesion (BrainLes 2017), "
        "LNCS 10670, 2018.",
    ],
    "Gorgolewski et al. 2011": [
        "Gorgolewski K, Burns CD, Madison C, Clark D, Halchenko YO, Waskom ML, Ghosh SS. Nipype: "
        "a flexible, lightweight and extensible neuroimaging data processing framework in "
        "Python. Frontiers in Neuroinformatics 5:13, 2011.",
    ],
    "Tustison et al. 2010": [
        "Tustison NJ, Avants BB, Cook PA, Zheng Y, Egan A, Yushkevich PA, Gee JC. N4ITK: "
        "improved N3 bias correction. IEEE Transactions on Medical Imaging 29(6):1310-1320, "
        "2010.",
    ],
    "Tustison et al. 2021": [
        "Tustison NJ, Cook PA, Holbrook AJ, et al. The ANTsX ecosystem for quantitative "
        "biological and medical imaging. Scientific Reports 11:9068, 2021.",
    ],
    "Paszke et al. 2019": [
        "Paszke A, Gross S, Massa F, et al. PyTorch: an imperative style, high-performance deep "
        "learning library. Advances in Neural Information Processing Systems 32, 2019.",
    ],
    "Ciric et al. 2022": [
        "Ciric R, Thompson WH, Lorenz R, et al. TemplateFlow: FAIR-sharing of multi-scale, "
        "multi-species brain models. Nature Methods 19:1568-1571, 2022.",
    ],
    "Fonov et al. 2009": [
        "Fonov VS, Evans AC, McKinstry RC, Almli CR, Collins DL. Unbiased nonlinear average "
        "age-appropriate brain templates from birth to adulthood. NeuroImage 47:S102, 2009.",
    ],
}


def descriptions(workflow: pe.Workflow) -> list[str]:
    """``__desc__`` of the workflow, then its sub-workflows' in processing order, then its
    ``__postdesc__`` (niworkflows' convention); each text once, as every session's
    sub-workflows describe the same steps."""
    found = [workflow.__desc__] if getattr(workflow, "__desc__", None) else []
    for node in topological_sort(workflow._graph)[0]:
        if isinstance(node, pe.Workflow):
            found += [text for text in descriptions(node) if text not in found]
    post = getattr(workflow, "__postdesc__", None)
    return [*found, post] if post and post not in found else found


def boilerplate(workflow: pe.Workflow, template: Template) -> str:
    """The methods text (Markdown) of a participant workflow, references included."""
    cite = " (Fonov et al. 2009)" if template.name.startswith("MNI152NLin2009") else ""
    if template.embedded:
        source = (
            "is the copy of the MNI ICBM152 2009a nonlinear symmetric template that mdgru-bids "
            f"embeds (nilearn's packaged files; {ICBM152_NOTICE.rstrip('.')})"
        )
    else:
        source = "came from TemplateFlow (Ciric et al. 2022)"
    why = f" Template: {template.fallback}." if template.fallback else ""
    intro = (
        f"Results included in this report were generated with mdgru-bids {__version__}, "
        f"built on Nipype {version('nipype')} (Gorgolewski et al. 2011), ANTsPy "
        f"{version('antspyx')} (Tustison et al. 2021) and PyTorch {version('torch')} (Paszke et "
        f"al. 2019). The {template.name} template{cite} {source}.{why}"
    )
    paragraphs = [intro, *descriptions(workflow)]
    text = "\n".join(paragraphs)
    cited = [ref for key, refs in REFERENCES.items() if key in text for ref in refs]
    items = "\n".join(f"- {ref}" for ref in cited)
    return "\n\n".join(paragraphs) + f"\n\n{REFERENCES_HEADING}\n\n{items}\n"


def citation_path(output_dir: Path, label: str) -> Path:
    return output_dir / "logs" / f"sub-{label}_CITATION.md"


def write_boilerplate(output_dir: Path, label: str, text: str) -> Path:
    path = citation_path(output_dir, label)
    write_atomic(path, text)
    return path


def read_boilerplate(output_dir: Path, label: str) -> tuple[list[str], list[str]]:
    """Paragraphs and references of a participant's methods text (empty when there is none)."""
    path = citation_path(output_dir, label)
    if not path.is_file():
        return [], []
    body, _, refs = path.read_text().partition(REFERENCES_HEADING)
    paragraphs = [p.strip() for p in body.split("\n\n") if p.strip()]
    return paragraphs, [line[2:] for line in refs.splitlines() if line.startswith("- ")]
