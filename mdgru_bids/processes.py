"""Child processes that end with the run that started them.

A run killed with SIGKILL cannot stop its own children. Nipype's workers and the ANTs
processes they start would go on computing and writing into the work folder, where a resumed
run may already be running the same step (and the idle workers would wait for work forever:
each holds its own queue open, and the forkserver lives as long as they do). So each worker
watches the run and exits when it ends, and each ANTs process asks Linux to kill it when its
worker ends.

:func:`run_isolated` runs one function in such a process: ITK reads its thread count and
ANTs its seed from the environment once per process, so a step that sets them needs its own.
"""

from __future__ import annotations

import ctypes
import importlib
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])  # so the child imports this very code


def die_with_parent(parent_pid: int | None = None) -> None:
    """SIGKILL this process when its parent ends (Linux; elsewhere nothing happens).

    ``parent_pid``, where known, closes the race of a parent that ended before the call.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not allowed here (a sandbox): the process just lives on, as before
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


def exit_with_parent_process() -> None:
    """In a multiprocessing child (any start method): exit at once when the process that
    started it ends. Its OS parent may be a forkserver, which PR_SET_PDEATHSIG would watch."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def run_isolated(
    func: Callable[..., dict[str, Any]], num_threads: int, seed: int | None, **kwargs: Any
) -> dict[str, Any]:
    """Run ``func(**kwargs)`` (a module-level function) in a fresh Python process with ITK's
    threads and ANTs' seed (``seed + 1``: ANTs reads 0 as "from the clock") set, and return
    its result or raise its exception.

    A plain subprocess rather than multiprocessing's spawn, which would re-run the caller's
    main script (a user's script without a ``__main__`` guard would run twice).
    """
    env = os.environ | {
        "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": str(num_threads),
        "MDGRU_BIDS_PARENT_PID": str(os.getpid()),
        "PYTHONPATH": os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")])),
    }
    if seed is not None:
        env["ANTS_RANDOM_SEED"] = str(seed + 1)
    with tempfile.TemporaryDirectory(prefix="mdgru-ants-") as tmp:
        job, result = Path(tmp) / "job.pkl", Path(tmp) / "result.pkl"
        job.write_bytes(pickle.dumps((func.__module__, func.__name__, kwargs)))
        code = f"from {__name__} import _isolated; import sys; _isolated(*sys.argv[1:])"
        done = subprocess.run([sys.executable, "-c", code, str(job), str(result)], env=env)
        if not result.exists():
            raise RuntimeError(f"the worker ({func.__name__}) died, exit code {done.returncode}")
        ok, value = pickle.loads(result.read_bytes())
    if not ok:
        raise value
    return value


def _isolated(job: str, result: str) -> None:
    """The fresh process's side of :func:`run_isolated`; it ends with the process that
    started it, so a killed run leaves no registration writing into its work folder."""
    die_with_parent(int(os.environ["MDGRU_BIDS_PARENT_PID"]))
    module, name, kwargs = pickle.loads(Path(job).read_bytes())
    try:
        outcome = (True, getattr(importlib.import_module(module), name)(**kwargs))
    except Exception as err:
        err.add_note(f"(in the {name} worker)\n{traceback.format_exc()}")
        outcome = (False, err)
    try:
        data = pickle.dumps(outcome)
    except Exception:  # an exception that does not pickle still reports its message
        data = pickle.dumps((False, RuntimeError(f"{type(outcome[1]).__name__}: {outcome[1]}")))
    Path(result).write_bytes(data)
