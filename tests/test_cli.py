"""The mdgru-bids command line: usage, bad input and the exit codes of the BIDS-Apps spec.

Every failure must be one line naming the problem, leave no derivatives and never touch the
input dataset.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mdgru_bids.cli.parser import build_parser
from mdgru_bids.cli.run import main
from mdgru_bids.model.files import BUNDLED, DEFAULT_MODEL, bundled_model, choose_model
from mdgru_bids.workflows.execution import default_omp_nthreads


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def bids(phantom_bids: Path, tmp_path: Path) -> Path:
    """A private copy of the phantom dataset the test may damage."""
    return Path(shutil.copytree(phantom_bids, tmp_path / "bids"))


def run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err.strip()


def _fails_cleanly(
    capsys, code_expected: int, bids: Path, out: Path, *extra, match: str | tuple[str, ...]
) -> None:
    before = _tree_digest(bids)
    code, err = run(capsys, bids, out, "participant", "-w", out.parent / "work", *extra)
    assert code == code_expected, err
    last = err.splitlines()[-1]
    assert last.startswith("mdgru-bids: error:"), err
    for part in (match,) if isinstance(match, str) else match:
        assert part in last, err
    assert not list(out.glob("sub-*")), "no derivatives may be written"
    assert _tree_digest(bids) == before, "the input dataset must not change"


def test_parser_knows_the_bids_app_options() -> None:
    args = build_parser().parse_args(
        ["in", "out", "participant", "--participant-label", "sub-01", "02", "--nprocs", "2",
         "--omp-nthreads", "1", "--mem-mb", "4000", "--device", "cpu", "--random-seed", "3",
         "--skip-bids-validation", "--stop-on-first-crash", "--write-graph", "-v"]
    )  # fmt: skip
    assert args.participant_label == ["sub-01", "02"] and args.nprocs == 2
    assert args.random_seed == 3 and args.skip_bids_validation and args.verbose == 1


def test_usage_errors_exit_64(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["in", "out", "participant", "--nprocs", "0"])
    assert exc.value.code == 64
    with pytest.raises(SystemExit) as exc:
        main(["in"])
    assert exc.value.code == 64


def test_version_exits_0(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and "mdgru-bids" in capsys.readouterr().out


def test_unknown_level_exits_17(capsys, bids: Path, tmp_path: Path) -> None:
    code, err = run(capsys, bids, tmp_path / "out", "subject")
    assert code == 17 and "unknown analysis level" in err


def test_missing_input_exits_66(capsys, tmp_path: Path) -> None:
    code, err = run(capsys, tmp_path / "nope", tmp_path / "out", "participant")
    assert code == 66 and "does not exist" in err


def test_output_inside_input_is_refused(capsys, bids: Path) -> None:
    code, err = run(capsys, bids, bids / "derivatives" / "mdgru", "participant")
    assert code == 64 and "inside the input dataset" in err


def test_output_that_cannot_be_created_exits_64(capsys, bids: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # root may write anywhere, but nobody can make a folder in a file
    _fails_cleanly(capsys, 64, bids, blocker / "out", match=("cannot create OUTPUT_DIR", "a_file"))


def test_not_bids_exits_16(capsys, bids: Path, tmp_path: Path) -> None:
    (bids / "dataset_description.json").unlink()
    _fails_cleanly(
        capsys, 16, bids, tmp_path / "out", "--skip-bids-validation", match="not a BIDS dataset"
    )


def test_invalid_bids_exits_16(capsys, bids: Path, tmp_path: Path) -> None:
    (bids / "participants.tsv").unlink()
    _fails_cleanly(capsys, 16, bids, tmp_path / "out", match="not valid BIDS")


def test_unknown_participant_exits_66(capsys, bids: Path, tmp_path: Path) -> None:
    _fails_cleanly(
        capsys, 66, bids, tmp_path / "out", "--participant-label", "07", match="07 not found"
    )


def test_session_filter_selecting_nothing_exits_18(capsys, bids: Path, tmp_path: Path) -> None:
    _fails_cleanly(
        capsys,
        18,
        bids,
        tmp_path / "out",
        "--session-label",
        "09",
        "--skip-bids-validation",
        match="selected no session",
    )


def test_a_session_like_folder_above_the_dataset_exits_64(
    capsys, bids: Path, tmp_path: Path
) -> None:
    """pybids would give every file the folder's session and lose ses-02 without a word."""
    from mdgru_bids.collect import collect_subjects, load_layout

    moved = tmp_path / "pair_ses-01"
    shutil.copytree(bids, moved)
    _fails_cleanly(
        capsys, 64, moved, tmp_path / "out", "--skip-bids-validation",
        match=("pybids reads session 01", "sub-01_ses-02", "rename or move that folder"),
    )  # fmt: skip
    plain = moved.rename(tmp_path / "plain")  # the fix the message names
    (subject,) = collect_subjects(load_layout(plain), ["01"])
    assert [s.label for s in subject.sessions] == ["01", "02"]


def test_sessions_follow_acquisition_time_not_labels(bids: Path) -> None:
    from mdgru_bids.collect import collect_subjects, load_layout

    table = bids / "sub-01" / "sub-01_sessions.tsv"
    rows = table.read_text().splitlines()
    header = rows[0].split("\t")
    when = header.index("acq_time")
    first, second = (r.split("\t") for r in rows[1:3])
    first[when], second[when] = second[when], first[when]  # ses-02 now comes first
    table.write_text("\n".join(["\t".join(header), "\t".join(first), "\t".join(second)]) + "\n")
    (subject,) = collect_subjects(load_layout(bids), ["01"])
    assert [s.label for s in subject.sessions] == ["02", "01"]


def test_subject_without_flair_exits_66(capsys, bids: Path, tmp_path: Path) -> None:
    for flair in (bids / "sub-01").rglob("*_FLAIR.*"):
        flair.unlink()
    _fails_cleanly(
        capsys,
        66,
        bids,
        tmp_path / "out",
        "--participant-label",
        "01",
        "--skip-bids-validation",
        match="no FLAIR",
    )


def _flair(bids: Path) -> Path:
    return bids / "sub-01" / "ses-01" / "anat" / "sub-01_ses-01_FLAIR.nii.gz"


@pytest.mark.parametrize(
    ("damage", "match"),
    [("4d", "3-D anatomical image is needed"), ("empty", "is empty"), ("nan", "NaN"),
     ("unreadable", "cannot be read as NIfTI")],
)  # fmt: skip
def test_bad_images_exit_65(
    capsys, bids: Path, tmp_path: Path, damage: str, match: str, tiny_model: Path
) -> None:
    path = _flair(bids)
    img = nib.load(path)
    data = np.asanyarray(img.dataobj).astype(np.float32)
    if damage == "unreadable":
        path.write_bytes(b"not a nifti at all")
    else:
        data = {"4d": np.stack([data, data], -1), "empty": np.zeros_like(data),
                "nan": np.where(data > data.mean(), np.nan, data)}[damage]  # fmt: skip
        nib.save(nib.Nifti1Image(data, img.affine), path)
    _fails_cleanly(
        capsys,
        65,
        bids,
        tmp_path / "out",
        "--skip-bids-validation",
        "--model",
        tiny_model,
        match=(path.name, match),
    )


def test_bad_model_exits_65_and_missing_model_66(capsys, bids: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 64)
    _fails_cleanly(capsys, 65, bids, tmp_path / "out", "--model", broken, match="broken")
    _fails_cleanly(
        capsys,
        66,
        bids,
        tmp_path / "out",
        "--model",
        tmp_path / "none.safetensors",
        match="does not exist",
    )


def test_bundled_models_by_name_and_the_default() -> None:
    for name, inputs in (("flair", ["FLAIR"]), ("flair-t1w", ["FLAIR", "T1w"])):
        path, card = choose_model(name)
        assert path == bundled_model(name) and card["inputs"] == inputs
        assert card["accuracy"]["phantom"]["lesion_mean"]["dice"] > 0.8  # measured, recorded
    assert choose_model(None)[0] == bundled_model(DEFAULT_MODEL)
    assert set(BUNDLED) == {"flair", "flair-t1w"}


def test_unknown_model_name_lists_the_bundled_ones(capsys, bids: Path, tmp_path: Path) -> None:
    _fails_cleanly(
        capsys, 66, bids, tmp_path / "out", "--model", "flair-t2", match="flair, flair-t1w"
    )


@pytest.mark.parametrize("name", ["MNI152NLin2009cAsym", "MNI152NLin6Asym"])
def test_named_template_not_on_disk_exits_66_naming_both_fixes(
    capsys, bids: Path, tmp_path: Path, tiny_model: Path, monkeypatch, name: str
) -> None:
    """Named explicitly, a template is never swapped for the embedded one behind the user's
    back: the error says how to fetch it and how to use the embedded one instead."""
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path / "empty_tf"))
    _fails_cleanly(
        capsys, 66, bids, tmp_path / "out", "--model", tiny_model, "--template", name,
        match=(name, "TEMPLATEFLOW_HOME", "t.get(", "--template MNI152NLin2009aSym"),
    )  # fmt: skip


def test_embedded_template_has_no_3_mm(
    capsys, bids: Path, tmp_path: Path, tiny_model: Path, monkeypatch
) -> None:
    monkeypatch.delenv("TEMPLATEFLOW_HOME", raising=False)
    _fails_cleanly(
        capsys, 66, bids, tmp_path / "out", "--model", tiny_model, "--template-resolution", "3",
        match=("MNI152NLin2009aSym", "res-03"),
    )  # fmt: skip


def test_bids_filter_file_must_be_valid(capsys, bids: Path, tmp_path: Path) -> None:
    filters = tmp_path / "filters.json"
    filters.write_text(json.dumps({"bold": {"task": "rest"}}))
    _fails_cleanly(
        capsys,
        64,
        bids,
        tmp_path / "out",
        "--bids-filter-file",
        filters,
        match="expected an object",
    )


@pytest.mark.parametrize(("nprocs", "threads"), [(1, 1), (2, 1), (4, 3), (32, 8)])
def test_multithreaded_steps_leave_a_core_for_a_registration(nprocs: int, threads: int) -> None:
    assert default_omp_nthreads(nprocs) == threads
