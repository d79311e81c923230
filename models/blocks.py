"""Building blocks shared by several models, defined once.

All pooling here is mask-aware: padded patches (mask False) get zero attention weight, so a
padded batch gives each bag the result it would get alone.
"""

from __future__ import annotations

import math

import torch
from torch import nn

def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None, dim: int = -1) -> torch.Tensor:
    """Softmax over `dim` that gives masked-out positions exactly zero weight."""
    if mask is None:
        return torch.softmax(scores, dim=dim)
    # The dtype's own minimum: under bf16 autocast float32's minimum would round to -inf.
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=dim)


class GatedAttention(nn.Module):
    """Ilse et al. gated attention (CLAM `Attn_Net_Gated`): scores = W_c(tanh(W_a h) * sigmoid(W_b h)).

    Returns raw scores [B, N, n_out]; pool with `masked_softmax` over the patch axis.
    """

    def __init__(self, dim: int = 512, hidden: int = 256, n_out: int = 1, dropout: float = 0.0):
        super().__init__()
        self.attention_a = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh())
        self.attention_b = nn.Sequential(nn.Linear(dim, hidden), nn.Sigmoid())
        if dropout > 0:
            self.attention_a.append(nn.Dropout(dropout))
            self.attention_b.append(nn.Dropout(dropout))
        self.attention_c = nn.Linear(hidden, n_out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.attention_c(self.attention_a(h) * self.attention_b(h))


def gated_attention_pool(
    attn: GatedAttention, h: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention-weighted sum over patches: returns pooled [B, D] and weights [B, N]."""
    scores = attn(h).squeeze(-1)  # [B, N]
    weights = masked_softmax(scores, mask, dim=-1)
    return torch.bmm(weights.unsqueeze(1), h).squeeze(1), weights


class SNNBlock(nn.Sequential):
    """Linear -> ELU -> AlphaDropout, as MCAT's `SNN_Block` (ELU, not SELU, as the code has it)."""

    def __init__(self, dim_in: int, dim_out: int, dropout: float = 0.25):
        super().__init__(nn.Linear(dim_in, dim_out), nn.ELU(), nn.AlphaDropout(p=dropout, inplace=False))


def init_snn_weights(module: nn.Module) -> None:
    """MCAT `init_max_weights`: Linear weights ~ N(0, 1/sqrt(fan_in)), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 1.0 / math.sqrt(m.weight.size(1)))
            if m.bias is not None:
                m.bias.data.zero_()
