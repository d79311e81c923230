"""Nystrom attention with an exact short-sequence path (TransMIL's attention, and later CMTA's).

`nystrom_attention.NystromAttention` pads every sequence to a multiple of its landmarks with zero
tokens at the front. For a sequence of n <= num_landmarks tokens each landmark is one token, and the
(m - n) padding tokens all have q = k = v = 0 (`to_qkv` has no bias). So every matrix the library
builds -- the three softmaxes (all equal to A = softmax(q k^T) here), the Moore-Penrose iterates and
their products -- repeats the padding tokens' row and column: it lies in the algebra
{E B E^T + a D}, E the m x K class indicator (class 0 = the padding, one class per real token,
K = n + 1), D the padding's diagonal. M -> C(M) = B S + a J0 (S = class sizes, J0 = e0 e0^T) is an
algebra homomorphism onto K x K matrices (C(M1 M2) = C(M1) C(M2), C(I) = I, C(M^T) = S^-1 C(M)^T S),
and M E c = E C(M) c. Values are class-constant (v = E v_K with v_K[0] = 0), so the real rows of
(A pinv(A)) (A v) equal those of (C Z)(C v_K) computed in K dimensions:

- C(A) = row softmax of the K x K scores with log(class size) added to the padding's column;
- the pseudo-inverse starts from the same scale (max row sum times max column sum of |A|, read off C
  with the class sizes) and runs the same iterations on K x K matrices;
- q, k and v are projected for the real tokens only; the residual conv sees the same zeros.

The library's own path, on CPU, gets the residual conv's weight gradient wrong at some padded lengths
(a oneDNN depthwise-conv bug, see `_sequence_conv`; 256 is one of them, so every short bag was hit).
This path computes it right; the tests pin it against the library with oneDNN disabled.

Above num_landmarks tokens, with a mask, or when attention matrices are asked for, the library runs.
The parameters are the library's (`to_qkv`, `to_out`, `res_conv`), so official weights load.

One deliberate difference: the library scales the pseudo-inverse's start by a maximum over the whole
batch (and heads); this path takes it per bag (over heads), so a batch gives each bag its own result.
With one bag per call, as TransMIL runs, the two are the same computation. Output dropout is drawn on
the padded [b, m, dim] tensor as the library does, so training draws the same masks.
"""

from __future__ import annotations

import nystrom_attention
import torch
import torch.nn.functional as F
from einops import rearrange


def _pinv_start(x: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """The library's first iterate x^T / (max row sum * max column sum of |x|), in class coordinates.

    `x` is C(M) [b, h, K, K], `sizes` the class sizes [K]; maxima are per bag (over heads and rows).
    """
    a = x.abs()
    row_sums = a.sum(dim=-1)  # a row of class r sums to sum_c C[r, c]
    col_sums = (sizes[:, None] * a).sum(dim=-2) / sizes  # a column of class c: sum_r S_r C[r, c] / S_c
    scale = row_sums.amax(dim=(-2, -1)) * col_sums.amax(dim=(-2, -1))
    transposed = x.transpose(-1, -2) * sizes[None, :] / sizes[:, None]  # C(M^T) = S^-1 C^T S
    return transposed / scale[:, None, None, None]


def _pinv_iterations(x: torch.Tensor, z: torch.Tensor, iters: int) -> torch.Tensor:
    """The library's Moore-Penrose iteration, on [B, K, K] matrices: the same products and differences in
    the same order; the constant matrices 7I, 13I, 15I are built once rather than per iteration."""
    eye = torch.eye(x.shape[-1], device=x.device, dtype=x.dtype)
    eye7, eye13, eye15 = 7 * eye, 13 * eye, 15 * eye
    for _ in range(iters):
        xz = torch.bmm(x, z)
        z = torch.bmm(0.25 * z, eye13 - torch.bmm(xz, eye15 - torch.bmm(xz, eye7 - xz)))
    return z


def _sequence_conv(v: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`res_conv(v)` (a depthwise (k x 1) conv along the tokens) as a grouped conv1d.

    Same sums as the library's Conv2d. Conv2d is avoided here because oneDNN's depthwise weight
    gradient for this shape is wrong on CPU at some sequence lengths (off by 4-18% at 46, 61, ...,
    256 = 46 + 15j tokens, torch 2.13.0, fp32; correct with oneDNN disabled); conv1d is not.
    """
    b, h, n, d = v.shape
    x = v.permute(0, 3, 1, 2).reshape(b * d, h, n)
    y = F.conv1d(x, weight.view(h, 1, -1), padding=weight.shape[2] // 2, groups=h)
    return y.view(b, d, h, n).permute(0, 2, 3, 1)


class NystromAttention(nystrom_attention.NystromAttention):
    """The library's module, with the exact K-dimensional path for n <= num_landmarks tokens."""

    def forward(self, x, mask=None, return_attn=False, return_attn_matrices=False):
        if mask is not None or return_attn or return_attn_matrices or x.shape[1] > self.num_landmarks:
            return super().forward(x, mask=mask, return_attn=return_attn, return_attn_matrices=return_attn_matrices)
        return self.short_forward(x)

    def short_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Exact output for [b, n, dim] with n <= num_landmarks (see the module docstring)."""
        b, n, _ = x.shape
        pad = self.num_landmarks - n
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in (q, k, v))
        sim = (q * self.scale) @ k.transpose(-1, -2)  # [b, h, n, n]
        if pad:
            # class 0 = the padding tokens: their scores with anything are 0, counted `pad` times
            sizes = torch.ones(n + 1, device=x.device, dtype=x.dtype)
            sizes[0] = pad
            sim = F.pad(sim, (1, 0, 1, 0)) + sizes.log()
        else:
            sizes = torch.ones(n, device=x.device, dtype=x.dtype)
        attn = sim.softmax(dim=-1)  # C(A)
        z = _pinv_start(attn, sizes)
        # Heads folded into the batch for the 27 products below: bmm is the kernel matmul calls on these same
        # [b h, K, K] operands, without the expand, reshape and view autograd nodes matmul adds around each one.
        attn, z, v_heads = (t.reshape(b * self.heads, *t.shape[-2:]) for t in (attn, z, v))
        z = _pinv_iterations(attn, z, self.pinv_iterations)
        attn_real = attn[..., 1:] if pad else attn  # v's padding class is 0: drop its column
        out = torch.bmm(torch.bmm(attn, z), torch.bmm(attn_real, v_heads)).view(b, self.heads, -1, v.shape[-1])
        if pad:
            out = out[..., 1:, :]
        if self.residual:
            out = out + _sequence_conv(v, self.res_conv.weight)  # the padding's v is 0, as the conv's own padding
        out = self.to_out[0](rearrange(out, "b h n d -> b n (h d)"))
        if pad and self.training and self.to_out[1].p > 0:
            # draw dropout on the library's [b, m, dim] shape so the same masks fall on the real rows
            out = self.to_out[1](F.pad(out, (0, 0, pad, 0)))[:, -n:]
        else:
            out = self.to_out[1](out)
        return out
