"""The participant workflow: graphs for any number of sessions, and a full run on a phantom."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import psutil
import pytest

from mdgru_bids.collect import Session, Subject
from mdgru_bids.io_spec import OUTPUTS
from mdgru_bids.templates import resolve_template
from mdgru_bids.workflows.base import init_single_subject_wf
from mdgru_bids.workflows.config import WorkflowConfig
from mdgru_bids.workflows.outputs import CHANGE_ROLES, SESSION_ROLES, init_session_outputs_wf
from mdgru_bids.workflows.segmentation import TTA_DESC
from tests.test_containers import namespaces_allowed


def _subject(n_sessions: int, t1w: bool) -> Subject:
    sessions = tuple(
        Session(f"{i:02d}", Path(f"/data/sub-01_ses-{i:02d}_FLAIR.nii.gz"),
                Path(f"/data/sub-01_ses-{i:02d}_T1w.nii.gz") if t1w else None)
        for i in range(1, n_sessions + 1)
    )  # fmt: skip
    return Subject("01", sessions)


@pytest.mark.parametrize("n_sessions", [1, 2, 3])
@pytest.mark.parametrize("t1w", [True, False])
def test_graph_builds_for_any_number_of_sessions(
    n_sessions: int,
    t1w: bool,
    templateflow_home: Path,
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch,
) -> None:
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(templateflow_home))
    cfg = WorkflowConfig(
        bids_dir=Path("/data"), derivatives_dir=tmp_path, model=tiny_model,
        model_inputs=("FLAIR", "T1w") if t1w else ("FLAIR",),
        template=resolve_template("MNI152NLin2009cAsym", tmp_path / "templates"),
    )  # fmt: skip
    workflow = init_single_subject_wf(_subject(n_sessions, t1w), cfg)
    graph = workflow._create_flat_graph()  # validates every connection
    names = {node.fullname.split(".", 1)[1] for node in graph.nodes()}
    nodes = [name.rsplit(".", 1)[-1] for name in names]
    for i in range(1, n_sessions + 1):
        assert f"lesion_seg_ses_{i:02d}_wf.segment" in names
        assert (f"anat_preproc_ses_{i:02d}_wf.t1w_to_flair" in names) == t1w
    assert "subject_lesions" in nodes  # every session's lesions and change decided together
    changes = sorted(n for n in nodes if n.startswith("change_to_session_"))
    assert changes == [f"change_to_session_ses_{i:02d}" for i in range(2, n_sessions + 1)]
    sinks = [n for n in nodes if n.startswith("ds_")]
    per_session = 8 if t1w else 7
    assert len(sinks) == 1 + per_session * n_sessions + 2 * (n_sessions - 1)


def test_the_outputs_stage_runs_alone_and_names_files_by_the_table(
    templateflow_home: Path, tiny_model: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(templateflow_home))
    out = tmp_path / "out"
    cfg = WorkflowConfig(
        bids_dir=Path("/data"), derivatives_dir=out, model=tiny_model, model_inputs=("FLAIR",),
        template=resolve_template("MNI152NLin2009cAsym", tmp_path / "templates"),
    )  # fmt: skip
    subject = _subject(2, False)
    first, second = subject.sessions
    workflow = init_session_outputs_wf(cfg, subject, second, first, False, name="outputs_wf")
    workflow.base_dir = str(tmp_path / "work")
    image = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4))
    for role in SESSION_ROLES + CHANGE_ROLES:
        path = tmp_path / f"{role}{OUTPUTS[role].extension}"
        if OUTPUTS[role].dtype:
            nib.save(image, path)
        else:
            path.write_text("x\n")
        setattr(workflow.inputs.inputnode, role, str(path))
    workflow.run()

    template = cfg.template.name
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    for role in SESSION_ROLES + CHANGE_ROLES:
        assert OUTPUTS[role].relpath("01", "02", template=template).as_posix() in written
    with_json = [r for r in SESSION_ROLES + CHANGE_ROLES if OUTPUTS[r].dtype or OUTPUTS[r].sidecar]
    assert len(written) == len(SESSION_ROLES + CHANGE_ROLES) + len(with_json)  # nothing else
    mask = json.loads(
        (out / OUTPUTS["lesion_mask"].relpath("01", "02")).with_suffix("").with_suffix(".json")
        .read_text()
    )  # fmt: skip
    assert mask["Sources"] == [OUTPUTS["probseg"].uri("01", "02")]
    assert mask["Threshold"] == cfg.threshold and mask["Type"] == "Lesion"
    change = json.loads(
        (out / OUTPUTS["change_dseg"].relpath("01", "02")).with_suffix("").with_suffix(".json")
        .read_text()
    )  # fmt: skip
    assert change["Sources"] == [
        OUTPUTS["probseg"].uri("01", "01"),
        OUTPUTS["probseg"].uri("01", "02"),
    ]


@pytest.fixture(scope="module")
def participant_run(
    phantom_bids: Path,
    tiny_model: Path,
    templateflow_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Path, list[str]]:
    """One full run of the installed command on phantom participant 01 (2 sessions), with N4
    and the network on two threads (the default would be one with --nprocs 2), so the
    reruns below show that multi-threaded steps repeat too."""
    out = tmp_path_factory.mktemp("run") / "derivatives"
    work = out.parent / "work"
    argv = [
        sys.executable,
        "-m",
        "mdgru_bids.cli.run",
        str(phantom_bids),
        str(out),
        "participant",
        "--participant-label",
        "01",
        "-w",
        str(work),
        "--model",
        str(tiny_model),
        "--nprocs",
        "2",
        "--omp-nthreads",
        "2",
        "--device",
        "cpu",
    ]
    env = {"TEMPLATEFLOW_HOME": str(templateflow_home), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, work, argv


def _elsewhere(argv: list[str], out: Path, work: Path) -> list[str]:
    """The same command with other output and work folders."""
    argv = list(argv)
    argv[argv.index("participant") - 1] = str(out)
    argv[argv.index("-w") + 1] = str(work)
    return argv


def _h5_datasets(path: Path) -> bytes:
    """An HDF5 file's datasets, by name (the file itself also stamps each object's time;
    string datasets are Python objects, compared by value, not by their addresses)."""
    import h5py

    parts: list[bytes] = []

    def add(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            value = np.asarray(obj[()])
            data = repr(value.tolist()).encode() if value.dtype.kind == "O" else value.tobytes()
            parts.append(name.encode() + data)

    with h5py.File(path, "r") as h5:
        h5.visititems(add)
    return b"".join(parts)


def _compared(root: Path) -> dict[str, bytes]:
    """What must repeat exactly, by path: images (uncompressed: gzip stamps the time), tables,
    sidecars, transforms and the methods text; not the reports, figures or logs."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or "figures/" in rel or rel.endswith(".html"):
            continue
        if rel.startswith("logs/") and not rel.endswith("_CITATION.md"):
            continue
        if rel.endswith(".h5"):
            found[rel] = _h5_datasets(path)
            continue
        data = path.read_bytes()
        found[rel] = gzip.decompress(data) if rel.endswith(".gz") else data
    return found


def assert_same_outputs(out: Path, reference: Path) -> None:
    got, want = _compared(out), _compared(reference)
    assert sorted(got) == sorted(want)
    assert any(name.endswith(".nii.gz") for name in got)
    differ = [name for name in want if got[name] != want[name]]
    assert differ == [], f"{len(differ)} of {len(want)} files differ"


def test_full_run_writes_the_designed_derivatives(participant_run) -> None:
    out, _, _ = participant_run
    anat = out / "sub-01" / "ses-02" / "anat"
    expected = [
        "desc-preproc_FLAIR.nii.gz", "space-FLAIR_desc-preproc_T1w.nii.gz",
        "desc-brain_mask.nii.gz", "label-lesion_probseg.nii.gz", "label-lesion_mask.nii.gz",
        "label-lesion_mask.json", "desc-lesions_table.tsv", "desc-lesions_table.json",
        "desc-lesionchange_dseg.nii.gz", "desc-lesionchange_table.tsv",
        "from-FLAIR_to-subject_mode-image_xfm.txt",
        "space-MNI152NLin2009cAsym_label-lesion_probseg.nii.gz",
    ]  # fmt: skip
    for stem in expected:
        assert (anat / f"sub-01_ses-02_{stem}").is_file(), stem
    first = out / "sub-01" / "ses-01" / "anat"
    assert (first / "sub-01_ses-01_label-lesion_mask.nii.gz").is_file()
    assert not list(first.glob("*lesionchange*")), "the first session has nothing to change from"
    assert (
        out / "sub-01" / "anat" / "sub-01_from-subject_to-MNI152NLin2009cAsym_mode-image_xfm.h5"
    ).is_file()
    assert not (out / "sub-02").exists()
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "mdgru-bids"
    sidecar = json.loads((anat / "sub-01_ses-02_label-lesion_mask.json").read_text())
    assert sidecar["Type"] == "Lesion" and sidecar["Sources"]


def test_outputs_sit_on_each_sessions_flair_grid(participant_run, phantom_bids: Path) -> None:
    out, _, _ = participant_run
    for ses in ("01", "02"):
        raw = nib.load(
            phantom_bids / "sub-01" / f"ses-{ses}" / "anat" / f"sub-01_ses-{ses}_FLAIR.nii.gz"
        )
        for stem in ("desc-preproc_FLAIR", "label-lesion_probseg", "label-lesion_mask"):
            img = nib.load(
                out / "sub-01" / f"ses-{ses}" / "anat" / f"sub-01_ses-{ses}_{stem}.nii.gz"
            )
            assert img.shape == raw.shape and np.allclose(img.affine, raw.affine, atol=1e-4)
        prob = nib.load(
            out / "sub-01" / f"ses-{ses}" / "anat" / f"sub-01_ses-{ses}_label-lesion_probseg.nii.gz"
        ).get_fdata()
        assert prob.min() >= 0 and prob.max() <= 1


def test_tables_have_the_documented_columns(participant_run) -> None:
    out, _, _ = participant_run
    anat = out / "sub-01" / "ses-02" / "anat"
    lesions = pd.read_csv(anat / "sub-01_ses-02_desc-lesions_table.tsv", sep="\t")
    dictionary = json.loads((anat / "sub-01_ses-02_desc-lesions_table.json").read_text())
    assert set(lesions.columns) == set(dictionary)
    change = pd.read_csv(anat / "sub-01_ses-02_desc-lesionchange_table.tsv", sep="\t")
    assert set(change["class"]) <= {"new", "enlarging", "shrinking", "stable", "resolved"}


def test_outputs_are_valid_bids_derivatives(participant_run) -> None:
    out, _, _ = participant_run
    exe = Path(sys.executable).parent / "bids-validator-deno"
    done = subprocess.run([str(exe), "--json", str(out)], capture_output=True, text=True)
    issues = json.loads(done.stdout)["issues"]["issues"]
    errors = [(i["code"], i.get("location")) for i in issues if i["severity"] == "error"]
    assert errors == []


def test_rerun_with_the_same_work_dir_resumes(participant_run, templateflow_home: Path) -> None:
    out, work, argv = participant_run
    results = sorted(work.rglob("result_*.pklz"))
    assert results
    stamps = {p: p.stat().st_mtime_ns for p in results}
    env = {"TEMPLATEFLOW_HOME": str(templateflow_home), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    recomputed = [
        p for p in results if p.stat().st_mtime_ns != stamps[p] and "/ds_" not in str(p)
    ]  # data sinks always run, by design
    assert recomputed == []
    assert (out / "sub-01" / "ses-02" / "anat" / "sub-01_ses-02_label-lesion_mask.nii.gz").is_file()


# Inside a new mount namespace: OUTPUT_DIR on a 1.5 MB file system (the participant's outputs
# take more), the app run, then a copy of what it left there, for the test to look at.
SMALL_DISK = """
mount -t tmpfs -o size=1536k tmpfs "$SMALL" || exit 99
"$@"
code=$?
cp -a "$SMALL/." "$KEPT"
exit $code
"""


def test_full_output_disk_is_one_line_and_publishes_nothing(
    participant_run, templateflow_home: Path, tmp_path: Path
) -> None:
    """A real full disk (tmpfs) while publishing; the work folder resumes, so this is quick."""
    why = namespaces_allowed()
    if why:
        pytest.skip(why)
    out, _, argv = participant_run
    small, kept = tmp_path / "small", tmp_path / "kept"
    small.mkdir()
    kept.mkdir()
    argv = [str(small) if arg == str(out) else arg for arg in argv]
    env = {"TEMPLATEFLOW_HOME": str(templateflow_home), "PATH": "/usr/bin:/bin",
           "SMALL": str(small), "KEPT": str(kept)}  # fmt: skip
    done = subprocess.run(
        ["unshare", "--mount", "sh", "-c", SMALL_DISK, "sh", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"mdgru-bids: error: cannot publish sub-01's outputs into OUTPUT_DIR {small}: No space "
        "left on device; none of them was written."
    ), last
    assert "choose another OUTPUT_DIR" in last and "same work folder (-w)" in last
    left = [p.relative_to(kept) for p in kept.rglob("*")]
    assert (kept / "dataset_description.json").is_file()
    assert not [p for p in left if p.parts[0] == "sub-01" or p.name.endswith(".tmp")], left


def test_single_session_flair_only_run_with_a_plugin_file(
    tiny_model_flair: Path, templateflow_home: Path, tmp_path: Path
) -> None:
    """One session, no T1w, the Linear plugin from a plugin file, test-time augmentation:
    masks and tables, no change."""
    from mdgru_bids.phantom import make_dataset

    bids = make_dataset(tmp_path / "bids", participants=1, sessions=1, seed=4, resolution=3.0)
    for t1w in bids.rglob("*_T1w.*"):
        t1w.unlink()
    plugin = tmp_path / "plugin.yml"
    plugin.write_text("plugin: Linear\nplugin_args: {}\n")
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "mdgru_bids.cli.run", str(bids), str(out), "participant",
            "-w", str(tmp_path / "work"), "--model", str(tiny_model_flair), "--omp-nthreads",
            "1", "--nipype-plugin-file", str(plugin), "--tta"]  # fmt: skip
    env = {"TEMPLATEFLOW_HOME": str(templateflow_home), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    anat = out / "sub-01" / "ses-01" / "anat"
    assert (anat / "sub-01_ses-01_label-lesion_mask.nii.gz").is_file()
    assert (anat / "sub-01_ses-01_desc-lesions_table.tsv").is_file()
    assert not list(out.rglob("*lesionchange*.nii.gz"))
    assert not list(out.rglob("*_T1w.nii.gz"))
    log = (out / "logs" / "pypeline.log").read_text()
    assert "Running serially" in log and "[MultiProc]" not in log
    sidecar = json.loads((anat / "sub-01_ses-01_label-lesion_probseg.json").read_text())
    assert sidecar["TestTimeAugmentation"] is True
    assert TTA_DESC in (out / "logs" / "sub-01_CITATION.md").read_text()


def test_a_second_run_into_fresh_folders_gives_identical_outputs(
    participant_run, templateflow_home: Path, tmp_path: Path
) -> None:
    """Same inputs, seed and settings: the same bytes (single-threaded ANTs registrations, the
    default; N4 and the network on two threads each)."""
    reference, _, argv = participant_run
    out = tmp_path / "out"
    env = {"TEMPLATEFLOW_HOME": str(templateflow_home), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        _elsewhere(argv, out, tmp_path / "work"), env=env, capture_output=True, text=True,
        timeout=1800,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_outputs(out, reference)
    sidecar = json.loads(
        (out / "sub-01" / "ses-01" / "anat" / "sub-01_ses-01_label-lesion_probseg.json").read_text()
    )
    assert sidecar["RandomSeed"] == 0 and sidecar["RegistrationThreads"] == 1
    assert sidecar["NetworkThreads"] == 2 and sidecar["NetworkPrecision"] in (
        "float32", "bfloat16"
    )  # fmt: skip
    methods = (out / "logs" / "sub-01_CITATION.md").read_text()
    assert "random seed 0" in methods and f"in {sidecar['NetworkPrecision']} arithmetic" in methods


def test_a_run_killed_mid_workflow_resumes_to_the_same_outputs(
    participant_run, templateflow_home: Path, tmp_path: Path
) -> None:
    """SIGKILL once the subject space exists (sessions preprocessed, nothing segmented yet),
    then the same command again: OUTPUT_DIR never shows a participant's files before they are
    complete, no process of the killed run lives on, and the resumed run publishes what an
    uninterrupted run did."""
    reference, _, argv = participant_run
    out, work = tmp_path / "out", tmp_path / "work"
    argv = _elsewhere(argv, out, work)
    env = {"TEMPLATEFLOW_HOME": str(templateflow_home), "PATH": "/usr/bin:/bin"}
    seen: set[str] = set()
    run = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    midway = work / "sub_01_wf" / "subject_space_wf" / "subject_space"
    deadline = time.monotonic() + 1800
    while not list(midway.glob("result_*.pklz")):
        assert run.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        seen |= {p.relative_to(out).as_posix() for p in out.rglob("*") if "logs" not in p.parts}
        time.sleep(0.2)
    children = psutil.Process(run.pid).children(recursive=True)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    _, alive = psutil.wait_procs(children, timeout=5)
    assert alive == [], f"{len(alive)} process(es) of the killed run live on"
    (cached,) = midway.glob("result_*.pklz")
    stamp = cached.stat().st_mtime_ns
    after = {p.relative_to(out).as_posix() for p in out.rglob("*") if "logs" not in p.parts}
    assert not [name for name in seen | after if name.startswith("sub-")]
    assert not [name for name in after if name.endswith(".tmp")]  # dataset files: whole

    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    assert cached.stat().st_mtime_ns == stamp, "the resumed run redid the finished steps"
    assert_same_outputs(out, reference)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
