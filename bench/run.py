"""`python -m bench.run`: sweep models x cohorts x folds (x seeds), tracked in MLflow, resumable.

    python -m bench.run --models ghanet,mcat|default|extended|all [--cohorts blca,luad] [--folds 0,1] [--protocol nested|paper]
                        [--trials N] [--data synthetic|tcga] [--data-root DIR] [--tracking-uri URI]
                        [--experiment NAME] [--seed S] [--profile quick|paper] [--list-models]
                        [--executor local|ray [--ray-address auto|HOST:PORT] [--gpus-per-job F] ...]

Exit status 0 only when every requested job finished now or had finished before (resume).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench.data import COHORTS, DataRoot, parse_cohorts
from bench.data.features import CACHE_DTYPES, DEFAULT_CACHE_SHARE, default_cache_bytes
from bench.data.layout import TABLE_VARIANTS
from bench.errors import BenchError, cli_main
from bench.executor import make_executor
from bench.jobs import Job, JobResult, SweepSettings, load_cohort_data
from bench.profiles import PROFILES, Profile
from bench.tracking import (TRACKING_URI_HELP, Tracker, browse_text, default_experiment, default_tracking_uri,
                            store_dir)
from models import DEFAULT_MODELS, get_model_class, list_models, reads_slides, select_models
from models.registry import MODEL_SELECTIONS, TABULAR_MODELS

DEFAULT_SYNTHETIC_ROOT = Path("data/synthetic")
DEFAULT_MAX_TOKENS = 65536  # 256 MiB of float32 input at width 1024; never binds on the synthetic default's bags


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="default",
                   help="comma-separated registered names, or a selection: default (the mission's five: "
                        f"{', '.join(DEFAULT_MODELS)}), extended (every other registered model), tabular (the "
                        f"slide-free floor: {', '.join(TABULAR_MODELS)}; needs no feature files) or all")
    p.add_argument("--cohorts", default=",".join(COHORTS))
    p.add_argument("--folds", default="0,1,2,3,4")
    p.add_argument("--protocol", choices=["nested", "paper"], default="nested")
    p.add_argument("--trials", type=int, default=None, help="Optuna trials per job (nested; default from the profile)")
    p.add_argument("--data", choices=["synthetic", "tcga", "semisynthetic"], default="synthetic",
                   help="semisynthetic: real tables/labels/splits from --data-root with simulated slide features")
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--features-dir", type=Path, default=None, help="MCAT-style feature folder (tcga_<c>_20x_features/)")
    p.add_argument("--table-variant", default=None,
                   help="real tables: sig or mutsig for all cohorts, or per cohort (blca=sig,brca=mutsig); "
                        "default: sig where fetched, else mutsig")
    p.add_argument("--tracking-uri", default=default_tracking_uri(), help=TRACKING_URI_HELP)
    p.add_argument("--experiment", default=None, help="default: <data>-<protocol>")
    p.add_argument("--seed", default="1", help="seed, or comma-separated seeds (one job per seed)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    p.add_argument("--epochs", type=int, default=None, help="override the profile's epochs (recorded in the run)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16 autocast (not under --protocol paper)")
    p.add_argument("--micro-batch", type=int, default=8,
                   help="patients per padded forward pass; it regroups bags, so dropout draws differ and the numbers "
                        "move (recorded, tag micro_batch: another value reruns a finished job)")
    mem = p.add_argument_group("memory", "what bounds a sweep's memory at real scale")
    mem.add_argument("--cache-gb", type=float, default=None,
                     help="bag cache budget in GB (1e9 bytes): it keeps what fits, a kept bag stays until its cohort is released; one cache per process "
                          "for all its cohorts, split over --workers (under --executor ray, each task process holds "
                          f"this much). Default: {DEFAULT_CACHE_SHARE * 100:.0f}%% of MemAvailable at start; 0: no cache, "
                          "bags are read from disk every epoch")
    mem.add_argument("--cache-dtype", choices=CACHE_DTYPES, default="float32",
                     help="float16 holds bags in half precision, halving the cache; it rounds every feature to float16 "
                          "(cached or not; the model still gets float32), so results differ slightly from float32 runs, "
                          "which the runs record (tag feature_precision)")
    mem.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                     help="padded patches per micro-batch in training and scoring (patients x longest bag): bounds "
                          f"activation memory; a longer bag travels alone (default {DEFAULT_MAX_TOKENS}; 0: no limit). "
                          "Without dropout the maths is unchanged; with it, regrouped bags draw other dropout masks, so "
                          "it is recorded (tag max_tokens) and another value reruns a finished job")
    p.add_argument("--dim", type=int, default=None,
                   help="--data semisynthetic: width of the simulated features (default 1024); other data take the "
                        "width from the feature files")
    p.add_argument("--workers", type=int, default=None,
                   help="jobs at once in worker processes (default: one per --threads-per-job CPU cores, up to 4; 1 on "
                        "a GPU); speed only, it never changes a number")
    p.add_argument("--threads-per-job", type=int, default=None,
                   help="torch CPU threads each job computes with (default 1; under --executor ray, --cpus-per-job). "
                        "The thread count decides how a CPU kernel splits its sums, so it can change a result in its "
                        "last digits and, through a top-k or an argmax, a C-index: runs record it (tag cpu_threads) and "
                        "a finished job reruns under another count")
    ray = p.add_argument_group("scale-out", "run each job as a Ray task (pip install -e '.[ray]')")
    ray.add_argument("--executor", choices=["local", "ray"], default="local")
    ray.add_argument("--ray-address", default=None,
                     help="none: a private Ray on this machine with all its GPUs; auto or HOST:PORT: join a cluster "
                          "(Ray also reads RAY_ADDRESS)")
    ray.add_argument("--gpus-per-job", type=float, default=None,
                     help="GPUs per job, fractions pack small models on one GPU (default: 1 where the cluster has GPUs, else 0)")
    ray.add_argument("--cpus-per-job", type=float, default=1.0,
                     help="CPUs Ray reserves per job (default 1; also its torch threads unless --threads-per-job says)")
    ray.add_argument("--max-retries", type=int, default=2, help="retries after a process death (not after a Python error)")
    ray.add_argument("--optuna-storage", default=None,
                     help="default: one journal file per job beside the MLflow store; a database URL "
                          "(postgresql://...) where the cluster's nodes share no file system")
    p.add_argument("--save-models", action=argparse.BooleanOptionalAction, default=True,
                   help="each fold run keeps its model as the artifact model/ (weights + JSON; per run at width 1024: "
                        "abmil 3.9 MB, snn 4.5, transmil 10.9, mcat 18.2, ghanet 61.2) for `python -m bench.predict` "
                        "(default: on)")
    p.add_argument("--allow-unverified-splits", action="store_true")
    p.add_argument("--on-missing", choices=["error", "skip"], default="error")
    p.add_argument("--list-models", action="store_true")
    return p.parse_args(argv)


def _int_list(text: str, what: str, valid: range | None = None) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise BenchError(f"--{what} takes comma-separated integers, got {text!r}.") from None
    bad = [v for v in values if valid is not None and v not in valid]
    if bad or not values:
        raise BenchError(f"--{what} {text!r} is out of range: use values in {valid.start}..{valid.stop - 1}.")
    return values


def parse_models(text: str) -> list[str]:
    """--models: a selection (default, extended, all) or comma-separated registered names, in that order."""
    if text.strip() in MODEL_SELECTIONS:
        return select_models(text.strip())
    models = [m.strip() for m in text.split(",") if m.strip()]
    for m in models:
        get_model_class(m)
    if not models:
        raise BenchError(f"--models {text!r} names no model: give registered names or one of {', '.join(MODEL_SELECTIONS)}.")
    return models


def refuse_missing_features(data_root: DataRoot, cohorts: list[str], models: list[str]) -> None:
    """Models that read slides on a root of tables and splits only: one paragraph before any job, not a job per failure."""
    slide_models = [m for m in models if reads_slides(m)]
    bare = [c for c in cohorts
            if not any((data_root.features(c) / sub).is_dir() for sub in ("h5_files", "pt_files"))]
    if slide_models and bare:
        raise BenchError(f"--models asks for {', '.join(slide_models)}, which read slide features, but there are none for "
                         f"{', '.join(bare)}: no h5_files/ or pt_files/ under {data_root.features(bare[0])}. Extract them "
                         "with CLAM (README, Running on real TCGA) into that folder or pass --features-dir DIR; or run "
                         f"the slide-free models alone, which need only the tables and splits: --models tabular "
                         f"({', '.join(TABULAR_MODELS)}).")


def budget(args) -> tuple[Profile, int]:
    """What each job spends: the profile with --epochs laid over it, and the trials (--trials, else the profile's)."""
    profile = PROFILES[args.profile]
    if args.epochs is not None:
        if args.epochs < 1:
            raise BenchError(f"--epochs {args.epochs}: train for at least 1 epoch.")
        profile = replace(profile, epochs=args.epochs)
    trials = profile.trials if args.trials is None else args.trials
    if args.protocol == "nested" and trials < 1:
        raise BenchError(f"--trials {trials}: the nested protocol needs at least 1 Optuna trial per job.")
    return profile, trials


def settings_from_args(args) -> tuple[SweepSettings, list[Job], str, str]:
    """Validate every argument before any work starts."""
    models = parse_models(args.models)
    cohorts = parse_cohorts(args.cohorts)
    folds = _int_list(args.folds, "folds", range(5))
    seeds = _int_list(args.seed, "seed")
    profile, trials = budget(args)
    if (args.cache_gb is not None and args.cache_gb < 0) or args.max_tokens < 0:
        raise BenchError(f"--cache-gb {args.cache_gb} and --max-tokens {args.max_tokens}: neither can be negative "
                         "(0 turns the cache off, or the token limit).")
    if args.dim is not None and (args.data != "semisynthetic" or args.dim < 1):
        raise BenchError(f"--dim {args.dim}: the width of simulated features, for --data semisynthetic only, at least 1. "
                         "Other data take the width from their feature files; a synthetic root of another width is "
                         "made by `python -m bench.data synth --out DIR --dim D`, then --data-root DIR.")
    if args.protocol == "paper" and args.precision != "fp32":
        raise BenchError("--precision bf16 is a speed setting that changes results; the paper protocol runs in fp32.")
    if args.executor == "ray":  # the devices are the Ray workers', not this driver's: each task resolves `auto`
        device = args.device
        if args.gpus_per_job is not None and args.gpus_per_job < 0 or args.cpus_per_job <= 0 or args.max_retries < 0:
            raise BenchError(f"--gpus-per-job {args.gpus_per_job}, --cpus-per-job {args.cpus_per_job}, --max-retries "
                             f"{args.max_retries}: GPUs and retries cannot be negative, and a job needs some CPU.")
    else:
        device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
        if device == "cuda" and not torch.cuda.is_available():
            raise BenchError("--device cuda was asked for, but torch sees no CUDA device. Use --device cpu or auto.")
    threads = args.threads_per_job
    if threads is None:
        threads = max(1, int(args.cpus_per_job)) if args.executor == "ray" else 1
    if threads < 1:
        raise BenchError(f"--threads-per-job {args.threads_per_job}: a job needs at least 1 thread.")
    if args.data == "synthetic":
        from bench.data.synth import ensure_synthetic

        root = args.data_root or DEFAULT_SYNTHETIC_ROOT
        ensure_synthetic(root, rewrite_stale=args.data_root is None)  # the default root follows the generator
    else:
        if args.data_root is None:
            raise BenchError(f"--data {args.data} needs --data-root DIR holding the real tables and splits "
                             "(fill it with `python -m bench.data fetch --out DIR`).")
        root = args.data_root
    experiment = args.experiment or default_experiment(args.data, args.protocol)
    local = store_dir(args.tracking_uri)
    data_root = DataRoot(root, args.features_dir)
    if args.data == "tcga":
        refuse_missing_features(data_root, cohorts, models)
    requested = parse_variants(args.table_variant, cohorts)
    variants = {c: data_root.resolve_variant(c, requested.get(c)) for c in cohorts}
    settings = SweepSettings(
        data=args.data, root=data_root, protocol=args.protocol, profile=profile,
        trials=trials if args.protocol == "nested" else 0, table_variants=variants,
        allow_unverified_splits=args.allow_unverified_splits, on_missing=args.on_missing, device=device,
        precision=args.precision, micro_batch=args.micro_batch, max_tokens=args.max_tokens or None,
        cache_bytes=default_cache_bytes() if args.cache_gb is None else int(args.cache_gb * 1e9),
        cache_dtype=args.cache_dtype, semisynth_dim=args.dim or 1024, save_models=args.save_models,
        optuna_dir=(local or Path("mlruns")) / "optuna" / experiment, optuna_storage=args.optuna_storage,
        threads_per_job=threads, reads_slides=any(reads_slides(m) for m in models),
    )
    jobs = [Job(m, c, k, s) for s in seeds for c in cohorts for m in models for k in folds]
    return settings, jobs, experiment, args.tracking_uri


def parse_variants(text: str | None, cohorts: list[str]) -> dict[str, str]:
    """`sig` -> every cohort; `blca=sig,brca=mutsig` -> per cohort."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        cohort, _, variant = part.rpartition("=")
        if variant not in TABLE_VARIANTS:
            raise BenchError(f"--table-variant {text!r}: variant {variant!r} is not one of {', '.join(TABLE_VARIANTS)}.")
        for c in parse_cohorts(cohort) if cohort else cohorts:
            out[c] = variant
    return out


def _fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def summary_table(results: list[JobResult]) -> str:
    by = defaultdict(list)
    for r in results:
        if r.status != "failed":
            by[(r.job.model, r.job.cohort)].append(r.c_index)
    models = sorted({r.job.model for r in results})
    cohorts = [c for c in COHORTS if any(r.job.cohort == c for r in results)]
    width = max(len("model"), *(len(m) for m in models)) + 1
    lines = ["model".ljust(width) + "".join(f"{c:>16s}" for c in cohorts)]
    for m in models:
        cells = []
        for c in cohorts:
            v = np.array(by.get((m, c), []), dtype=float)
            v = v[~np.isnan(v)]
            cells.append(f"{v.mean():.3f} ± {v.std():.3f}".rjust(16) if len(v) else "—".rjust(16))
        lines.append(m.ljust(width) + "".join(cells))
    return "\n".join(lines)


def sweep(settings: SweepSettings, jobs: list[Job], tracker: Tracker, workers: int = 1, out=print,
          executor=None) -> list[JobResult]:
    """Run the jobs with a progress line each; one failing job never stops the others. A cohort's data (and
    its bags in this process's cache) is released after its last job."""
    cache = {}
    jobs_left = defaultdict(int)
    for j in jobs:
        jobs_left[j.cohort] += 1

    def cohorts(name):
        if name not in cache:
            cache[name] = load_cohort_data(settings, name)
            if cache[name].dropped:
                out(f"  {name}: dropped {len(cache[name].dropped)} patient(s) without features: "
                    f"{', '.join(cache[name].dropped)}")
        return cache[name]

    # every cohort is loaded and checked before the first job, so a missing table fails now, not hours in
    sizes = {c: len(cohorts(c).cohort.patients) for c in dict.fromkeys(j.cohort for j in jobs)}
    for c in sizes:
        models = [m for m in dict.fromkeys(j.model for j in jobs if j.cohort == c)
                  if get_model_class(m).clinical_columns]
        columns = list(dict.fromkeys(col for m in models for col in get_model_class(m).clinical_columns))
        if models:
            cohorts(c).cohort.require_clinical(columns, models)
    cost = {j: get_model_class(j.model).relative_job_cost * sizes[j.cohort] for j in jobs}
    if workers > 1 or executor is not None:
        jobs = sorted(jobs, key=lambda j: -cost[j])
    results: list[JobResult] = []
    t0 = time.perf_counter()
    tty = sys.stdout.isatty()

    def progress(job, text):
        if tty:
            print(f"\r[{len(results) + 1}/{len(jobs)}] {job.model} {job.cohort} fold {job.fold} | {text}".ljust(100),
                  end="", flush=True)

    def report(r: JobResult):
        results.append(r)
        jobs_left[r.job.cohort] -= 1
        if jobs_left[r.job.cohort] == 0 and r.job.cohort in cache:
            released = cache.pop(r.job.cohort)
            if released.store is not None:
                released.store.release()
        ran = sum(cost[x.job] for x in results if x.status != "skipped")
        left = sum(cost.values()) - sum(cost[x.job] for x in results)
        elapsed = time.perf_counter() - t0
        eta = elapsed / ran * left if ran else 0.0  # weighted by job cost: the longest jobs run first
        detail = {"finished": f"C {r.c_index:.3f} in {r.seconds:.1f}s", "skipped": f"already finished (C {r.c_index:.3f})",
                  "failed": f"FAILED: {r.reason.strip().splitlines()[-1][:200] if r.reason else ''}"}[r.status]
        if tty:
            print("\r", end="")
        out(f"[{len(results)}/{len(jobs)}] {r.job.model} {r.job.cohort} fold {r.job.fold} seed {r.job.seed} | {detail} | "
            f"elapsed {_fmt_time(elapsed)}, ETA {_fmt_time(eta)}")

    noticed = set()

    def notice(job: Job, reason: str):
        """Name why finished jobs rerun once per kind of change, not once per job."""
        kind = tuple(part.split(" ", 1)[0] for part in reason.split("; "))
        if kind not in noticed:
            noticed.add(kind)
            if tty:
                print("\r", end="")
            print(f"rerunning jobs that finished before under other inputs, e.g. {job.model} {job.cohort} fold "
                  f"{job.fold} seed {job.seed}: {reason}. Other jobs with the same change are not listed.",
                  file=sys.stderr)

    (executor or make_executor(workers)).run(jobs, settings, tracker, cohorts, report, progress, notice=notice)
    return results


def _summary(cls) -> str:
    """First line of the model's docstring, else of its module's (most models document the module)."""
    doc = cls.__doc__ or sys.modules[cls.__module__].__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list_models:
        for name in list_models():
            cls = get_model_class(name)
            print(f"{name:10s} train: {'+'.join(sorted(cls.train_modalities)):9s} inference: "
                  f"{'+'.join(sorted(cls.infer_modalities)):9s} {_summary(cls)}")
        return 0
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    settings, jobs, experiment, uri = settings_from_args(args)
    if args.workers is not None and args.workers < 1:
        raise BenchError(f"--workers {args.workers}: give at least 1 (or leave it out for one per "
                         f"{settings.threads_per_job} CPU core(s) of --threads-per-job, up to 4).")
    job_slots = max(1, (os.cpu_count() or 1) // settings.threads_per_job)
    workers = args.workers or (1 if settings.device == "cuda" else min(job_slots, 4))
    if args.executor == "local" and workers > 1:  # each worker process holds its own cache: they share the budget
        settings = replace(settings, cache_bytes=settings.cache_bytes // workers)
    executor = None
    if args.executor == "ray":
        from bench.ray_executor import RayExecutor, import_ray

        import_ray()  # a missing extra fails here, before the store is touched
        executor = RayExecutor(args.ray_address, args.gpus_per_job, args.cpus_per_job, args.max_retries)
    tracker = Tracker(uri, experiment)
    print(f"{len(jobs)} jobs ({settings.protocol} protocol, {settings.data} data, profile {settings.profile.name}, "
          f"{settings.trials} trials/job, device {settings.device}, bag cache {settings.cache_bytes / 1e9:.3g} GB "
          f"{settings.cache_dtype} per process, {'Ray tasks' if executor else f'{workers} worker(s)'} of "
          f"{settings.threads_per_job} torch thread(s)); tracking {uri}, experiment {experiment!r}")
    t0 = time.perf_counter()
    results = sweep(settings, jobs, tracker, workers, executor=executor)
    failed = [r for r in results if r.status == "failed"]
    print("\nC-index (outer val folds, mean ± std over folds):\n" + summary_table(results))
    per_model = defaultdict(float)
    for r in results:
        per_model[r.job.model] += r.seconds
    print(f"\nwall time {time.perf_counter() - t0:.1f} s; by model: "
          + ", ".join(f"{m} {s:.1f} s" for m, s in sorted(per_model.items())))
    print(browse_text(uri, tracker.experiment_id))
    if failed:
        print(f"{len(failed)} of {len(results)} jobs FAILED (reasons are on their MLflow runs, tag failure_reason):",
              file=sys.stderr)
        for r in failed:
            print(f"  {r.job.model} {r.job.cohort} fold {r.job.fold} seed {r.job.seed}: {r.reason.strip().splitlines()[-1][:300]}",
                  file=sys.stderr)
        return 1
    return 0


main = cli_main(_main)

if __name__ == "__main__":
    raise SystemExit(main())
