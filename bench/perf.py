"""Model cost on this machine: parameters, training time per bag and achieved FLOP rate.

    python -m bench.perf models [--models abmil,mcat] [--sizes 256,2000,10000]
    python -m bench.perf ray

Per registered model and bag size, one bag at a time as the reference trainers feed them:
forward, NLL (+ the model's own loss terms), backward, and an Adam step amortised over the
32 bags of one gradient-accumulation step. FLOPs of a forward + backward come from
`torch.utils.flop_counter.FlopCounterMode`; the rate is set against a measured fp32 matmul peak.
Costly bags are timed on fewer bags (fastest pass per bag size) to keep the table to a couple of minutes.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
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
    extra = model.extra_loss(out, omics)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_models = sub.add_parser("models", help="parameters, training time per bag and GFLOP/s per model")
    p_models.add_argument("--models", default=",".join(list_models()), help="comma-separated model names")
    p_models.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="bag sizes in patches")
    sub.add_parser("ray", help="start-up time, memory and task latency of a private Ray (needs the ray extra)")
    args = parser.parse_args(argv)
    if args.command == "ray":
        print(ray_overhead())
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


run = cli_main(main)

if __name__ == "__main__":
    raise SystemExit(run())
