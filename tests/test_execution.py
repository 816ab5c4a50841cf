"""How workflows run: the scheduler starts the longest remaining chain of work first, waits
for jobs to end rather than polling, and fails (not hangs) when a worker dies; a killed run
leaves no worker behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import scipy.sparse as ssp
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mdgru_bids.workflows import execution
from mdgru_bids.workflows.execution import (
    chain_seconds,
    expect_seconds,
    multiproc,
    plugin_settings,
)


def _double(x: int) -> int:
    return 2 * x


def test_chain_seconds_follow_the_longest_path() -> None:
    # 0 -> 1 -> 3, 0 -> 2: job 0 heads the chain 0, 1, 3
    depends = ssp.lil_matrix(np.array([[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]]))
    assert chain_seconds([1.0, 2.0, 5.0, 10.0], depends) == [13.0, 12.0, 5.0, 10.0]


def test_one_core_starts_the_job_that_a_long_chain_waits_for(tmp_path: Path) -> None:
    workflow = pe.Workflow(name="toy", base_dir=str(tmp_path))
    source = pe.Node(niu.Function(function=_double), name="source")
    source.inputs.x = 1
    # added first, so Nipype's topological order would start these quick ones first
    quick = [pe.Node(niu.Function(function=_double), name=f"quick_{k}") for k in range(3)]
    gate = pe.Node(niu.Function(function=_double), name="gate")
    long = expect_seconds(pe.Node(niu.Function(function=_double), name="long"), 100)
    workflow.connect([(source, node, [("out", "x")]) for node in (*quick, gate)])
    workflow.connect(gate, "out", long, "x")
    started: list[str] = []
    args = plugin_settings(None, 1, None)[1] | {
        "status_callback": lambda node, status: status == "start" and started.append(node.name)
    }
    workflow.run(plugin=multiproc(args))
    assert started[:3] == ["source", "gate", "long"], started
    assert sorted(started[3:]) == ["quick_0", "quick_1", "quick_2"]


def _nap(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


def test_the_scheduler_waits_for_a_job_to_end_instead_of_polling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nipype's loop would look for ended jobs every poll_sleep_duration (the app's 0.01 s:
    250 looks during this 1.5 s job), each costing the main process sparse-matrix work; this
    plugin is woken when the job ends (with WAIT_SECONDS at 30 s a wake-up that never came
    would show as a 30 s run)."""
    monkeypatch.setattr(execution, "WAIT_SECONDS", 30.0)
    workflow = pe.Workflow(name="napping", base_dir=str(tmp_path))
    workflow.config["execution"]["poll_sleep_duration"] = 0.01
    nap = pe.Node(niu.Function(function=_nap), name="nap")
    nap.inputs.seconds = 1.5
    workflow.add_nodes([nap])
    plugin = multiproc(plugin_settings(None, 1, None)[1])
    send = plugin._send_procs_to_workers
    looks = []
    plugin._send_procs_to_workers = lambda **kwargs: looks.append(1) or send(**kwargs)
    began = time.monotonic()
    workflow.run(plugin=plugin)
    assert time.monotonic() - began < 25
    assert (tmp_path / "napping" / "nap" / "result_nap.pklz").is_file()
    assert len(looks) <= 4, len(looks)


#: A one-step run; the step writes its worker's PID, then dies ("die") or computes for about a
#: minute in one C call that never releases Python's lock ("compute"), as ANTs calls do.
RUN = """
import sys
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from mdgru_bids.workflows.execution import multiproc, plugin_settings

STEP = '''
def step(folder):
    import os, signal
    from pathlib import Path
    Path(folder, "worker.pid").write_text(str(os.getpid()))
    if "{what}" == "die":
        os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would
    return pow(3, 10**8) > 0
'''
workflow = pe.Workflow(name="w", base_dir=sys.argv[1])
node = pe.Node(niu.Function(function=STEP, input_names=["folder"]), name="step")
node.inputs.folder = sys.argv[1]
workflow.add_nodes([node])
workflow.run(plugin=multiproc(plugin_settings(None, 1, None)[1]))
"""


def test_a_worker_that_dies_fails_the_run_instead_of_hanging_it(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", RUN.format(what="die"), str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (tmp_path / "worker.pid").is_file()
    assert done.returncode != 0
    assert "BrokenProcessPool" in done.stderr or "terminated abruptly" in done.stderr


def test_a_killed_run_ends_its_workers_even_inside_a_long_native_call(tmp_path: Path) -> None:
    """SIGKILL the run while its worker is in a C call that holds Python's lock (as ANTs
    registrations do): Linux ends the worker at once, where a watching thread never could."""
    run = subprocess.Popen([sys.executable, "-c", RUN.format(what="compute"), str(tmp_path)])
    pid_file = tmp_path / "worker.pid"
    deadline = time.monotonic() + 120
    while not pid_file.is_file() or not pid_file.read_text():
        assert run.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    worker = psutil.Process(int(pid_file.read_text()))
    time.sleep(1.0)  # well inside the call
    assert worker.is_running()
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    _, alive = psutil.wait_procs([worker], timeout=5)
    assert alive == [], "the worker outlived the run"
