"""TransMIL (Shao et al. 2021), as the official szc19990412/TransMIL, with a survival head.

Reference file: models/TransMIL.py of szc19990412/TransMIL @ 9d6aee57c7c72375fb9132dc58cd8c9b0f0a949c.

WSI only, in training and at inference. fc Linear(D->512) ReLU; the bag is padded to the next
square ceil(sqrt N)^2 by repeating its first tokens; a learnable cls token is prepended;
TransLayer x + NystromAttention(LN(x)) (8 heads x 64, 256 landmarks, 6 pinv iterations,
residual conv, dropout 0.1); PPEG (depthwise convs 7/5/3 + identity over the HxW patch grid,
cls passed through); a second TransLayer; LayerNorm; cls -> Linear(512->n_bins) hazard logits.
Attention is the `nystrom-attention` package the official code imports, so it is the same
computation, padding and landmark pooling included; bags of at most 225 patches (256 tokens) take
its exact short-sequence path (models/nystrom.py): the same numbers in K = tokens + 1 dimensions
instead of 256, pinned against the library by tests (outputs and every gradient).

Not batchable: the square padding and the Nystrom landmarks depend on each bag's length (the
package's pseudo-inverse even scales by a maximum over the whole batch), so a padded batch is
run bag by bag on each bag's real patches and gives each bag its own result.

Deliberate deviations: the optimisation is the shared survival setup (REFERENCE_OPTIM, NLL);
the official Lookahead-RAdam, cross-entropy, 200-epoch Camelyon16 training is a classification
setup not used here. `dropout` sets the Nystrom output dropout (official 0.1); `dim` is the
width (official 512; tests narrow it to stay cheap).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .nystrom import NystromAttention
from .base import WSI, REFERENCE_OPTIM, SurvivalModel, SurvivalOutput, as_batch, require
from .registry import DEFAULT_OMIC_SIZES, register_model


class TransLayer(nn.Module):
    """Pre-norm Nystrom self-attention with a residual."""

    def __init__(self, dim: int = 512, dropout: float = 0.1):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = NystromAttention(
            dim=dim, dim_head=dim // 8, heads=8, num_landmarks=dim // 2,
            pinv_iterations=6, residual=True, dropout=dropout,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn(self.norm(x))


class PPEG(nn.Module):
    """Pyramid position encoding: depthwise convs 7, 5, 3 plus identity on the patch grid."""

    def __init__(self, dim: int = 512):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, 7, 1, 3, groups=dim)
        self.proj1 = nn.Conv2d(dim, dim, 5, 1, 2, groups=dim)
        self.proj2 = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, side: int) -> torch.Tensor:
        cls_token, feat = x[:, :1], x[:, 1:]
        grid = feat.transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)
        grid = grid + self.proj(grid) + self.proj1(grid) + self.proj2(grid)
        return torch.cat([cls_token, grid.flatten(2).transpose(1, 2)], dim=1)


@register_model
class TransMIL(SurvivalModel):
    name = "transmil"
    relative_job_cost = 10.5  # bench.perf sweep, blca fold 0: job-seconds / abmil's (5.2 s)
    train_modalities = frozenset({WSI})
    infer_modalities = frozenset({WSI})
    batchable = False
    paper_defaults = {**REFERENCE_OPTIM, "dropout": 0.1}

    def __init__(self, *, path_dim=1024, omic_sizes=DEFAULT_OMIC_SIZES, n_bins=4, dropout=0.1, dim=512):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(path_dim, dim), nn.ReLU())
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.layer1 = TransLayer(dim, dropout)
        self.pos_layer = PPEG(dim)
        self.layer2 = TransLayer(dim, dropout)
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, n_bins)

    def _one_bag(self, bag: torch.Tensor) -> torch.Tensor:
        """Logits [1, n_bins] for one bag of real patches [N, D]."""
        h = self.fc(bag).unsqueeze(0)
        n = h.shape[1]
        side = math.ceil(math.sqrt(n))
        h = torch.cat([self.cls_token, h, h[:, : side * side - n]], dim=1)
        h = self.layer2(self.pos_layer(self.layer1(h), side))
        return self.classifier(self.norm(h)[:, 0])

    def forward(self, wsi=None, mask=None, omics=None) -> SurvivalOutput:
        wsi, mask, _ = as_batch(require(wsi, WSI, self.name), mask, None)
        logits = torch.cat([self._one_bag(bag[keep]) for bag, keep in zip(wsi, mask)])
        return SurvivalOutput(logits)
