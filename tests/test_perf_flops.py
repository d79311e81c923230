"""bench.perf.flops against hand counts: grouped convolutions per group, the short Nystrom path's K x K products."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.perf.flops import flop_counter
from bench.perf.models import build_model, count_flops, make_bag, train_pass
from models.nystrom import NystromAttention, _sequence_conv


def flops_of(fn, counter=flop_counter) -> int:
    with counter() as c:
        fn()
    return int(c.get_total_flops())


@pytest.mark.parametrize("groups", [1, 4, 16])
def test_a_grouped_conv2d_costs_its_forward_three_times(groups):
    """Forward 2 * out pixels * k^2 * C_out * C_in/groups; backward twice that (input and weight gradients)."""
    conv = torch.nn.Conv2d(16, 16, 7, padding=3, groups=groups)
    x = torch.randn(2, 16, 5, 5, requires_grad=True)
    forward = 2 * 2 * 25 * 49 * 16 * (16 // groups)
    assert flops_of(lambda: conv(x).sum().backward()) == 3 * forward
    if groups > 1:  # torch's own formula counts the weight gradient as dense: the bug this module corrects
        raw = flops_of(lambda: conv(x).sum().backward(), lambda: FlopCounterMode(display=False))
        assert raw == 2 * forward + forward * groups


def test_without_an_input_gradient_only_the_weight_gradient_is_added():
    conv = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
    forward = 2 * 4 * 9 * 8
    assert flops_of(lambda: conv(torch.randn(1, 8, 2, 2)).sum().backward()) == 2 * forward


def test_the_nystrom_residual_conv1d_is_counted_per_head():
    v = torch.randn(1, 8, 30, 4, requires_grad=True)  # [b, heads, tokens, dim_head]
    weight = torch.randn(8, 1, 33, 1, requires_grad=True)
    forward = 2 * 4 * 8 * 30 * 33  # b * dim_head sequences, 8 channels of one input each, 33 taps per token
    assert flops_of(lambda: _sequence_conv(v, weight).sum().backward()) == 3 * forward


@pytest.mark.parametrize("n", [10, 16])  # 10 < landmarks: a padding class (K = 11); 16 = landmarks (K = 16)
def test_the_short_nystrom_path_counts_its_k_by_k_products(n):
    """Every matmul of the short path by hand, forward; every operand needs a gradient, so the step is 3x."""
    dim, heads, landmarks, iters = 32, 4, 16, 6
    d = dim // heads
    attn = NystromAttention(dim=dim, dim_head=d, heads=heads, num_landmarks=landmarks, pinv_iterations=iters,
                            residual=True, dropout=0.0)
    x = torch.randn(1, n, dim, requires_grad=True)
    k = n + 1 if n < landmarks else n
    kernel = attn.res_conv.weight.shape[2]
    forward = (2 * n * dim * 3 * dim  # to_qkv
               + 2 * heads * n * n * d  # q k^T on the real tokens
               + iters * 4 * 2 * heads * k**3  # four K x K products per pseudo-inverse iteration
               + 2 * heads * k**3  # A Z
               + 2 * heads * k * n * d  # A v (v's padding class is 0)
               + 2 * heads * k * k * d  # (A Z)(A v)
               + 2 * d * heads * n * kernel  # residual conv, one channel per head
               + 2 * n * dim * dim)  # to_out
    assert flops_of(lambda: attn.short_forward(x).sum().backward()) == 3 * forward


def test_transmil_step_count_drops_only_the_dense_weight_gradients():
    """At 66 patches (a 9 x 9 grid, 82 tokens with cls) torch's counter overstates TransMIL by exactly its grouped
    convs' weight gradients counted dense: PPEG's three depthwise convs (512 groups) and each layer's residual
    conv (8 groups, over the 82 real tokens: the short path runs the conv on them, not on 256)."""
    model = build_model("transmil")
    bag = make_bag(model, 66)
    ours = count_flops(model, bag)
    raw = flops_of(lambda: train_pass(model, bag, label=1), lambda: FlopCounterMode(display=False))
    model.zero_grad(set_to_none=True)
    ppeg = sum(2 * 81 * k * k * 512 for k in (7, 5, 3))  # each depthwise conv's weight gradient, all groups
    res = 2 * 64 * 8 * 82 * model.layer1.attn.res_conv.weight.shape[2]  # one layer's residual conv weight gradient
    assert raw - ours == 511 * ppeg + 2 * 7 * res
