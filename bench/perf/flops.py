"""FLOPs of a training step as the CPU does them: torch's counter, with grouped convolutions counted per group.

`torch.utils.flop_counter.FlopCounterMode` counts matmuls (mm, bmm, addmm, baddbmm, attention) and convolutions,
not elementwise ops. Its convolution backward counts a grouped convolution's weight gradient as a dense one: it
multiplies the input channels by the output channels, where each group sees only its own, so a depthwise conv's
weight gradient (TransMIL's PPEG, 512 groups) comes out 512 times its work and the Nystrom residual conv's (8
groups) 8 times. `flop_counter` swaps in the same formula divided by the groups. Everything else is the counter's
own: the short Nystrom path's K x K products (models/nystrom.py) are bmm calls on the K x K matrices it builds,
counted as such; tests/test_perf_flops.py pins both against hand counts.
"""

from __future__ import annotations

from torch.ops import aten
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count


def conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                       _output_padding, groups, output_mask, out_shape=None, **kwargs) -> int:
    """torch's `conv_backward_flop` (input gradient as the transposed conv, weight gradient as a conv of the
    input by the output gradient), with the weight gradient's channel product taken per group."""

    def t(shape):
        return [shape[1], shape[0], *shape[2:]]

    flops = 0
    if output_mask[0]:
        flops += conv_flop_count(grad_out_shape, w_shape, out_shape[0], not transposed)
    if output_mask[1]:
        x, w = (grad_out_shape, x_shape) if transposed else (x_shape, grad_out_shape)
        flops += conv_flop_count(t(x), t(w), t(out_shape[1]), transposed=False) // groups
    return flops


def flop_counter() -> FlopCounterMode:
    """A silent `FlopCounterMode` with grouped convolutions' backward counted per group."""
    return FlopCounterMode(display=False, custom_mapping={aten.convolution_backward: conv_backward_flop})
