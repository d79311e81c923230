"""Model cost on this machine: parameters, training time per bag and achieved FLOP rate.

    python -m bench.perf models [--models abmil,mcat] [--sizes 256,2000,10000]
    python -m bench.perf sweep [--models abmil,snn] [--cohorts blca] [--folds 0] [--workers 2]
    python -m bench.perf transmil [--sizes 66,256,257,2000]
    python -m bench.perf ray
    python -m bench.perf io --data-root DIR --cohort blca [--cache-gb X]

Per registered model and bag size, one bag at a time as the reference trainers feed them:
forward, NLL (+ the model's own loss terms), backward, and an Adam step amortised over the
32 bags of one gradient-accumulation step. FLOPs of a forward + backward come from
`torch.utils.flop_counter.FlopCounterMode`; the rate is set against a measured fp32 matmul peak.
Costly bags are timed on fewer bags (fastest pass per bag size) to keep the table to a couple of minutes.
`sweep` times a slice of the embedded default and projects the whole default's wall time (see `project`).
`transmil` times TransMIL's exact short-bag attention path beside the library path it replaces, and
prints the largest difference of their logits and gradients.
`io` reads one cohort's bags cold and warm beside the disk's own sequential read of the same files (see `io_table`).
"""

from __future__ import annotations

import argparse
import heapq
import math
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.errors import BenchError, cli_main
from bench.survival import nll_loss
from models import DEFAULT_OMIC_SIZES, create_model, get_model_class, list_models
from models.base import OMICS, OPTIM_KEYS, WSI, SurvivalModel

ACCUM_BAGS = 32  # bags per optimizer step (REFERENCE_OPTIM grad_accum)
DEFAULT_SIZES = (256, 2000, 10000)
FLOP_BUDGET = 2e11  # timed FLOPs per (model, size): about two seconds at 100 GFLOP/s


def bags_to_time(flops_per_bag: int) -> int:
    """How many bags to time: all 32 of an accumulation step for cheap bags, down to 2 for
    costly ones, so that each (model, size) costs at most about FLOP_BUDGET."""
    return max(2, min(ACCUM_BAGS, int(FLOP_BUDGET // max(flops_per_bag, 1))))


@dataclass(frozen=True)
class Row:
    model: str
    params: int
    patches: int
    bags: int
    sec_per_bag: float  # forward + backward + amortised optimizer step
    flops_per_bag: int  # forward + backward


def matmul_peak_gflops(n: int = 2048, reps: int = 5) -> float:
    """Best fp32 GFLOP/s of an n x n matmul: the ceiling the models are measured against."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)  # warm-up
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9


def build_model(name: str, omic_sizes: Sequence[int] = DEFAULT_OMIC_SIZES) -> SurvivalModel:
    """The model at its paper defaults (constructor keys only), in training mode."""
    defaults = get_model_class(name).paper_defaults
    kwargs = {k: v for k, v in defaults.items() if k not in OPTIM_KEYS}
    return create_model(name, omic_sizes=omic_sizes, **kwargs).train()


def make_bag(model: SurvivalModel, n_patches: int, path_dim: int = 1024,
             omic_sizes: Sequence[int] = DEFAULT_OMIC_SIZES) -> dict:
    """Random inputs for one unbatched bag with the modalities the model trains on."""
    inputs: dict = {"wsi": None, "mask": None, "omics": None}
    if WSI in model.train_modalities:
        inputs["wsi"] = torch.randn(n_patches, path_dim)
    if OMICS in model.train_modalities:
        inputs["omics"] = [torch.randn(size) for size in omic_sizes]
    return inputs


def _train_pass(model: SurvivalModel, bag: dict, label: int) -> None:
    """Forward, per-patient NLL plus the model's own terms, backward."""
    out = model(**bag)
    loss = nll_loss(out.logits, torch.tensor([label]), torch.tensor([label % 2]))
    omics = None if bag["omics"] is None else [o.unsqueeze(0) for o in bag["omics"]]
    for extra in (model.extra_loss(out, omics), model.label_loss(out, torch.tensor([label]))):
        if extra is not None:
            loss = loss + extra
    loss.sum().backward()


def count_flops(model: SurvivalModel, bag: dict) -> int:
    """FLOPs of one training forward + backward on `bag` (gradients are zeroed after)."""
    with FlopCounterMode(display=False) as counter:
        _train_pass(model, bag, label=1)
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def time_training(model: SurvivalModel, bag: dict, n_bags: int) -> float:
    """Seconds per bag: fastest forward + backward of `n_bags`, plus one Adam step / 32.

    The fastest, like the matmul peak, because other work on a shared machine only ever adds
    time: the least-disturbed pass is the best estimate of the model's own cost.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, weight_decay=1e-5)
    for p in model.parameters():  # a step on zero gradients creates the Adam state untimed
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad()
    times = []
    for i in range(n_bags):
        start = time.perf_counter()
        _train_pass(model, bag, label=i % 4)
        times.append(time.perf_counter() - start)
    passes = min(times)
    start = time.perf_counter()
    optimizer.step()
    optimizer.zero_grad()
    step = time.perf_counter() - start
    return passes + step / ACCUM_BAGS


def benchmark(names: Sequence[str], sizes: Sequence[int], bags=bags_to_time) -> list[Row]:
    """One row per (model, bag size)."""
    rows = []
    for name in names:
        torch.manual_seed(0)
        model = build_model(name)
        params = sum(p.numel() for p in model.parameters())
        for n in sizes:
            bag = make_bag(model, n)
            flops = count_flops(model, bag)  # also the warm-up pass at this size
            n_bags = bags(flops)
            rows.append(Row(name, params, n, n_bags, time_training(model, bag, n_bags), flops))
    return rows


def format_table(rows: Sequence[Row], peak_gflops: float) -> str:
    """A plain-text table; GFLOP/s counts forward + backward FLOPs over the time per bag."""
    header = f"{'model':<10}{'params':>12}{'patches':>9}{'bags':>6}{'ms/bag':>10}{'GFLOP/bag':>11}{'GFLOP/s':>9}{'% peak':>8}"
    lines = [header, "-" * len(header)]
    for r in rows:
        rate = r.flops_per_bag / r.sec_per_bag / 1e9
        lines.append(
            f"{r.model:<10}{r.params:>12,}{r.patches:>9,}{r.bags:>6}{r.sec_per_bag * 1e3:>10.1f}"
            f"{r.flops_per_bag / 1e9:>11.2f}{rate:>9.1f}{100 * rate / peak_gflops:>7.1f}%"
        )
    lines.append(
        f"fp32 matmul peak (2048^3, best of 2 x 5): {peak_gflops:.1f} GFLOP/s on {torch.get_num_threads()} threads; "
        f"load average at the end {os.getloadavg()[0]:.2f} (other work on the machine slows every figure)"
    )
    return "\n".join(lines)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BenchError(f"--sizes takes comma-separated patch counts such as 256,2000,10000, got {text!r}") from None
    if not values or min(values) < 1:
        raise BenchError(f"--sizes needs positive patch counts, got {text!r}")
    return values


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


def _pid() -> int:
    return os.getpid()


def _descendants_rss(pid: int) -> tuple[int, int]:
    """Number and summed resident memory (bytes) of a process's descendants, read from Linux's /proc."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - found
        found |= frontier
    rss = 0
    for p in found:
        try:
            rss += int(next(l for l in Path(f"/proc/{p}/status").read_text().splitlines() if l.startswith("VmRSS")).split()[1])
        except (OSError, StopIteration):
            continue
    return len(found), rss * 1024


def ray_overhead(num_cpus: int = 2, n_tasks: int = 200) -> str:
    """What `--executor ray` costs before any job: a private Ray's start, memory, task round trip, stop."""
    from bench.ray_executor import import_ray

    ray = import_ray()
    t0 = time.perf_counter()
    ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    t_init = time.perf_counter() - t0
    task = ray.remote(_pid)
    t0 = time.perf_counter()
    ray.get(task.remote())  # Ray prestarts its workers; the first task still registers the function
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    ray.get([task.remote() for _ in range(n_tasks)])
    t_task = (time.perf_counter() - t0) / n_tasks
    n_procs, rss = _descendants_rss(os.getpid())
    t0 = time.perf_counter()
    ray.shutdown()
    t_stop = time.perf_counter() - t0
    return (f"private Ray ({num_cpus} CPUs): ray.init {t_init:.1f} s; first task {t_first:.2f} s; "
            f"then {t_task * 1e3:.1f} ms per empty task ({n_tasks} in flight); {n_procs} Ray processes holding "
            f"{rss / 2**20:.0f} MiB RSS; ray.shutdown {t_stop:.1f} s")


def library_transmil(model: SurvivalModel) -> SurvivalModel:
    """The same TransMIL (same weights) with the `nystrom-attention` package's own module in both layers."""
    import copy

    import nystrom_attention

    ref = copy.deepcopy(model)
    for layer in (ref.layer1, ref.layer2):
        a = layer.attn
        lib = nystrom_attention.NystromAttention(
            dim=a.to_out[0].out_features, dim_head=a.to_qkv.out_features // (3 * a.heads), heads=a.heads,
            num_landmarks=a.num_landmarks, pinv_iterations=a.pinv_iterations, residual=a.residual,
            dropout=a.to_out[1].p)
        lib.load_state_dict(a.state_dict())
        layer.attn = lib
    return ref


def _step_result(model: SurvivalModel, bag: dict, onednn: bool) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    with warnings.catch_warnings(), torch.backends.mkldnn.flags(enabled=onednn):
        warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
        torch.manual_seed(0)
        out = model(**bag)
        nll_loss(out.logits, torch.tensor([1]), torch.tensor([0.0])).sum().backward()
    return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def transmil_paths(sizes: Sequence[int], reps: int = 3) -> str:
    """TransMIL's exact short-bag path against the library path: time per training pass and differences.

    Differences are the largest relative error (max |a - b| / max |b|) over the logits and every
    parameter's gradient; for short bags against the library run with oneDNN off (its depthwise conv
    weight gradient is wrong on CPU at some lengths, 256 among them, see models/nystrom.py).
    """
    torch.manual_seed(0)
    fast = build_model("transmil")
    slow = library_transmil(fast)
    lines = [f"{'patches':>8}{'tokens':>8}{'path':>9}{'library ms':>12}{'exact ms':>10}{'speed-up':>9}"
             f"{'max rel. diff (logits, grads)':>31}"]
    for n in sizes:
        bag = make_bag(fast, n)
        tokens = math.ceil(math.sqrt(n)) ** 2 + 1
        times = {}
        for name, model in (("library", slow), ("exact", fast)):
            _train_pass(model, bag, label=1)  # warm-up
            best = float("inf")
            for _ in range(reps):
                start = time.perf_counter()
                _train_pass(model, bag, label=1)
                best = min(best, time.perf_counter() - start)
            times[name] = best
            model.zero_grad(set_to_none=True)
        short = tokens <= fast.layer1.attn.num_landmarks
        want, want_g = _step_result(slow, bag, onednn=not short)  # long bags: the same library code on both sides
        got, got_g = _step_result(fast, bag, onednn=True)
        rel = max([float((got - want).abs().max() / want.abs().max())] +
                  [float((got_g[k] - w).abs().max() / w.abs().max().clamp_min(1e-30)) for k, w in want_g.items()])
        path = "short" if short else "library"
        lines.append(f"{n:>8,}{tokens:>8,}{path:>9}{times['library'] * 1e3:>12.1f}{times['exact'] * 1e3:>10.1f}"
                     f"{times['library'] / times['exact']:>8.1f}x{rel:>31.1e}")
    lines.append(f"one training pass (forward, NLL, backward), fastest of {reps}, {torch.get_num_threads()} threads; "
                 f"load average {os.getloadavg()[0]:.2f}")
    return "\n".join(lines)


IO_BLOCK = 8 << 20  # bytes per read() of the raw sequential read


def drop_page_cache(paths: Sequence[Path]) -> None:
    """Evict the files from the page cache, so the next read comes from the disk (no root needed, unlike
    /proc/sys/vm/drop_caches): fdatasync first, since POSIX_FADV_DONTNEED drops clean pages only."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def sequential_read(paths: Sequence[Path], block: int = IO_BLOCK) -> tuple[float, int]:
    """Seconds and bytes of plain buffered reads of whole files, one after another: the disk's own rate."""
    buf = bytearray(block)
    nbytes = 0
    start = time.perf_counter()
    for path in paths:
        with open(path, "rb") as f:
            while n := f.readinto(buf):
                nbytes += n
    return time.perf_counter() - start, nbytes


def h5_read(paths: Sequence[Path]) -> float:
    """Seconds to read every file's `features` dataset with h5py alone (no conversion or checks)."""
    import h5py

    start = time.perf_counter()
    for path in paths:
        with h5py.File(path, "r") as f:
            f["features"][:]
    return time.perf_counter() - start


def peak_rss() -> int:
    """This process's peak resident memory in bytes (Linux reports ru_maxrss in KiB, macOS in bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@dataclass(frozen=True)
class IoSource:
    """One cohort's bags and feature files, in table order, found from the file headers."""

    folder: Path
    patients: dict[str, list[str]]  # case id -> slide ids
    files: list[Path]
    largest_bag: int  # patches
    dim: int
    dtype: str  # as stored


def io_source(root: Path, cohort: str, features_dir: Path | None = None) -> IoSource:
    from bench.data import DataRoot, FeatureStore, open_cohort

    import h5py

    data = DataRoot(root, features_dir)
    co = open_cohort(data, cohort, data.resolve_variant(cohort))
    store = FeatureStore(data.features(cohort))
    patients = {c: list(s) for c, s in co.patients["slides"].items()}
    sizes = store.index(patients)  # headers only: every file's width and dtype checked, missing files named
    files = [store.slide_path(s) for slides in patients.values() for s in slides]
    if any(f.suffix != ".h5" for f in files):
        raise BenchError(f"{data.features(cohort)} holds pt files; `bench.perf io` times the h5 read path (CLAM's "
                         "h5_files/). Convert them, or time a cohort stored as h5.")
    with h5py.File(files[0], "r") as f:
        dtype = str(f["features"].dtype)
    return IoSource(data.features(cohort), patients, files, max(sizes.values()), store.dim, dtype)


def _io_child(source: IoSource, cache_bytes: int, cache_dtype: str, seed: int = 0) -> dict:
    """One process's view (run in a fresh one): its peak RSS after start-up, then a cold pass over the bags in
    table order and a warm pass in a shuffled order, as an epoch draws them, through the suite's FeatureStore."""
    import numpy as np

    from bench.data.features import FeatureStore, process_cache

    store = FeatureStore(source.folder, dim=source.dim, cache=process_cache(cache_bytes), dtype=cache_dtype)
    cases = list(source.patients)
    out = {"base_rss": peak_rss()}
    drop_page_cache(source.files)
    for name, order in (("cold", cases), ("warm", [cases[i] for i in np.random.default_rng(seed).permutation(len(cases))])):
        hits = 0
        start = time.perf_counter()
        for case in order:
            hits += store.cache is not None and store.cache.get((str(store.folder), case)) is not None
            store.bag(case, source.patients[case])
        out[name] = (time.perf_counter() - start, hits)
    out["peak_rss"] = peak_rss()
    return out


def in_child(fn, *args):
    """`fn(*args)` in a freshly spawned process, so its peak RSS is its own."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def io_table(source: IoSource, caches: Sequence[int], cache_dtype: str = "float32") -> str:
    """Read a cohort cold and warm and set it against the disk's sequential read of the same files, in one run.

    Cold = each file fsynced and evicted with POSIX_FADV_DONTNEED before the pass. Rows: the raw files read
    sequentially (the disk's rate, 100%), h5py's read of the `features` datasets, then per cache budget a fresh
    process's cold pass over the bags through FeatureStore (table order) and a warm pass (shuffled, page cache
    and bag cache as they stand) with its cache hits and the process's peak RSS. GB = 1e9 bytes of feature files.
    """
    nbytes = sum(f.stat().st_size for f in source.files)
    n_bags = len(source.patients)
    drop_page_cache(source.files)
    t_disk, read = sequential_read(source.files)
    drop_page_cache(source.files)
    t_h5 = h5_read(source.files)
    header = f"{'pass':<38}{'s':>8}{'GB/s':>8}{'bags/s':>9}{'% disk':>8}{'cache hits':>12}{'peak RSS GB':>13}"
    lines = [header, "-" * len(header)]

    def row(name, secs, hits="", rss=""):
        # a space before every figure: a tiny warm pass can outgrow a column (bags/s in the 100,000s)
        lines.append(f"{name:<38}{secs:>7.3f} {nbytes / secs / 1e9:>7.3f} {n_bags / secs:>8.1f} "
                     f"{100 * t_disk / secs:>6.0f}% {hits:>11} {rss:>12}")

    row("disk: raw files, sequential, cold", t_disk)
    row("h5py features datasets, cold", t_h5)
    for budget in caches:
        r = in_child(_io_child, source, budget, cache_dtype)
        label = f"cache {budget / 1e9:.3g} GB" if budget else "no cache"
        rss = f"{r['peak_rss'] / 1e9:.2f} (+{(r['peak_rss'] - r['base_rss']) / 1e9:.2f})"
        row(f"bags, {label}, cold", r["cold"][0], f"{r['cold'][1]}/{n_bags}", rss)
        row(f"bags, {label}, warm (shuffled)", r["warm"][0], f"{r['warm'][1]}/{n_bags}")
    lines.append(f"{n_bags} bags in {len(source.files)} h5 files, {nbytes / 1e9:.3f} GB of {source.dtype} [N, {source.dim}] "
                 f"(largest bag {source.largest_bag:,} patches) under {source.folder}; read {read / 1e9:.3f} GB raw. Cold: "
                 "each file fsynced and evicted (posix_fadvise POSIX_FADV_DONTNEED) before the pass. Bags are held as "
                 f"{cache_dtype}; peak RSS of the reading process (+ above its start-up). Load average at the end "
                 f"{os.getloadavg()[0]:.2f}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_models = sub.add_parser("models", help="parameters, training time per bag and GFLOP/s per model")
    p_models.add_argument("--models", default=",".join(n for n in list_models() if not get_model_class(n).estimator),
                          help="comma-separated model names (default: every torch model)")
    p_models.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="bag sizes in patches")
    p_transmil = sub.add_parser("transmil", help="TransMIL's exact short-bag path against the library path: time and difference")
    p_transmil.add_argument("--sizes", default="66,256,257,2000", help="bag sizes in patches")
    sub.add_parser("ray", help="start-up time, memory and task latency of a private Ray (needs the ray extra)")
    p_io = sub.add_parser("io", help="read one cohort's bags cold and warm beside the disk's sequential read of its files")
    p_io.add_argument("--data-root", type=Path, required=True)
    p_io.add_argument("--cohort", required=True, help="one cohort (short name, e.g. blca)")
    p_io.add_argument("--features-dir", type=Path, default=None, help="MCAT-style feature folder, as bench.data check")
    p_io.add_argument("--cache-gb", type=float, default=None,
                      help="bag cache budget of the second reading process in GB (default as bench.run: "
                           "25%% of MemAvailable); the first reads without a cache. 0: only the uncached process")
    p_io.add_argument("--cache-dtype", choices=["float32", "float16"], default="float32", help="as bench.run")
    p_sweep = sub.add_parser("sweep", help="time a slice of the embedded default and project the whole default's wall time")
    p_sweep.add_argument("--models", default=",".join(list_models()), help="comma-separated model names (default: all)")
    p_sweep.add_argument("--cohorts", default="blca", help="cohorts of the slice (default: blca, the smallest)")
    p_sweep.add_argument("--folds", default="0", help="folds of the slice (default: 0)")
    p_sweep.add_argument("--workers", type=int, default=None,
                         help="worker processes of the projected sweep (default: as bench.run, one per core up to 4)")
    p_sweep.add_argument("--data-root", type=Path, default=None,
                         help="synthetic data root (default: data/synthetic, generated if missing)")
    args = parser.parse_args(argv)
    if args.command == "ray":
        print(ray_overhead())
        return 0
    if args.command == "sweep":
        return _sweep(args)
    if args.command == "io":
        return _io(args)
    if args.command == "transmil":
        print(transmil_paths(_int_list(args.sizes)))
        return 0

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(list_models()))
    if unknown:
        raise BenchError(f"unknown model(s) {', '.join(unknown)}. Registered models: {', '.join(list_models())}.")
    sizes = _int_list(args.sizes)
    before = matmul_peak_gflops()
    rows = benchmark(names, sizes)
    peak = max(before, matmul_peak_gflops())  # the better of two: other work only lowers it
    print(format_table(rows, peak))
    return 0


def _io(args) -> int:
    from bench.data import parse_cohorts
    from bench.data.features import default_cache_bytes

    cohorts = parse_cohorts(args.cohort)
    if len(cohorts) != 1:
        raise BenchError(f"--cohort {args.cohort!r}: `bench.perf io` reads one cohort at a time, such as --cohort blca.")
    if args.cache_gb is not None and args.cache_gb < 0:
        raise BenchError(f"--cache-gb {args.cache_gb}: a cache budget cannot be negative (0 times only the uncached read).")
    budget = default_cache_bytes() if args.cache_gb is None else int(args.cache_gb * 1e9)
    source = io_source(args.data_root, cohorts[0], args.features_dir)
    bag = source.largest_bag * source.dim * (2 if args.cache_dtype == "float16" else 4)
    if 0 < budget < bag:
        raise BenchError(f"--cache-gb {budget / 1e9:.3g} holds no bag of {cohorts[0]}'s largest patient: "
                         f"{source.largest_bag:,} patches x {source.dim} = {bag / 1e9:.3g} GB in {args.cache_dtype}. "
                         "Give at least that, --cache-dtype float16 to halve every bag, or 0 for no cache.")
    print(io_table(source, [0] + ([budget] if budget else []), args.cache_dtype))
    return 0


def _sweep(args) -> int:
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


run = cli_main(main)

if __name__ == "__main__":
    raise SystemExit(run())
