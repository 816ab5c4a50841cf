"""Child processes that end with the run that started them.

A run killed with SIGKILL cannot stop its own children. Nipype's workers and the ANTs
processes they start would go on computing and writing into the work folder, where a resumed
run may already be running the same step (and the idle workers would wait for work forever:
each holds its own queue open, and the forkserver lives as long as they do). So each worker
watches the run and exits when it ends, and each ANTs process asks Linux to kill it when its
worker ends.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


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
