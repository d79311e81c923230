"""`python -m bench.perf transmil`: TransMIL's exact short-bag attention path beside the library path it replaces.

    python -m bench.perf transmil [--sizes 66,256,257,2000] [--threads 1]

Prints the time per training pass of both and the largest difference of their logits and gradients.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Sequence

import torch

from bench.perf.models import add_threads_option, build_model, int_list, make_bag, torch_threads, train_pass
from bench.survival import nll_loss
from models.base import SurvivalModel


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
            train_pass(model, bag, label=1)  # warm-up
            best = float("inf")
            for _ in range(reps):
                start = time.perf_counter()
                train_pass(model, bag, label=1)
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


def add_parser(sub) -> None:
    p_transmil = sub.add_parser("transmil", help="TransMIL's exact short-bag path against the library path: time and difference")
    p_transmil.add_argument("--sizes", default="66,256,257,2000", help="bag sizes in patches")
    add_threads_option(p_transmil)
    p_transmil.set_defaults(func=main)


def main(args) -> int:
    with torch_threads(args.threads):
        print(transmil_paths(int_list(args.sizes)))
    return 0
