"""Participant and group reports: what they show, that they render offline in a browser, and
``--reports-only``."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mdgru_bids.cli.run import main
from mdgru_bids.reports.methods import descriptions

if TYPE_CHECKING:
    from tests.study import StudyRun

pytest_plugins = ["tests.study"]  # the shared study run

TEMPLATE = "MNI152NLin2009cAsym"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REPORTS = ("sub-01.html", "sub-02.html", "sub-03.html", "group.html")


class Page(HTMLParser):
    """What a page refers to (``src`` and ``href``), its table rows and its text."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.images: list[str] = []
        self.rows: list[list[str]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self.feed(path.read_text())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v for k, v in attrs if v}
        self.refs += [found[k] for k in ("src", "href") if k in found]
        if tag == "img":
            self.images.append(found["src"])
        elif tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    @property
    def words(self) -> str:
        return " ".join(" ".join(self.text).split())


def local_files(report: Path) -> list[Path]:
    """Every file a report refers to; it may refer to nothing outside OUT_DIR (offline)."""
    page = Page(report)
    files = []
    for ref in page.refs:
        assert "://" not in ref and not ref.startswith("//"), f"{report.name} fetches {ref}"
        if not ref.startswith("#"):
            files.append(report.parent / ref.split("#")[0])
    return files


def test_participant_report_shows_sessions_change_and_registration(study: StudyRun) -> None:
    out = study.out
    page = Page(out / "sub-01.html")
    figures = "sub-01/figures/"
    assert sorted(page.images) == sorted([
        f"{figures}sub-01_ses-01_desc-lesions_FLAIR.svg",
        f"{figures}sub-01_ses-02_desc-lesions_FLAIR.svg",
        f"{figures}sub-01_ses-02_desc-lesionchange_FLAIR.svg",
        f"{figures}sub-01_ses-02_desc-coreg_FLAIR.svg",
        f"{figures}sub-01_ses-01_space-{TEMPLATE}_desc-norm_FLAIR.svg",
    ])  # fmt: skip
    for image in page.images:
        assert ET.parse(out / image).getroot().tag.endswith("svg"), image
    header, *rows = page.rows
    table = pd.DataFrame(rows, columns=header).set_index("session")
    for ses in ("ses-01", "ses-02"):
        anat = out / "sub-01" / ses / "anat"
        lesions = pd.read_csv(anat / f"sub-01_{ses}_desc-lesions_table.tsv", sep="\t")
        assert int(table.loc[ses, "lesions"]) == len(lesions)
    change = pd.read_csv(
        out / "sub-01" / "ses-02" / "anat" / "sub-01_ses-02_desc-lesionchange_table.tsv", sep="\t"
    )
    assert table.loc["ses-02", "change since"] == "ses-01"
    assert int(table.loc["ses-02", "new"]) == (change["class"] == "new").sum()
    assert table.loc["ses-01", "new"] == "n/a"
    assert "No errors." in page.words


def test_single_session_report_has_no_change_figures(study: StudyRun) -> None:
    page = Page(study.out / "sub-02.html")
    assert sorted(page.images) == [
        "sub-02/figures/sub-02_ses-01_desc-lesions_FLAIR.svg",
        f"sub-02/figures/sub-02_ses-01_space-{TEMPLATE}_desc-norm_FLAIR.svg",
    ]


def test_failed_participant_report_shows_the_crash(study: StudyRun) -> None:
    page = Page(study.out / "sub-03.html")
    assert page.images == []
    assert "No derivatives of sub-03 were found" in page.words
    assert "sub_03_wf.lesion_seg_ses_01_wf.segment failed" in page.words
    crash_links = [r for r in page.refs if r.startswith("logs/crash-")]
    assert crash_links and all((study.out / r).is_file() for r in crash_links)
    assert not (study.out / "logs" / "sub-03_CITATION.md").exists()


def test_methods_are_the_workflow_descriptions_with_references(study: StudyRun) -> None:
    assert (study.out / "logs" / "sub-01_CITATION.md").is_file()
    words = Page(study.out / "sub-01.html").words
    assert "the FLAIR was corrected for intensity non-uniformity with N4" in words
    assert "was registered to the template with ANTs" in words
    assert "lesion probability above 0.43" in words  # the threshold of this very run
    assert "Participant 01 had 2 session(s)" in words
    assert "Andermatt S, Pezold S, Cattin P. Multi-dimensional Gated Recurrent Units" in words
    assert "Tustison NJ, Avants BB, Cook PA" in words


def test_descriptions_follow_the_graph_once_each() -> None:
    def workflow(name: str, desc: str | None) -> pe.Workflow:
        wf = pe.Workflow(name=name)
        wf.add_nodes([pe.Node(niu.IdentityInterface(fields=["x", "y"]), name="inputnode")])
        wf.__desc__ = desc
        return wf

    top = workflow("top", "Top.")
    first, again, last = workflow("a", "Sessions."), workflow("b", "Sessions."), workflow("c", "Z.")
    top.connect([(first, last, [("inputnode.x", "inputnode.x")]),
                 (again, last, [("inputnode.x", "inputnode.y")])])  # fmt: skip
    top.__postdesc__ = "After."
    assert descriptions(top) == ["Top.", "Sessions.", "Z.", "After."]


def _screenshot(report: Path, png: Path) -> np.ndarray:
    """The page as headless Chromium renders it, without any network activity."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed, so the reports could not be rendered")
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions", "--no-first-run",
        "--disable-features=Translate,MediaRouter,OptimizationHints",
        f"--user-data-dir={png.parent / 'chromium-profile'}", f"--screenshot={png}",
        "--window-size=1280,3600", report.as_uri(),
    ]  # fmt: skip
    subprocess.run(command, capture_output=True, timeout=120, check=True)
    return imread(png)


@pytest.mark.parametrize("name", REPORTS)
def test_reports_render_offline_with_every_figure(
    study: StudyRun, name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    report = study.out / name
    missing = [str(p) for p in local_files(report) if not p.is_file()]
    assert missing == []
    png = tmp_path_factory.mktemp("screenshots") / name.replace(".html", ".png")
    pixels = _screenshot(report, png)[..., :3]
    assert pixels.std() > 0.05, "a blank page"
    if Page(report).images:  # the figures' black backgrounds show only where they loaded
        dark = (pixels.max(axis=-1) < 0.05).mean()
        assert dark > 0.03, f"{name}: the figures did not load ({dark:.1%} dark pixels)"


def _digest(out: Path) -> dict[str, int]:
    return {
        str(p.relative_to(out)): p.stat().st_mtime_ns
        for p in out.rglob("*")
        if p.is_file() and "figures" not in p.parts and p.suffix != ".html"
    }


def test_reports_only_rewrites_reports_without_processing(
    study: StudyRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = Path(shutil.copytree(study.out, tmp_path / "out"))
    (out / "sub-01.html").unlink()
    shutil.rmtree(out / "sub-01" / "figures")
    before = _digest(out)
    untouched = (out / "sub-02.html").stat().st_mtime_ns
    monkeypatch.setenv("TEMPLATEFLOW_HOME", study.env["TEMPLATEFLOW_HOME"])
    argv = [study.bids, out, "participant", "--reports-only", "--participant-label", "01",
            "-w", tmp_path / "work"]  # fmt: skip
    assert main([str(a) for a in argv]) == 0  # no --model: nothing is processed
    assert (out / "sub-01.html").is_file()
    assert all(p.is_file() for p in local_files(out / "sub-01.html"))
    assert _digest(out) == before, "derivatives must not change"
    assert (out / "sub-02.html").stat().st_mtime_ns == untouched
    assert not (tmp_path / "work").exists()


def test_reports_only_without_outputs_exits_66(capsys, phantom_bids: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "dataset_description.json").write_text("{}")
    assert main([str(phantom_bids), str(out), "participant", "--reports-only"]) == 66
    err = capsys.readouterr().err.strip()
    assert err.startswith("mdgru-bids: error: no participant outputs") and "\n" not in err
