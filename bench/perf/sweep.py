"""`python -m bench.perf sweep`: time a slice of the embedded default here and project the whole default's wall time.

    python -m bench.perf sweep [--models abmil,snn] [--cohorts blca] [--folds 0] [--workers 2]
"""

from __future__ import annotations

import heapq
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bench.errors import BenchError
from models import list_models


@dataclass(frozen=True)
class Projection:
    seconds_per_patient: dict[str, float]  # per model: measured job-seconds / patients of the measured cohorts
    job_seconds: dict[str, float]  # per model: projected job-seconds of its 25 jobs in the full default
    wall_seconds: float  # longest-first schedule of the 125 projected jobs on `workers` processes


def project(measured: dict[str, list[tuple[float, int]]], patients: dict[str, int], workers: int,
            folds: int = 5) -> Projection:
    """Wall time of the full default from a slice: `measured[model]` = [(job-seconds, cohort patients), ...].

    A quick-profile job draws each training patient once per epoch, for every trial and the refit, and
    then scores every patient, so its time is linear in its cohort's patients (the synthetic bags are
    alike in size: 16-96 patches per slide). So each model's seconds per patient, measured on the slice,
    times each cohort's patients gives every job of the default (`patients`: cohort -> patients, `folds`
    jobs each). The sweep hands jobs longest first to the first free worker process; simulating that on
    `workers` processes gives the wall time, which is at least total job-seconds / workers and at least
    the longest job. Not included: process start-up, cohort loading, MLflow logging and the report
    (seconds, not minutes, on the default).
    """
    rate = {m: sum(t for t, _ in runs) / sum(n for _, n in runs) for m, runs in measured.items()}
    jobs = sorted((rate[m] * n for m in rate for n in patients.values() for _ in range(folds)), reverse=True)
    free = [0.0] * workers  # when each worker process is next free
    for t in jobs:
        heapq.heappush(free, heapq.heappop(free) + t)
    per_model = {m: rate[m] * sum(patients.values()) * folds for m in rate}
    return Projection(rate, per_model, max(free))


def time_slice(models: Sequence[str], cohorts: Sequence[str], folds: Sequence[int], root: Path | None,
               out=print) -> dict[str, list[tuple[float, int]]]:
    """Run each (model, cohort, fold) job of the default's settings here (one torch thread, as in the sweep).

    The jobs compute exactly what a sweep's worker computes (`compute_job`: tune, refit, score), with their
    Optuna journals in a temporary folder and nothing logged to MLflow.
    """
    from bench import run as bench_run
    from bench.jobs import Job, compute_job, load_cohort_data

    argv = ["--models", ",".join(models), "--cohorts", ",".join(cohorts), "--device", "cpu"]
    args = bench_run.parse_args(argv + (["--data-root", str(root)] if root else []))  # None: bench.run's default root
    settings, _, _, _ = bench_run.settings_from_args(args)
    measured: dict[str, list[tuple[float, int]]] = {m: [] for m in models}
    width = max(len(m) for m in models) + 2
    with tempfile.TemporaryDirectory(prefix="bench-perf-sweep-") as tmp:
        settings = replace(settings, optuna_dir=Path(tmp))
        for cohort in cohorts:
            cd = load_cohort_data(settings, cohort)
            for fold in folds:
                for model in models:
                    outcome = compute_job(Job(model, cohort, fold, seed=1), settings, cd)
                    if outcome.error:
                        raise BenchError(f"{model} on {cohort} fold {fold} failed, so the slice cannot be timed: "
                                         f"{outcome.error.strip().splitlines()[-1]}")
                    n = len(cd.cohort.patients)
                    measured[model].append((outcome.seconds, n))
                    out(f"  {model:<{width}}{cohort:<8}fold {fold}  {n:4d} patients  {outcome.seconds:7.1f} job-s")
    return measured


def format_projection(p: Projection, patients: dict[str, int], workers: int, folds: int = 5) -> str:
    width = max(len(m) for m in [*p.job_seconds, "model"]) + 2
    lines = [f"{'model':<{width}}{'s/patient':>10}{'full default job-s':>20}{'share':>7}"]
    total = sum(p.job_seconds.values())
    for m, t in sorted(p.job_seconds.items(), key=lambda kv: -kv[1]):
        lines.append(f"{m:<{width}}{p.seconds_per_patient[m]:>10.3f}{t:>20,.0f}{100 * t / total:>6.0f}%")
    n_jobs = len(p.job_seconds) * len(patients) * folds
    lines.append(f"projected full default ({len(p.job_seconds)} models x {len(patients)} cohorts x {folds} folds = {n_jobs} "
                 f"jobs; {sum(patients.values())} patients in the {len(patients)} cohorts): {total:,.0f} job-s, wall "
                 f"{p.wall_seconds / 60:.1f} min on {workers} worker process(es) (longest job first; without start-up, "
                 "MLflow logging and the report)")
    return "\n".join(lines)


def add_parser(sub) -> None:
    p_sweep = sub.add_parser("sweep", help="time a slice of the embedded default and project the whole default's wall time")
    p_sweep.add_argument("--models", default=",".join(list_models()), help="comma-separated model names (default: all)")
    p_sweep.add_argument("--cohorts", default="blca", help="cohorts of the slice (default: blca, the smallest)")
    p_sweep.add_argument("--folds", default="0", help="folds of the slice (default: 0)")
    p_sweep.add_argument("--workers", type=int, default=None,
                         help="worker processes of the projected sweep (default: as bench.run, one per core up to 4)")
    p_sweep.add_argument("--data-root", type=Path, default=None,
                         help="synthetic data root (default: data/synthetic, generated if missing)")
    p_sweep.set_defaults(func=main)


def main(args) -> int:
    from bench.data import COHORTS, parse_cohorts
    from bench.data.synth import DEFAULT_SCALE, MIN_TEST_EVENTS, n_patients

    models = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(models) - set(list_models()))
    if unknown or not models:
        raise BenchError(f"unknown model(s) {', '.join(unknown)}. Registered models: {', '.join(list_models())}.")
    workers = args.workers or min(os.cpu_count() or 1, 4)
    if workers < 1:
        raise BenchError(f"--workers {args.workers}: the projected sweep needs at least 1 worker process.")
    cohorts = parse_cohorts(args.cohorts)
    folds = sorted({int(f) for f in args.folds.split(",") if f.strip().isdigit()})
    if not folds or max(folds) > 4 or len(folds) != len([f for f in args.folds.split(",") if f.strip()]):
        raise BenchError(f"--folds {args.folds!r}: give comma-separated folds out of 0..4, such as 0 or 0,1.")
    print(f"timing {len(models) * len(cohorts) * len(folds)} job(s) of the embedded default (nested, quick profile) on "
          f"{args.data_root or 'data/synthetic'}, 1 torch thread each, "
          f"as one of {workers} workers")
    measured = time_slice(models, cohorts, folds, args.data_root)
    patients = {c: n_patients(c, DEFAULT_SCALE, MIN_TEST_EVENTS) for c in COHORTS}
    print(format_projection(project(measured, patients, workers), patients, workers))
    return 0

