"""How workflows run: the scheduler starts the longest remaining chain of work first, and
waits for jobs to end rather than polling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as ssp
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from mdgru_bids.workflows.execution import (
    WAIT_SECONDS,
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


def test_the_scheduler_waits_for_a_job_to_end_instead_of_polling(tmp_path: Path) -> None:
    """Nipype's loop would look for ended jobs every poll_sleep_duration (the app's 0.01 s:
    about 150 looks during this 1.5 s job), each costing the main process sparse-matrix work;
    this plugin looks when a job ends, or after WAIT_SECONDS."""
    workflow = pe.Workflow(name="napping", base_dir=str(tmp_path))
    workflow.config["execution"]["poll_sleep_duration"] = 0.01
    nap = pe.Node(niu.Function(function=_nap), name="nap")
    nap.inputs.seconds = 1.5
    workflow.add_nodes([nap])
    plugin = multiproc(plugin_settings(None, 1, None)[1])
    send = plugin._send_procs_to_workers
    looks = []
    plugin._send_procs_to_workers = lambda **kwargs: looks.append(1) or send(**kwargs)
    workflow.run(plugin=plugin)
    assert (tmp_path / "napping" / "nap" / "result_nap.pklz").is_file()
    assert len(looks) <= 1.5 / WAIT_SECONDS + 5, len(looks)
