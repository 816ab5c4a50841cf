"""Child processes that end with the run that started them.

A run killed with SIGKILL cannot stop its own children. Nipype's workers and the ANTs
processes they start would go on computing and writing into the work folder, where a resumed
run may already be running the same step; so each of them asks Linux to kill it when its
parent ends (the forkserver that starts the workers ends with the run).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

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
