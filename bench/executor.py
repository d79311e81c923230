"""Executors run sweep jobs and hand each result back as it finishes.

`InProcessExecutor` runs jobs one after another in this process. `ProcessPoolExecutor` runs `workers`
jobs at once in worker processes: small models scale better over processes than over intra-op threads.
Either way a job computes on `SweepSettings.threads_per_job` torch threads (`compute_job` sets them), so
the executor and its worker count never change a number. In both,
the driver alone talks to MLflow (opens a fold run as its job starts, logs and closes it after),
and workers only compute, so an interrupted sweep leaves no run marked finished.

A fold run's start is its creation, and the runs table shows end - start as its duration: so the pool opens a
job's run only when a worker is free to take it, once the workers have started, and a run's duration is its
job's own time (compute, its cohort's first load in that worker, logging), never a wait for a worker.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
from collections.abc import Callable

from bench.errors import BenchError
from bench.jobs import (CohortData, Job, JobResult, OpenJob, Outcome, SweepSettings, close_job, compute_job,
                        finished_result, load_cohort_data, open_job)
from bench.tracking import Tracker

Report = Callable[[JobResult], None]
CohortLoader = Callable[[str], CohortData]
Notice = Callable[[Job, str], None]  # a job reruns although it finished under other inputs: why


class InProcessExecutor:
    """One job at a time, in this process; per-epoch progress reaches the caller."""

    def run(self, jobs: list[Job], settings: SweepSettings, tracker: Tracker, cohorts: CohortLoader, report: Report,
            progress: Callable[[Job, str], None] = lambda job, text: None,
            notice: Notice = lambda job, text: None) -> None:
        for job in jobs:
            cd = cohorts(job.cohort)
            opened = open_job(job, settings, tracker, cd)
            if isinstance(opened, JobResult):
                report(opened)
                continue
            if opened.rerun_reason:
                notice(job, opened.rerun_reason)
            report(close_job(opened, compute_job(job, settings, cd, lambda text, job=job: progress(job, text)), tracker))


_WORKER_CACHE: dict[tuple, CohortData] = {}
_STARTED = None  # a barrier shared by the pool's processes: see `_wait_for_every_worker`
WORKER_START_S = 600.0  # a worker process that has not imported the suite by then is stuck


def _init_worker(started) -> None:
    global _STARTED
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    _STARTED = started


def _wait_for_every_worker() -> None:
    """Held by one call per process until all have started: the pool spawns its processes on demand, and a
    worker's start (spawn, imports: 20 s and more on a loaded machine) would otherwise count in its first job's run."""
    _STARTED.wait(WORKER_START_S)


def _compute_in_worker(job: Job, settings: SweepSettings) -> Outcome:
    key = (str(settings.root), settings.data, job.cohort, settings.table_variants.get(job.cohort))
    if key not in _WORKER_CACHE:
        try:
            _WORKER_CACHE[key] = load_cohort_data(settings, job.cohort)
        except Exception as err:  # reported on the job's run like any other failure
            return Outcome(error=f"{type(err).__name__}: {err}")
    return compute_job(job, settings, _WORKER_CACHE[key])


class ProcessPoolExecutor:
    """`workers` jobs at once in spawned processes; results are logged by the driver as they finish."""

    def __init__(self, workers: int):
        self.workers = workers

    def run(self, jobs: list[Job], settings: SweepSettings, tracker: Tracker, cohorts: CohortLoader, report: Report,
            progress: Callable[[Job, str], None] = lambda job, text: None,
            notice: Notice = lambda job, text: None) -> None:
        todo = []
        for job in jobs:  # finished jobs are reported at once, and start no worker
            done = finished_result(job, settings, tracker, cohorts(job.cohort))
            if done is None:
                todo.append(job)
            else:
                report(done)
        if not todo:
            return
        ctx = mp.get_context("spawn")
        workers = min(self.workers, len(todo))
        with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                    initargs=(ctx.Barrier(workers),)) as pool:
            try:
                for started in [pool.submit(_wait_for_every_worker) for _ in range(workers)]:
                    started.result()
            except Exception as err:
                raise BenchError(f"the {workers} worker processes did not start ({type(err).__name__}: {err}); "
                                 "no job ran. Run with --workers 1 to compute in this process.") from err
            queued = iter(todo)
            running: dict[cf.Future, OpenJob] = {}

            def start_next() -> None:
                """Open the next job's run and hand it to the free worker (a job finished meanwhile is skipped)."""
                for job in queued:
                    opened = open_job(job, settings, tracker, cohorts(job.cohort))
                    if isinstance(opened, JobResult):
                        report(opened)
                        continue
                    if opened.rerun_reason:
                        notice(job, opened.rerun_reason)
                    try:
                        running[pool.submit(_compute_in_worker, job, settings)] = opened
                        return
                    except cf.BrokenExecutor as err:  # a worker died and broke the pool: every job left fails
                        report(close_job(opened, Outcome(error=f"worker process failed: {type(err).__name__}: {err}"),
                                         tracker))

            for _ in range(workers):
                start_next()
            while running:
                done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    opened = running.pop(future)
                    start_next()  # the freed worker computes while this job is logged
                    try:
                        outcome = future.result()
                    except Exception as err:  # a worker died (e.g. out of memory): the job fails, the sweep goes on
                        outcome = Outcome(error=f"worker process failed: {type(err).__name__}: {err}")
                    report(close_job(opened, outcome, tracker))


def make_executor(workers: int) -> InProcessExecutor | ProcessPoolExecutor:
    return InProcessExecutor() if workers <= 1 else ProcessPoolExecutor(workers)
