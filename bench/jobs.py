"""One sweep job = (model, cohort, fold, seed): tune (nested) or not (paper), refit, score, log.

The job function is idempotent: a job whose FINISHED fold run exists is skipped; a run left
unfinished by a dead or failed attempt is resumed (same run id); the Optuna study resumes from its
journal. The job key covers every input that defines the result (settings, split, features, data
root, precision, device type, suite version), so a changed input reruns the job.

This module holds what a job is, its key and its run's lifecycle (open, compute, close); what the
protocols compute, and which patients each may see, is `bench.protocols`.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import torch

from bench.data import Cohort, DataRoot, FeatureStore, open_cohort
from bench.data.features import process_cache
from bench.data.semisynth import ensure_features
from bench.errors import BenchError
from bench.profiles import Profile
from bench.protocols import PROTOCOL_FACTS, fit_and_score
from bench.provenance import features_fingerprint, git_commit, suite_version
from bench.data.folds import load_folds
from bench.splits import Split
from bench.tracking import JOB_KEY, PREDICTIONS_ARTIFACT, SETTING_TAGS, VERSION_PACKAGES, Tracker
from bench.train import TrainingError


@dataclass(frozen=True)
class Job:
    model: str
    cohort: str
    fold: int
    seed: int


@dataclass
class SweepSettings:
    """Everything that defines a sweep's results (the setting tags), plus speed settings (cache, workers)."""

    data: str
    root: DataRoot
    protocol: str
    profile: Profile
    trials: int
    table_variants: dict[str, str | None] = field(default_factory=dict)  # per cohort; None = tables/
    allow_unverified_splits: bool = False
    on_missing: str = "error"
    device: str = "cpu"
    precision: str = "fp32"
    micro_batch: int = 8  # patients per forward pass: it regroups bags, so dropout draws differ (tag micro_batch)
    max_tokens: int | None = None  # padded patches per micro-batch (memory; regroups bags too: tag max_tokens)
    cache_bytes: int = 0  # this process's bag cache (bench.data.features.process_cache); 0 = none
    cache_dtype: str = "float32"  # float16 rounds every bag (a result setting: tag feature_precision)
    semisynth_dim: int = 1024  # width of the simulated features under --data semisynthetic
    threads_per_job: int = 1  # torch CPU threads a job computes with: on the CPU they split sums (tag cpu_threads)
    save_models: bool = True  # each fold run keeps its model (bench.checkpoint); not a result setting
    # False when no model of the sweep reads slides: no feature folder is opened (a root of tables and splits)
    reads_slides: bool = True
    optuna_dir: Path = Path("mlruns/optuna")
    optuna_storage: str | None = None  # a database URL shared by a cluster; None = a journal per job in optuna_dir
    # the driver's code version: workers and Ray tasks (retries too) record it, not what their own checkout shows
    suite_version: str = field(default_factory=suite_version)


@dataclass
class JobResult:
    job: Job
    status: str  # "finished" | "skipped" | "failed"
    c_index: float = float("nan")
    seconds: float = 0.0
    reason: str = ""
    rerun_reason: str = ""  # why a job with a finished run under other inputs ran again


@dataclass
class CohortData:
    """A cohort loaded once per sweep: table, verified folds, feature store with its bag cache."""

    cohort: Cohort
    folds: dict[int, Split]
    store: FeatureStore | None  # None: the sweep reads no slides
    dropped: list[str] = field(default_factory=list)
    features: dict = field(default_factory=dict)  # `features_fingerprint` of the slides the sweep reads


def load_cohort_data(settings: SweepSettings, name: str) -> CohortData:
    cohort = open_cohort(settings.root, name, settings.table_variants.get(name))
    folds = load_folds(settings.root, name, cohort.case_ids, allow_unverified=settings.allow_unverified_splits)
    if not settings.reads_slides:
        return CohortData(cohort, folds, None, [], NO_FEATURES)
    cache = process_cache(settings.cache_bytes)
    if settings.data == "semisynthetic":
        store = FeatureStore(ensure_features(settings.root, cohort, dim=settings.semisynth_dim), cache=cache,
                             dtype=settings.cache_dtype)
    else:
        store = FeatureStore(settings.root.features(name), cache=cache, dtype=settings.cache_dtype)
    missing = [c for c, slides in cohort.patients["slides"].items() if store.missing_slides(slides)]
    if missing and settings.on_missing == "error":
        raise BenchError(f"{len(missing)} patient(s) of {name} have slides without feature files under "
                         f"{settings.root.features(name)} (first: {', '.join(missing[:5])}). Run `python -m bench.data check` "
                         "to list them, extract their features, or pass --on-missing skip to drop them (recorded on every run).")
    if missing:
        keep = [c for c in cohort.case_ids if c not in set(missing)]
        cohort.patients = cohort.patients.loc[keep]
        cohort.omics = cohort.omics.loc[keep]
        if cohort.truth is not None:
            cohort.truth = cohort.truth.loc[keep]
        folds = {k: Split(tuple(c for c in s.train if c in set(keep)), tuple(c for c in s.val if c in set(keep)), s.path, s.sha256)
                 for k, s in folds.items()}
    sizes = store.index(cohort.patients["slides"])  # every file's width and dtype, before any job starts
    if cache is not None and sizes:
        case = max(sizes, key=sizes.get)
        if store.bag_bytes(case) > cache.max_bytes:
            raise BenchError(f"the bag cache ({cache.max_bytes / 1e9:.3g} GB per process, from --cache-gb) holds no bag of "
                             f"the largest patient of {name}: {case} has {sizes[case]} patches x {store.dim} features = "
                             f"{store.bag_bytes(case) / 1e9:.3g} GB in {store.dtype}. Give --cache-gb at least that much per "
                             "worker process, --cache-dtype float16 to halve every bag, or --cache-gb 0 to read bags from "
                             "disk every epoch.")
    slides = [s for patient in cohort.patients["slides"] for s in patient]
    return CohortData(cohort, folds, store, missing, features_fingerprint(store, slides))


# The features fingerprint of a sweep that reads no slides: every patient of the table and splits is kept.
NO_FEATURES = {"features_dir": "none", "features_width": "none", "features_files": "0", "features_hash": "none"}


def setting_tags(job: Job, settings: SweepSettings, cd: CohortData) -> dict[str, str]:
    """The `SETTING_TAGS` of a job's runs: every input besides (model, cohort, fold, seed) its result depends on.

    The features fingerprint counts for every model, WSI or not: the feature files decide which patients a
    sweep keeps (--on-missing skip). Device is its type (cpu, cuda, mps), never its index. The micro-batch and
    the token budget (0: none) regroup bags into forward passes, so each pass draws other dropout masks: with
    dropout they move the numbers (ABMIL's risks by up to 0.009 at dropout 0.25).
    """
    p = settings.profile
    tags = {"protocol": settings.protocol, "data": settings.data, "profile": p.name, "epochs": str(p.epochs),
            "grad_accum": str(p.grad_accum), "inner_val_fraction": str(p.inner_val_fraction),
            "trials": str(settings.trials), "table_variant": settings.table_variants.get(job.cohort) or "default",
            "data_root": str(settings.root.root.resolve()), **cd.features, "precision": settings.precision,
            "device": settings.device.split(":")[0], "suite_version": settings.suite_version,
            "feature_precision": settings.cache_dtype, "cpu_threads": str(settings.threads_per_job),
            "micro_batch": str(settings.micro_batch), "max_tokens": str(settings.max_tokens or 0)}
    return tags


def job_key(job: Job, settings: SweepSettings, cd: CohortData) -> str:
    """Hash of the job, its split file and its settings: the same key means the same result."""
    spec = {"job": job.__dict__, "split": cd.folds[job.fold].sha256, **setting_tags(job, settings, cd)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


@dataclass
class OpenJob:
    """A job the driver has opened: its fold run exists (RUNNING) until `close_job`."""

    job: Job
    run_id: str
    parent_id: str
    rerun_reason: str = ""


def parent_tags(job: Job, settings: SweepSettings, cd: CohortData) -> dict:
    """Tags of the (model, cohort, seed) parent run a job's fold runs hang under: one per set of settings.

    Not the device type: under Ray it is known only inside the task, and a fold rerun on another device
    replaces its earlier run in the parent's mean.
    """
    tags = setting_tags(job, settings, cd)
    del tags["device"]
    return {"model": job.model, "cohort": job.cohort, "seed": str(job.seed), **tags,
            **PROTOCOL_FACTS[settings.protocol]}


def finished_result(job: Job, settings: SweepSettings, tracker: Tracker, cd: CohortData) -> JobResult | None:
    """The `JobResult` of a job whose FINISHED fold run exists under its key (skip it), else None."""
    done = tracker.finished_fold(job_key(job, settings, cd))
    return None if done is None else JobResult(job, "skipped", done.data.metrics.get("c_index", float("nan")))


def open_job(job: Job, settings: SweepSettings, tracker: Tracker, cd: CohortData,
             extra_tags: dict | None = None) -> OpenJob | JobResult:
    """A finished job gives its `JobResult` (skip); else its unfinished run resumes or a fold run starts.

    Call it as the job starts computing: the fold run's start time is its creation, so a run opened while its
    job waits for a worker would show the wait as the job's duration in the runs table.
    """
    if (done := finished_result(job, settings, tracker, cd)) is not None:
        return done
    split = cd.folds[job.fold]
    key = job_key(job, settings, cd)
    parent = tracker.parent(parent_tags(job, settings, cd))
    identity = {"model": job.model, "cohort": job.cohort, "fold": str(job.fold), "seed": str(job.seed)}
    fold_tags = {**identity, **setting_tags(job, settings, cd), **PROTOCOL_FACTS[settings.protocol],
                 "split_sha256": split.sha256, "git_commit": git_commit(), JOB_KEY: key,
                 "torch_version": torch.__version__, "dropped_patients": str(len(cd.dropped)),
                 "feature_dim": "none" if cd.store is None else str(cd.store.dim),
                 **{f"version.{p}": version(p) for p in VERSION_PACKAGES},
                 **(extra_tags or {})}
    run_id = tracker.resume(key, fold_tags)
    if run_id is not None:
        return OpenJob(job, run_id, parent)
    run_id = tracker.start_fold(parent, fold_tags, f"{job.model}/{job.cohort}/fold{job.fold}/seed{job.seed}")
    return OpenJob(job, run_id, parent, rerun_reason(tracker.latest_finished(identity), fold_tags))


def rerun_reason(earlier, tags: dict) -> str:
    """Why a job that finished before under other inputs runs again: the settings that differ, old -> new."""
    if earlier is None:
        return ""
    old = earlier.data.tags
    changed = [f"{t} {old.get(t, '(not recorded)')} -> {tags[t]}" for t in (*SETTING_TAGS, "split_sha256")
               if old.get(t) != tags[t]]
    return "; ".join(changed) or "the job key (same recorded settings: a tag this suite version does not record)"


@dataclass
class Outcome:
    """What a job computed (or why it failed); plain data, so it crosses process boundaries."""

    params: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)
    curves: dict = field(default_factory=dict)  # per-epoch series by metric name (train_loss, loss_nll, loss_aux)
    files: dict = field(default_factory=dict)  # artifact path -> bytes: the saved fold model
    error: str = ""
    seconds: float = 0.0  # compute time of the job itself, without queueing


def compute_job(job: Job, settings: SweepSettings, cd: CohortData, progress=lambda s: None) -> Outcome:
    """Worker side: tune (nested) or not (paper), refit, score. Never raises for a job-level failure.

    Runs on `settings.threads_per_job` torch threads whichever executor calls it: the thread count decides
    how a CPU kernel splits its sums, so it changed a G-HANet C-index between `--workers 1` (two threads)
    and `--workers 2` (one each). Fixed here, the number of worker processes is a speed setting only.
    """
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads_per_job)
    try:
        params, metrics, tables, curves, files = fit_and_score(job, settings, cd, cd.folds[job.fold],
                                                               job_key(job, settings, cd), progress)
        tables[PREDICTIONS_ARTIFACT] = tables.pop("predictions")
        return Outcome(params, metrics, tables, curves, files=files, seconds=time.perf_counter() - t0)
    except (TrainingError, BenchError) as err:
        return Outcome(error=str(err), seconds=time.perf_counter() - t0)
    except Exception:  # a bug in one job must not lose the sweep; the reason is on the run
        return Outcome(error=traceback.format_exc(), seconds=time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)


def close_job(opened: OpenJob, outcome: Outcome, tracker: Tracker) -> JobResult:
    """Driver side: log the outcome and mark the fold run FINISHED, or FAILED with the reason."""
    seconds = outcome.seconds
    if outcome.error:
        tracker.end(opened.run_id, "FAILED", outcome.error)
        return JobResult(opened.job, "failed", seconds=seconds, reason=outcome.error, rerun_reason=opened.rerun_reason)
    tracker.log_fold(opened.run_id, outcome.params, outcome.metrics, outcome.tables)
    tracker.log_files(opened.run_id, outcome.files)
    for key, values in outcome.curves.items():
        tracker.log_curve(opened.run_id, key, values)
    tracker.log_metric(opened.run_id, "job_seconds", seconds)
    tracker.end(opened.run_id, "FINISHED")
    tracker.update_parent(opened.parent_id)
    return JobResult(opened.job, "finished", outcome.metrics.get("c_index", float("nan")), seconds,
                     rerun_reason=opened.rerun_reason)


def run_job(job: Job, settings: SweepSettings, tracker: Tracker, cd: CohortData, progress=lambda s: None,
            extra_tags: dict | None = None) -> JobResult:
    """In one process: skip if finished; else compute, log, and close the fold run (the Ray executor's task body)."""
    opened = open_job(job, settings, tracker, cd, extra_tags)
    if isinstance(opened, JobResult):
        return opened
    return close_job(opened, compute_job(job, settings, cd, progress), tracker)
