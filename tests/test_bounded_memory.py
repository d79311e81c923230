"""Bounded memory in a sweep: one bag cache per process, a cohort released after its last job, a budget
below one bag refused before any job runs."""

from __future__ import annotations

import gc
import weakref

from mlflow.tracking import MlflowClient

from bench.data import DataRoot
from bench.data.features import process_cache
from bench.data.synth import synthesize
from bench.jobs import Job, JobResult, SweepSettings
from bench.profiles import PROFILES
from bench.run import main, sweep
from tests.test_run import argv_for, runs_of, store_uri


class RecordingExecutor:
    """Runs nothing: reads each job's first bag (filling the cache) and notes which cohorts are still held."""

    def __init__(self):
        self.seen = []

    def run(self, jobs, settings, tracker, cohorts, report, progress=None, notice=None):
        refs = {}
        for job in jobs:
            cd = cohorts(job.cohort)
            refs[job.cohort] = weakref.ref(cd)
            case = cd.cohort.case_ids[0]
            cd.store.bag(case, cd.cohort.patients.at[case, "slides"])
            del cd
            gc.collect()
            cache = process_cache(settings.cache_bytes)
            held = {c for c, r in refs.items() if r() is not None}
            self.seen.append((job.cohort, held, {folder.rsplit("_", 1)[-1] for folder, _ in cache._bags}))
            report(JobResult(job, "finished", 0.5))


def test_a_cohort_is_released_after_its_last_job(tmp_path):
    synthesize(tmp_path, cohorts=["blca", "ucec"], scale=0.01, min_test_events=0, log=lambda s: None)
    settings = SweepSettings(data="synthetic", root=DataRoot(tmp_path), protocol="nested", profile=PROFILES["quick"],
                             trials=1, cache_bytes=10**8)
    jobs = [Job("abmil", c, k, 1) for c in ("ucec", "blca") for k in (0, 1)]
    executor = RecordingExecutor()
    sweep(settings, jobs, tracker=None, out=lambda s: None, executor=executor)
    order = [cohort for cohort, _, _ in executor.seen]
    first, second = order[0], order[-1]
    assert order == [first, first, second, second]
    # held (and cached) while its jobs run; once its last job is reported, its data and its bags are gone
    assert executor.seen[1][1:] == ({first}, {first})
    assert executor.seen[2][1:] == ({second}, {second})
    assert len(process_cache(10**8)) == 0  # the last cohort's bags are dropped too


def test_cache_below_one_bag_is_refused_before_any_job(tmp_path_factory, capsys):
    experiment = "cache-too-small"
    code = main(argv_for(tmp_path_factory, experiment, "--models", "abmil", "--folds", "0", "--cache-gb", "1e-6",
                         "--workers", "1"))
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "the bag cache (1e-06 GB per process, from --cache-gb) holds no bag of the largest patient of blca" in err
    assert "--cache-dtype float16" in err and "--cache-gb 0" in err
    assert runs_of(MlflowClient(store_uri(tmp_path_factory)), experiment) == []  # failed before a run was opened


def test_negative_cache_or_token_budget_is_refused(tmp_path_factory, capsys):
    for flag, value in (("--cache-gb", "-1"), ("--max-tokens", "-5")):
        assert main(argv_for(tmp_path_factory, "bad-memory-flags", "--models", "snn", flag, value)) == 2
        assert "neither can be negative" in " ".join(capsys.readouterr().err.split())
