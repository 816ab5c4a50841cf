"""HPC: the SLURM scripts in workflows/slurm on a real one-node cluster, and many participant
jobs writing into one output folder at once.

The cluster (munged, slurmctld, slurmd on localhost, all state in a temporary folder) needs
root and Debian's slurm-wlm and munge; without them these tests skip and say why.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mdgru_bids import derivatives, io_spec
from mdgru_bids.derivatives import dataset_description, init_derivatives, publish

SLURM_DIR = Path(__file__).resolve().parents[1] / "workflows" / "slurm"
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")


def _why_no_cluster() -> str | None:
    if not sys.platform.startswith("linux"):
        return "a SLURM test cluster needs Linux"
    if os.geteuid() != 0:
        return "a SLURM test cluster needs root (slurmd starts jobs as their user)"
    missing = [p for p in PROGRAMS if shutil.which(p, path=SEARCH_PATH) is None]
    if missing:
        return f"a SLURM test cluster needs Debian's slurm-wlm and munge ({', '.join(missing)})"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _query(env: dict[str, str], *argv: str) -> str:
    return subprocess.run(argv, env=env, capture_output=True, text=True).stdout.strip()


def _fields(line: str) -> dict[str, str]:
    """``Key=value`` pairs of a jobcomp record or ``scontrol -o`` line."""
    return dict(re.findall(r"(\w+)=(\S*)", line))


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]
    cpus: int
    memory_mb: int

    def run(self, *argv: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            argv, env=env or self.env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr}"
        return done.stdout

    def wait(self, *job_ids: str, timeout: float) -> None:
        """Until none of the jobs is pending or running any more."""
        deadline = time.monotonic() + timeout
        while self.run("squeue", "-h", "-o", "%i", "-j", ",".join(job_ids)).strip():
            assert time.monotonic() < deadline, self.run("squeue")
            time.sleep(1)

    def finished(self) -> list[dict[str, str]]:
        """Every finished job as jobcomp/filetxt recorded it."""
        path = self.root / "jobcomp.txt"
        return [_fields(line) for line in path.read_text().splitlines()] if path.exists() else []

    def job(self, job_id: str) -> list[dict[str, str]]:
        lines = self.run("scontrol", "-o", "show", "job", job_id).splitlines()
        return [_fields(line) for line in lines]


def _slurm_conf(root: Path, cpus: int, memory_mb: int) -> str:
    return f"""\
ClusterName=mdgrutest
SlurmctldHost=localhost
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={root}/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MinJobAge=3600
NodeName=localhost CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A one-node SLURM cluster on localhost for this module; every daemon stops at the end."""
    why = _why_no_cluster()
    if why:
        pytest.skip(why)
    root = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (root / sub).mkdir()
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    cpus = os.cpu_count() or 1
    memory_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.9)
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(root, cpus, memory_mb))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    env.update(SLURM_CONF=str(conf), PATH=SEARCH_PATH)
    which = {p: shutil.which(p, path=SEARCH_PATH) or p for p in PROGRAMS}
    daemons: list[subprocess.Popen] = []

    def start(name: str, *argv: str) -> None:
        with open(root / f"{name}.log", "w") as log:
            daemons.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))

    def logs() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in root.glob("*.log"))

    cluster = Cluster(root, env, cpus, memory_mb)
    try:
        # --force: pytest's temporary folders are private (0700), which munged only warns about
        start("munged", which["munged"], "--foreground", "--force", f"--key-file={key}",
              f"--socket={root}/munge.socket", f"--pid-file={root}/munged.pid",
              f"--log-file={root}/munged.log", f"--seed-file={root}/munged.seed")  # fmt: skip
        start("slurmctld", which["slurmctld"], "-D", "-f", str(conf))
        start("slurmd", which["slurmd"], "-D", "-f", str(conf), "-N", "localhost")
        deadline = time.monotonic() + 30
        while _query(env, which["sinfo"], "-h", "-o", "%T") != "idle":
            if time.monotonic() > deadline or any(d.poll() is not None for d in daemons):
                pytest.fail(f"the test cluster did not come up:\n{logs()}")
            time.sleep(0.2)
        yield cluster
    finally:
        subprocess.run([which["scancel"], "--user=root"], env=env, capture_output=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _query(env, which["squeue"], "-h"):
            time.sleep(0.5)
        for daemon in reversed(daemons):
            daemon.terminate()
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()


def _job_env(
    cluster: Cluster, bids: Path, out: Path, work: Path, templateflow_home: Path, app_args: str
) -> dict[str, str]:
    """What a user exports before submit.sh, with the installed app in place of the image."""
    return {
        **cluster.env,
        "BIDS_DIR": str(bids),
        "OUTPUT_DIR": str(out),
        "WORK_DIR": str(work),
        "MDGRU_BIDS_CMD": str(Path(sys.executable).parent / "mdgru-bids"),
        "MDGRU_BIDS_ARGS": app_args,
        "TEMPLATEFLOW_HOME": str(templateflow_home),
    }


def _submit(cluster: Cluster, env: dict[str, str]) -> tuple[str, str]:
    # the scripts ask for a GPU and more than a test machine has: override, as users may
    overrides = ["--gres=none", "--cpus-per-task=1", "--mem=2G", "--time=30"]
    array, group = cluster.run("bash", str(SLURM_DIR / "submit.sh"), *overrides, env=env).split()
    return array, group


def test_participant_array_then_group_job(
    cluster: Cluster,
    phantom_bids: Path,
    tiny_model: Path,
    templateflow_home: Path,
    tmp_path: Path,
) -> None:
    """submit.sh: one array task per participant into one OUTPUT_DIR, then the group job."""
    out, work = tmp_path / "derivatives", tmp_path / "scratch"
    # one session each keeps the test short; the scheduling is what is under test
    app_args = f"--model {tiny_model} --session-label 01 --omp-nthreads 1 --device cpu"
    env = _job_env(cluster, phantom_bids, out, work, templateflow_home, app_args)
    array, group = _submit(cluster, env)
    (waiting,) = cluster.job(group)
    assert waiting["Dependency"].startswith(f"afterok:{array}_")
    cluster.wait(array, group, timeout=900)

    records = cluster.finished()
    tasks = sorted((r for r in records if r.get("ArrayJobId") == array),
                   key=lambda r: int(r["ArrayTaskId"]))  # fmt: skip
    assert [t["ArrayTaskId"] for t in tasks] == ["1", "2"]
    for task in tasks:
        log = out / "logs" / "slurm" / f"mdgru-bids-{array}_{task['ArrayTaskId']}.log"
        assert (task["JobState"], task["ExitCode"]) == ("COMPLETED", "0:0"), log.read_text()[-3000:]
    if cluster.cpus >= 2:  # both participants wrote into OUTPUT_DIR at the same time
        assert tasks[0]["StartTime"] < tasks[1]["EndTime"]
        assert tasks[1]["StartTime"] < tasks[0]["EndTime"]
    for label in ("01", "02"):
        log = (out / "logs" / "slurm").glob(f"mdgru-bids-{array}_*.log")
        assert any(f"sub-{label} on" in p.read_text() for p in log)
        anat = out / f"sub-{label}" / "ses-01" / "anat"
        assert (anat / f"sub-{label}_ses-01_label-lesion_mask.nii.gz").is_file()
        assert (anat / f"sub-{label}_ses-01_desc-lesions_table.tsv").is_file()
        assert (work / f"sub-{label}").is_dir()  # each participant resumes from its own folder
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"

    (done,) = [r for r in records if r["JobId"] == group]
    # the dependency held: the group job started only after the last participant ended
    assert done["StartTime"] >= max(t["EndTime"] for t in tasks)
    assert (done["JobState"], done["ExitCode"]) == ("COMPLETED", "0:0")
    lesions = (out / "group" / "lesions.tsv").read_text().splitlines()
    assert [row.split("\t")[:2] for row in lesions[1:]] == [
        ["sub-01", "ses-01"],
        ["sub-02", "ses-01"],  # the sessions the array processed
    ]
    assert (out / "group.html").is_file()


def test_group_job_is_cancelled_when_a_participant_fails(
    cluster: Cluster, phantom_bids: Path, templateflow_home: Path, tmp_path: Path
) -> None:
    out, work = tmp_path / "derivatives", tmp_path / "scratch"
    missing = tmp_path / "missing.safetensors"
    env = _job_env(cluster, phantom_bids, out, work, templateflow_home,
                   f"--model {missing} --skip-bids-validation")  # fmt: skip
    array, group = _submit(cluster, env)
    cluster.wait(array, group, timeout=300)
    tasks = [r for r in cluster.finished() if r.get("ArrayJobId") == array]
    assert sorted(t["ExitCode"] for t in tasks) == ["66:0", "66:0"]  # missing input
    (cancelled,) = cluster.job(group)
    assert cancelled["JobState"] == "CANCELLED"
    assert cancelled["Reason"] == "DependencyNeverSatisfied"
    assert not (out / "group").exists()


def test_array_task_beyond_the_participants_fails_clearly(
    cluster: Cluster, phantom_bids: Path, templateflow_home: Path, tmp_path: Path
) -> None:
    out = tmp_path / "derivatives"
    env = _job_env(cluster, phantom_bids, out, tmp_path / "scratch", templateflow_home, "")
    log = tmp_path / "task.log"
    job = cluster.run("sbatch", "--parsable", "--array=3", "--gres=none", "--cpus-per-task=1",
                      "--mem=1G", f"--output={log}", str(SLURM_DIR / "participant_array.sbatch"),
                      env=env).strip()  # fmt: skip
    cluster.wait(job, timeout=120)
    (task,) = [r for r in cluster.finished() if r.get("ArrayJobId") == job]
    assert task["ExitCode"] == "64:0"
    assert "fewer participants" in log.read_text()


def test_participant_list_from_participants_tsv_or_folders(tmp_path: Path) -> None:
    bids = tmp_path / "bids"
    for label in ("b", "a", "c"):
        (bids / f"sub-{label}").mkdir(parents=True)

    def listed() -> list[str]:
        done = subprocess.run(
            ["bash", str(SLURM_DIR / "participant_array.sbatch"), "--list"],
            env={"PATH": os.environ["PATH"], "BIDS_DIR": str(bids)},
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return done.stdout.split()

    assert listed() == ["a", "b", "c"]
    # the declared order wins; labels without a folder are left out, CRLF files are read too
    rows = ["participant_id\tage", "sub-c\t30", "sub-x\t1", "b\t2"]
    (bids / "participants.tsv").write_text("\r\n".join(rows) + "\r\n")
    assert listed() == ["c", "b"]


def _add(a: int, b: int) -> int:
    return a + b


def test_nipype_slurm_plugin_file_runs_steps_as_jobs(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example plugin file, as given, runs a Nipype workflow's steps as SLURM jobs."""
    from nipype import Function, Node, Workflow

    spec = yaml.safe_load((SLURM_DIR / "nipype_slurm.yml").read_text())
    args = spec["plugin_args"]["sbatch_args"]
    cpus = int(re.search(r"--cpus-per-task=(\d+)", args)[1])
    memory_gb = int(re.search(r"--mem=(\d+)G", args)[1])
    if cpus > cluster.cpus or memory_gb * 1024 > cluster.memory_mb:
        pytest.skip(f"this machine is smaller than the example's jobs ({args})")
    monkeypatch.setenv("SLURM_CONF", cluster.env["SLURM_CONF"])
    monkeypatch.setenv("LOGNAME", "root")
    monkeypatch.setenv("PATH", SEARCH_PATH)
    first = Node(Function(["a", "b"], ["out"], _add), name="first")
    second = Node(Function(["a", "b"], ["out"], _add), name="second")
    first.inputs.a, first.inputs.b, second.inputs.b = 1, 2, 10
    workflow = Workflow("plugin_example", base_dir=str(tmp_path))
    workflow.connect(first, "out", second, "a")
    graph = workflow.run(plugin=spec["plugin"], plugin_args=spec["plugin_args"])
    (last,) = [n for n in graph.nodes() if n.name == "second"]
    assert last.result.outputs.out == 13
    ran = [r["Name"] for r in cluster.finished() if "plugin_example" in r.get("Name", "")]
    assert any("first" in name for name in ran) and any("second" in name for name in ran)


# ---- many participant jobs, one output folder ----------------------------------------------

ROUNDS = 150
WORKERS = 4


def _participant_job(out: str, bids: str, worker: int, start) -> None:
    """What each array task does to the shared folder, over and over: set it up, publish."""
    start.wait()
    label = f"{worker:02d}"
    for i in range(ROUNDS):
        init_derivatives(Path(out), Path(bids))
        staging = Path(out).parent / "work" / f"sub-{label}"
        anat = staging / f"sub-{label}" / "anat"
        anat.mkdir(parents=True)
        # large enough that writing it takes many system calls
        table = {"round": i, "rows": [{"lesion": n, "volume_mm3": n * 1.5} for n in range(3000)]}
        (anat / f"sub-{label}_desc-lesions_table.json").write_text(json.dumps(table))
        publish(staging, Path(out))


def test_concurrent_jobs_never_leave_a_shared_file_incomplete(
    phantom_bids: Path, tmp_path: Path
) -> None:
    """Real processes set up and publish into one folder while a reader checks every file."""
    out = tmp_path / "derivatives"
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    jobs = [
        context.Process(target=_participant_job, args=(str(out), str(phantom_bids), w, start))
        for w in range(1, WORKERS + 1)
    ]
    for job in jobs:
        job.start()
    expected = {
        "dataset_description.json": json.dumps(dataset_description(phantom_bids), indent=2) + "\n",
        ".bidsignore": "\n".join(io_spec.BIDSIGNORE) + "\n",
        "README": derivatives.README,
    }
    reads = 0
    start.set()
    while any(job.is_alive() for job in jobs):
        for name, text in expected.items():
            path = out / name
            if path.exists():
                assert path.read_text() == text, name
                reads += 1
        dseg = out / "desc-lesionchange_dseg.tsv"
        if dseg.exists():
            assert dseg.read_text().startswith("index\tname") and dseg.read_text().endswith("\n")
        for table in out.glob("sub-*/anat/*_table.json"):
            assert len(json.loads(table.read_text())["rows"]) == 3000
            reads += 1
    assert [job.exitcode for job in jobs] == [0] * WORKERS
    assert reads > 100, "the reader hardly overlapped the writers"
    for w in range(1, WORKERS + 1):
        table = out / f"sub-{w:02d}" / "anat" / f"sub-{w:02d}_desc-lesions_table.json"
        assert json.loads(table.read_text())["round"] == ROUNDS - 1
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")], "temporary files left"
