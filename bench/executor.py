"""Executors run sweep jobs and hand each result back as it finishes.

`InProcessExecutor` runs jobs one after another in this process. `ProcessPoolExecutor` runs `workers`
jobs at once in worker processes: small models scale better over processes than over intra-op threads.
Either way a job computes on `SweepSettings.threads_per_job` torch threads (`compute_job` sets them), so
the executor and its worker count never change a number. In both,
the driver alone talks to MLflow (opens a fold run before a job starts, logs and closes it after),
and workers only compute, so an interrupted sweep leaves no run marked finished.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
from collections.abc import Callable

from bench.jobs import CohortData, Job, JobResult, OpenJob, Outcome, SweepSettings, close_job, compute_job, load_cohort_data, open_job
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


def _init_worker() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


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
        ctx = mp.get_context("spawn")
        with cf.ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker) as pool:
            running: dict[cf.Future, OpenJob] = {}
            for job in jobs:
                opened = open_job(job, settings, tracker, cohorts(job.cohort))
                if isinstance(opened, JobResult):
                    report(opened)
                    continue
                if opened.rerun_reason:
                    notice(job, opened.rerun_reason)
                running[pool.submit(_compute_in_worker, job, settings)] = opened
            for future in cf.as_completed(running):
                opened = running[future]
                try:
                    outcome = future.result()
                except Exception as err:  # a worker died (e.g. out of memory): the job fails, the sweep goes on
                    outcome = Outcome(error=f"worker process failed: {type(err).__name__}: {err}")
                report(close_job(opened, outcome, tracker))


def make_executor(workers: int) -> InProcessExecutor | ProcessPoolExecutor:
    return InProcessExecutor() if workers <= 1 else ProcessPoolExecutor(workers)
