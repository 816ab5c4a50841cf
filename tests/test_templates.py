"""Templates: TemplateFlow's when TEMPLATEFLOW_HOME has them, else the embedded one, built from
nilearn's packaged MNI ICBM152 2009a files with no network."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mdgru_bids.errors import AppError, MissingInputError
from mdgru_bids.templates import (
    DEFAULT_TEMPLATE,
    EMBEDDED_TEMPLATE,
    ICBM152_NOTICE,
    resolve_template,
)


def test_default_is_templateflows_when_templateflow_home_has_it(
    templateflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(templateflow_home))
    template = resolve_template(None, tmp_path / "cache")
    assert template.name == DEFAULT_TEMPLATE and not template.embedded
    assert template.fallback is None
    assert template.t1w.parent == templateflow_home / f"tpl-{DEFAULT_TEMPLATE}"
    assert not (tmp_path / "cache").exists(), "nothing is built when TemplateFlow has it"


@pytest.mark.parametrize("home", [None, "empty"])
def test_default_falls_back_to_the_embedded_template_and_says_why(
    home: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if home is None:
        monkeypatch.delenv("TEMPLATEFLOW_HOME", raising=False)
    else:
        (tmp_path / home).mkdir()
        monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path / home))
    template = resolve_template(None, tmp_path / "cache")
    assert template.name == EMBEDDED_TEMPLATE and template.embedded
    assert DEFAULT_TEMPLATE in template.fallback and "TEMPLATEFLOW_HOME" in template.fallback
    folder = tmp_path / "cache" / f"tpl-{EMBEDDED_TEMPLATE}"
    assert template.t1w == folder / f"tpl-{EMBEDDED_TEMPLATE}_res-01_T1w.nii.gz"
    assert template.brain_mask == folder / f"tpl-{EMBEDDED_TEMPLATE}_res-01_desc-brain_mask.nii.gz"
    description = json.loads((folder / "template_description.json").read_text())
    assert description["License"] == ICBM152_NOTICE
    assert "Louis Collins" in ICBM152_NOTICE


def test_embedded_template_named_is_used_without_a_fallback_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEMPLATEFLOW_HOME", raising=False)
    template = resolve_template(EMBEDDED_TEMPLATE, tmp_path)
    assert template.embedded and template.fallback is None


def test_embedded_template_is_a_brain_with_its_mask(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("TEMPLATEFLOW_HOME", raising=False)
    template = resolve_template(EMBEDDED_TEMPLATE, tmp_path)
    t1w, mask = nib.load(template.t1w), nib.load(template.brain_mask)
    assert t1w.shape == mask.shape == (197, 233, 189)
    assert np.allclose(t1w.affine, mask.affine) and np.allclose(np.diag(t1w.affine), [1, 1, 1, 1])
    brain, head = np.asanyarray(mask.dataobj) > 0, t1w.get_fdata() > 0
    assert mask.get_data_dtype() == np.uint8
    # the mask holds the (skull-stripped) T1w's brain and not much more: about 1.5 litres
    assert (brain & head).sum() / head.sum() > 0.99
    assert 1.3e6 < brain.sum() < 2.0e6


def test_embedded_template_is_built_once_and_the_same_bytes_every_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEMPLATEFLOW_HOME", raising=False)
    first = resolve_template(EMBEDDED_TEMPLATE, tmp_path / "a")
    stamps = [first.t1w.stat().st_mtime_ns, first.brain_mask.stat().st_mtime_ns]
    again = resolve_template(EMBEDDED_TEMPLATE, tmp_path / "a")
    assert [again.t1w.stat().st_mtime_ns, again.brain_mask.stat().st_mtime_ns] == stamps
    other = resolve_template(EMBEDDED_TEMPLATE, tmp_path / "b")
    assert other.t1w.read_bytes() == first.t1w.read_bytes()
    assert other.brain_mask.read_bytes() == first.brain_mask.read_bytes()
    # a file of an older build (another nilearn, say) is rebuilt, not trusted
    description = first.t1w.parent / "template_description.json"
    description.write_text("{}")
    first.t1w.write_bytes(b"")
    rebuilt = resolve_template(EMBEDDED_TEMPLATE, tmp_path / "a")
    assert rebuilt.t1w.read_bytes() == other.t1w.read_bytes()


def test_embedded_template_at_2_mm_covers_the_same_brain(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("TEMPLATEFLOW_HOME", raising=False)
    fine = resolve_template(EMBEDDED_TEMPLATE, tmp_path, 1)
    coarse = resolve_template(EMBEDDED_TEMPLATE, tmp_path, 2)
    assert coarse.t1w.name.endswith("_res-02_T1w.nii.gz")
    img = nib.load(coarse.brain_mask)
    assert np.allclose(img.header.get_zooms(), 2.0) and img.get_data_dtype() == np.uint8
    litres = [
        np.count_nonzero(np.asanyarray(nib.load(t.brain_mask).dataobj)) * z**3 / 1e6
        for t, z in ((fine, 1), (coarse, 2))
    ]
    assert litres[1] == pytest.approx(litres[0], rel=0.03)


def test_templates_not_found_are_one_line_errors(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(MissingInputError, match=r"TEMPLATEFLOW_HOME=.*nowhere.*t\.get\(.*aSym"):
        resolve_template(DEFAULT_TEMPLATE, tmp_path)
    with pytest.raises(MissingInputError, match="res-03"):
        resolve_template(None, tmp_path, 3)
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(AppError, match="cannot write the embedded template") as err:
        resolve_template(None, blocked)
    assert "\n" not in str(err.value)
