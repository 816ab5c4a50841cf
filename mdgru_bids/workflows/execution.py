"""How our Nipype workflows run: the plugin and its resources, and workers that end with
the run (:mod:`mdgru_bids.processes`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from mdgru_bids.errors import UsageError

if TYPE_CHECKING:
    from nipype.pipeline import engine as pe


def plugin_settings(
    plugin_file: Path | None, nprocs: int | None, mem_mb: int | None
) -> tuple[str, dict]:
    """MultiProc with the requested resources, or whatever a --nipype-plugin-file says."""
    if plugin_file is not None:
        import yaml

        try:
            spec = yaml.safe_load(plugin_file.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise UsageError(f"--nipype-plugin-file {plugin_file}: {err}") from None
        if not isinstance(spec, dict) or "plugin" not in spec:
            raise UsageError(
                f"--nipype-plugin-file {plugin_file} needs a 'plugin' key "
                "(and optionally 'plugin_args')"
            )
        return str(spec["plugin"]), dict(spec.get("plugin_args") or {})
    # forkserver: workers start from a clean process, not as forks of this one, whose thread
    # pools (torch, ITK, queue feeders) would leave a forked child deadlocked
    plugin_args: dict = {
        "n_procs": nprocs or os.cpu_count() or 1,
        "raise_insufficient": False,
        "mp_context": "forkserver",
    }
    if mem_mb:
        plugin_args["memory_gb"] = mem_mb / 1024
    return "MultiProc", plugin_args


def default_omp_nthreads(nprocs: int) -> int:
    """Threads per multi-threaded step (N4, the network): one core fewer than the run has, as
    fMRIPrep does, so a single-threaded registration always runs beside them (on 2 cores a
    2-thread step would hold the whole machine while the template registration waits); at
    most 8, beyond which these steps hardly speed up."""
    return max(1, min(8, nprocs - 1))


#: What a node costs when it says nothing (``expect_seconds``): Nipype's own bookkeeping.
DEFAULT_NODE_SECONDS = 1.0
#: The longest the scheduler waits for news before it looks again: every way a job ends
#: says so at once, so this only bounds what an unforeseen one would cost.
WAIT_SECONDS = 0.5


def expect_seconds(node: pe.Node, seconds: float) -> pe.Node:
    """Say how long ``node`` typically runs on one core, for the scheduler of :func:`multiproc`
    (which starts first the ready job with the longest chain of work still behind it); only
    the order of these figures matters."""
    node.expected_seconds = seconds
    return node


def multiproc(plugin_args: dict):
    """Nipype's MultiProc plugin, scheduling the longest remaining chain first, with workers
    that end with this process (they would otherwise finish their step after a SIGKILL and
    write into the work folder that a resumed run is using: :mod:`mdgru_bids.processes`).

    Nipype starts ready jobs in topological order, so on two cores two N4 runs could hold both
    while the registration that everything after it waits for sat in the queue.

    The main process stays nearly idle, leaving the cores to the jobs. Nipype's loop looks for
    ended jobs every poll_sleep_duration, each look costing about 5 ms of sparse-matrix work:
    at 0.01 s that took 20 s of a two-session run's 110 s. Here it waits for a job to end
    instead, or for a step done in this process (a cached node, a map node's expansion) that
    may have made others ready. Nipype also collects garbage at each submission, 0.18 s a time
    with the run's objects in memory (15 s per run); those that exist when the run starts are
    frozen, out of the collector's sight. A worker that dies (killed for memory) fails its
    jobs, where Nipype would wait for their results forever.
    """
    import gc
    import multiprocessing
    import threading
    from concurrent.futures import ProcessPoolExecutor

    from nipype.pipeline.plugins.multiproc import MultiProcPlugin

    class CriticalPathMultiProc(MultiProcPlugin):
        def run(self, graph, config, updatehash=False):
            self.job_ended = threading.Event()
            freeze = gc.get_freeze_count() == 0  # not a caller's frozen objects, on the way out
            if freeze:
                gc.freeze()
            try:
                return super().run(graph, config, updatehash=updatehash)
            finally:
                if freeze:
                    gc.unfreeze()

        def _async_callback(self, args):
            try:
                super()._async_callback(args)  # stores the result before the loop is woken
            finally:
                self.job_ended.set()  # also when there is no result (a worker died)

        def _get_result(self, taskid):
            future = self._task_obj[taskid]
            if future.done() and future.exception() is not None:
                raise future.exception()  # Nipype's loop fails the job with it
            return super()._get_result(taskid)

        def _task_finished_cb(self, jobid, cached=False):
            super()._task_finished_cb(jobid, cached=cached)
            self.job_ended.set()

        def _submit_mapnode(self, jobid):
            submitted = super()._submit_mapnode(jobid)
            self.job_ended.set()
            return submitted

        def _send_procs_to_workers(self, updatehash=False, graph=None):
            super()._send_procs_to_workers(updatehash=updatehash, graph=graph)
            if self._task_obj and self.job_ended.wait(WAIT_SECONDS):
                self.job_ended.clear()

        def _generate_dependency_list(self, graph) -> None:
            super()._generate_dependency_list(graph)
            self.chain_seconds = chain_seconds(
                [getattr(node, "expected_seconds", DEFAULT_NODE_SECONDS) for node in self.procs],
                self.refidx,
            )

        def _sort_jobs(self, jobids, scheduler="tsort"):
            if scheduler == "mem_thread":  # asked for by name (a --nipype-plugin-file)
                return super()._sort_jobs(jobids, scheduler)

            def chain(jobid: int) -> float:  # a map node's parts inherit the map node's
                return self.chain_seconds[self.mapnodesubids.get(jobid, jobid)]

            return sorted(jobids, key=chain, reverse=True)

    plugin = CriticalPathMultiProc(plugin_args=plugin_args)
    plugin.pool.shutdown()  # it has started no worker yet: they start at the first job
    plugin.pool = ProcessPoolExecutor(
        max_workers=plugin.processors,
        initializer=_start_worker,
        initargs=(plugin._cwd,),
        mp_context=multiprocessing.get_context(plugin_args.get("mp_context")),
    )
    return plugin


def chain_seconds(seconds: list[float], depends) -> list[float]:
    """For each job, its own seconds plus the longest chain of jobs that wait for it;
    ``depends[i, j]`` is nonzero where job j waits for job i, and jobs are in topological
    order (as Nipype numbers them), so every job comes before those that wait for it."""
    children = depends.tolil().rows
    total = [0.0] * len(seconds)
    for i in reversed(range(len(seconds))):
        total[i] = seconds[i] + max((total[j] for j in children[i]), default=0.0)
    return total


def _start_worker(cwd: str) -> None:
    from nipype.pipeline.plugins.multiproc import process_initializer

    from mdgru_bids.processes import start_one_thread_child

    # ITK in the worker takes the one core the job was given: resampling, and N4 and
    # registrations of one thread (others run in processes with their own thread counts)
    start_one_thread_child()
    process_initializer(cwd)
