"""`python -m bench.perf models`: each model's training step on this machine, as a roofline.

    python -m bench.perf models [--models abmil,mcat] [--sizes 66,256,2000,10000] [--threads 1]

Per registered model and bag size, one bag at a time as the reference trainers feed them:
forward, NLL (+ the model's own loss terms), backward, and an Adam step amortised over the
32 bags of one gradient-accumulation step. The step's FLOPs (forward + backward) are counted by
`bench.perf.flops`; the achieved rate is set against an fp32 matmul (512x1024 @ 1024x1024) timed in the
same run on the same thread count, so the share says how far the step is from what this machine's
matmul does. The op with the most self CPU time in the fastest of three profiled steps (torch.profiler),
and the step's time between ops, name what holds a step back. Costly bags are timed on fewer bags (fastest pass per bag size) to keep the table to a
couple of minutes. Threads default to 1, as a sweep job computes (`--threads-per-job`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bench.errors import BenchError
from bench.perf.flops import flop_counter
from bench.survival import nll_loss
from models import DEFAULT_OMIC_SIZES, create_model, get_model_class, list_models
from models.base import OMICS, OPTIM_KEYS, WSI, SurvivalModel

ACCUM_BAGS = 32  # bags per optimizer step (REFERENCE_OPTIM grad_accum)
DEFAULT_SIZES = (66, 256, 2000, 10000)  # 66: the embedded default's median bag
FLOP_BUDGET = 2e11  # timed FLOPs per (model, size): about two seconds at 100 GFLOP/s
BETWEEN_OPS = ""  # op_times' key for the time a pass spends outside any op
_PASS = "bench.perf training pass"  # the profiler's name for the whole pass
MATMUL_SHAPE = (512, 1024)  # the reference matmul: [512, 1024] @ [1024, 1024], a 512-patch bag through a 1024-wide layer


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
    top_op: str = ""  # the op with the most self CPU time in a profiled forward + backward (`top_op`)
    top_share: float = 0.0  # its share of that pass
    between_ops: float = 0.0  # the pass's share outside any op (Python, autograd bookkeeping)


def matmul_peak_gflops(n: int = MATMUL_SHAPE[1], rows: int = MATMUL_SHAPE[0], reps: int = 20) -> float:
    """Best fp32 GFLOP/s of a [rows, n] @ [n, n] matmul on the current thread count: the rate the models are set against.

    The best of `reps`, because other work on a shared machine only ever adds time."""
    a, b = torch.randn(rows, n), torch.randn(n, n)
    torch.matmul(a, b)  # warm-up
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * rows * n * n / best / 1e9


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


def train_pass(model: SurvivalModel, bag: dict, label: int) -> None:
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
    with flop_counter() as counter:
        train_pass(model, bag, label=1)
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def op_times(model: SurvivalModel, bag: dict) -> tuple[float, dict[str, float]]:
    """One profiled training pass (torch.profiler): its seconds and the self CPU seconds per op, with the
    time between ops (Python, autograd bookkeeping) under BETWEEN_OPS. Gradients are zeroed after.

    Self time charges an op for its own kernel, not for the ops it calls; forward and backward calls of one
    op (aten::mm, say) add up.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    prof = profile(activities=[ProfilerActivity.CPU])
    with _quiet_stderr():
        prof.start()
    try:
        with record_function(_PASS):
            train_pass(model, bag, label=1)
    finally:
        with _quiet_stderr():
            prof.stop()
    model.zero_grad(set_to_none=True)
    events = prof.key_averages()
    whole = next(e for e in events if e.key == _PASS)
    ops = {e.key: e.self_cpu_time_total / 1e6 for e in events if e.key != _PASS}
    ops[BETWEEN_OPS] = whole.self_cpu_time_total / 1e6
    return whole.cpu_time_total / 1e6, ops


def top_op(model: SurvivalModel, bag: dict, passes: int = 3) -> tuple[str, float, float]:
    """The op with the most self CPU time in the fastest of `passes` profiled training passes, its share of
    that pass and the pass's share between ops.

    The fastest pass as a whole, since on a shared machine other work only adds time and a slower pass
    charges a preemption to whichever op it hit. Shares are of the profiled pass, which the profiler's own
    bookkeeping per op lengthens (most where ops are many and small).
    """
    seconds, ops = min((op_times(model, bag) for _ in range(passes)), key=lambda t: t[0])
    between = ops.pop(BETWEEN_OPS)
    name = max(ops, key=ops.get)
    return name, ops[name] / seconds, between / seconds


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 to /dev/null: the profiler's C++ side writes a line at every start and stop."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


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
        train_pass(model, bag, label=i % 4)
        times.append(time.perf_counter() - start)
    passes = min(times)
    start = time.perf_counter()
    optimizer.step()
    optimizer.zero_grad()
    step = time.perf_counter() - start
    return passes + step / ACCUM_BAGS


def benchmark(names: Sequence[str], sizes: Sequence[int], bags=bags_to_time) -> list[Row]:
    """One row per (model, bag size), on the current thread count."""
    rows = []
    for name in names:
        torch.manual_seed(0)
        model = build_model(name)
        params = sum(p.numel() for p in model.parameters())
        for n in sizes:
            bag = make_bag(model, n)
            flops = count_flops(model, bag)  # also the warm-up pass at this size
            n_bags = bags(flops)
            seconds = time_training(model, bag, n_bags)
            rows.append(Row(name, params, n, n_bags, seconds, flops, *top_op(model, bag, passes=min(3, n_bags))))
    return rows


def format_table(rows: Sequence[Row], peak_gflops: float) -> str:
    """A plain-text roofline; GFLOP/s counts forward + backward FLOPs over the time per bag, % peak sets that
    against the matmul measured in the same run on the same threads."""
    header = (f"{'model':<10}{'params':>12}{'patches':>9}{'bags':>6}{'ms/bag':>10}{'GFLOP/bag':>11}{'GFLOP/s':>9}"
              f"{'% peak':>8}  top op (self CPU), between ops")
    lines = [header, "-" * len(header)]
    for r in rows:
        rate = r.flops_per_bag / r.sec_per_bag / 1e9
        lines.append(
            f"{r.model:<10}{r.params:>12,}{r.patches:>9,}{r.bags:>6}{r.sec_per_bag * 1e3:>10.1f}"
            f"{r.flops_per_bag / 1e9:>11.3f}{rate:>9.1f}{100 * rate / peak_gflops:>7.1f}%  "
            f"{r.top_op} {100 * r.top_share:.0f}%, {100 * r.between_ops:.0f}%"
        )
    rows_, n = MATMUL_SHAPE
    lines.append(
        f"fp32 matmul peak ([{rows_}, {n}] @ [{n}, {n}], best of 20, before and after the models): {peak_gflops:.1f} "
        f"GFLOP/s on {torch.get_num_threads()} thread(s), the models' own. FLOPs: the matmuls and convolutions of "
        "forward + backward (grouped convolutions per group, bench.perf.flops; elementwise ops uncounted). Top op: "
        "the most self CPU time in a profiled pass and its share of the pass; between ops: the share outside any "
        "op, both in the fastest of 3 profiled passes, which the profiler lengthens. Load average at the end "
        f"{os.getloadavg()[0]:.2f} (other work on the machine slows every figure)"
    )
    return "\n".join(lines)


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BenchError(f"--sizes takes comma-separated patch counts such as 256,2000,10000, got {text!r}") from None
    if not values or min(values) < 1:
        raise BenchError(f"--sizes needs positive patch counts, got {text!r}")
    return values


def add_parser(sub) -> None:
    p_models = sub.add_parser("models", help="a roofline per model and bag size: time, FLOPs and GFLOP/s of a training "
                                             "step against this machine's matmul, and its top op")
    p_models.add_argument("--models", default=",".join(n for n in list_models() if not get_model_class(n).estimator),
                          help="comma-separated model names (default: every torch model)")
    p_models.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="bag sizes in patches")
    add_threads_option(p_models)
    p_models.set_defaults(func=main)


def main(args) -> int:
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(list_models()))
    if unknown:
        raise BenchError(f"unknown model(s) {', '.join(unknown)}. Registered models: {', '.join(list_models())}.")
    sizes = int_list(args.sizes)
    with torch_threads(args.threads):
        before = matmul_peak_gflops()
        rows = benchmark(names, sizes)
        peak = max(before, matmul_peak_gflops())  # the better of two: other work only lowers it
        print(format_table(rows, peak))
    return 0


def add_threads_option(parser) -> None:
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the models and of the matmul (default 1, as a sweep job)")


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's thread count set to `n` for a benchmark, and restored after."""
    if n < 1:
        raise BenchError(f"--threads {n}: the models need at least 1 torch thread.")
    threads = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
