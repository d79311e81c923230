"""The short Nystrom path and TransMIL's bag assembly as they were before their per-op overhead was removed.

Verbatim copies (models/nystrom.py's `_pinv_iterations` and `NystromAttention.short_forward`, models/transmil.py's
`TransMIL._one_bag`), kept so tests/models/test_fast_paths_transmil.py can pin the current code against them bit
for bit: outputs and every gradient.
"""

import math

import torch
import torch.nn.functional as F
from einops import rearrange

from models.nystrom import _pinv_start, _sequence_conv


def _pinv_iterations(x: torch.Tensor, z: torch.Tensor, iters: int) -> torch.Tensor:
    """The library's Moore-Penrose iteration, on whatever matrices it is handed."""
    eye = torch.eye(x.shape[-1], device=x.device, dtype=x.dtype)
    for _ in range(iters):
        xz = x @ z
        z = 0.25 * z @ (13 * eye - (xz @ (15 * eye - (xz @ (7 * eye - xz)))))
    return z


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
    z = _pinv_iterations(attn, _pinv_start(attn, sizes), self.pinv_iterations)
    attn_real = attn[..., 1:] if pad else attn  # v's padding class is 0: drop its column
    out = (attn @ z) @ (attn_real @ v)
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


def transmil_one_bag(self, bag: torch.Tensor) -> torch.Tensor:
    """Logits [1, n_bins] for one bag of real patches [N, D]."""
    h = self.fc(bag).unsqueeze(0)
    n = h.shape[1]
    side = math.ceil(math.sqrt(n))
    h = torch.cat([h, h[:, : side * side - n]], dim=1)
    h = torch.cat([self.cls_token, h], dim=1)
    h = self.layer2(self.pos_layer(self.layer1(h), side))
    return self.classifier(self.norm(h)[:, 0])
