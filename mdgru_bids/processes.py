"""Child processes that end with the run that started them.

A run killed with SIGKILL cannot stop its own children. Nipype's workers and the ANTs
processes they start would go on computing and writing into the work folder, where a resumed
run may already be running the same step (and the idle workers would wait for work forever:
each holds its own queue open, and the forkserver lives as long as they do). So Linux kills
each worker when the run ends (:func:`exit_with_parent_process`), also in the middle of an
ANTs call, which holds Python's lock for tens of seconds; and each ANTs process of its own
asks Linux to kill it when its worker ends.

:func:`run_ants` runs an ANTs step with its own ITK thread count and ANTs seed. ITK reads
its thread count from the environment once per process, at its first use, so a step runs in
the calling process only where that count was fixed before ITK loaded (:func:`fix_itk_threads`,
the app's Nipype workers) and equals the step's; elsewhere it runs in a fresh process of its
own (:func:`run_isolated`), which costs about 3.5 s, mostly importing ANTsPy.
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
#: ITK's thread count in this process where :func:`fix_itk_threads` fixed it; None elsewhere
_itk_threads: int | None = None


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
    started it ends.

    Linux kills the child when its OS parent ends (PR_SET_PDEATHSIG): with spawn or fork that
    is the run itself; with forkserver it is the server, which ends when the last process
    holding the write end of its "alive" pipe does. Every child of the server inherits one,
    so this child closes its own (it starts no processes from the server), and the server
    then ends with the run. A thread that watches the run covers a run that ended before
    this call.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    from multiprocessing import forkserver

    server = forkserver._forkserver
    if server._forkserver_alive_fd is not None:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None
    die_with_parent()

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def start_one_thread_child() -> None:
    """Initializer of the app's pool processes (Nipype workers, report drawers): ITK takes the
    one core the process was given, and the process ends with the run."""
    fix_itk_threads(1)
    exit_with_parent_process()


def fix_itk_threads(count: int) -> None:
    """Give ITK ``count`` threads in this process, and let :func:`run_ants` run steps of that
    many threads here. It holds only if ITK has not loaded yet (ANTsPy brings it in), as in
    a fresh worker; otherwise ITK keeps the count it read and steps go on running apart."""
    global _itk_threads
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(count)
    if "ants" not in sys.modules:
        _itk_threads = count


def run_ants(
    func: Callable[..., dict[str, Any]], num_threads: int, seed: int | None, **kwargs: Any
) -> dict[str, Any]:
    """``func(**kwargs)`` with ITK's ``num_threads`` and ANTs' ``seed``: here if this process's
    ITK has that thread count (the same results: the seed reaches antsRegistration as
    ``--random-seed`` instead of ANTS_RANDOM_SEED), else in a fresh process."""
    if num_threads != _itk_threads:
        return run_isolated(func, num_threads, seed, **kwargs)
    import ants

    # what ANTsPy passes as --random-seed (set_ants_deterministic sets it too, but also the
    # environment and numpy's global seed)
    before = ants.config._random_seed
    ants.config._random_seed = None if seed is None else seed + 1
    try:
        return func(**kwargs)
    finally:
        ants.config._random_seed = before


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
