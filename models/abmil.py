"""ABMIL: gated attention MIL, as MCAT's `MIL_Attention_FC_surv` (mode `path`, size "small").

Reference file: models/model_set_mil.py of mahmoodlab/MCAT @ b9cca63be83c67de7f95308d54a58f80b78b0da1.

WSI only, in training and at inference. Layers (data_formats.md section 11):
fc Linear(D->512) ReLU Dropout; gated attention 512->256 (Dropout on both branches) -> 1;
masked softmax over patches; rho Linear(512->256) ReLU Dropout; classifier Linear(256->n_bins).
PyTorch default initialisation, as the reference (it calls no init helper).

Deliberate deviation: the reference fixes the attention-branch dropout at 0.25 whatever its
`dropout` argument; here one `dropout` rate drives every dropout, so the two agree at the
paper default 0.25 and a tuned rate applies everywhere.
"""

from __future__ import annotations

from torch import nn

from .base import WSI, REFERENCE_OPTIM, SurvivalModel, SurvivalOutput, as_batch, require
from .blocks import GatedAttention, gated_attention_pool
from .registry import DEFAULT_OMIC_SIZES, register_model


@register_model
class ABMIL(SurvivalModel):
    name = "abmil"
    train_modalities = frozenset({WSI})
    infer_modalities = frozenset({WSI})
    batchable = True
    # One padded pass of 8 blca bags computes 1.8x their real patches; on the 2-core machine (one thread)
    # a quick-profile step of 8 bags took 68-71 ms in one pass, 46-52 ms cut at 64.
    cpu_pass_cost = 64.0
    paper_defaults = {**REFERENCE_OPTIM, "dropout": 0.25}

    def __init__(self, *, path_dim=1024, omic_sizes=DEFAULT_OMIC_SIZES, n_bins=4, dropout=0.25):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(path_dim, 512), nn.ReLU(), nn.Dropout(dropout))
        self.attention = GatedAttention(512, 256, n_out=1, dropout=dropout)
        self.rho = nn.Sequential(nn.Linear(512, 256), nn.ReLU(), nn.Dropout(dropout))
        self.classifier = nn.Linear(256, n_bins)

    def forward(self, wsi=None, mask=None, omics=None) -> SurvivalOutput:
        wsi, mask, _ = as_batch(require(wsi, WSI, self.name), mask, None)
        h = self.fc(wsi)  # [B, N, 512]
        pooled, weights = gated_attention_pool(self.attention, h, mask)
        return SurvivalOutput(self.classifier(self.rho(pooled)), {"attention": weights})
