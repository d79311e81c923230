"""AMIL+SNN: MCAT's `MIL_Attention_FC_surv` with `fusion="concat"` (mode `pathomic`, size "small").

Reference file: models/model_set_mil.py of mahmoodlab/MCAT @ b9cca63be83c67de7f95308d54a58f80b78b0da1.

Needs WSI and omics in training and at inference. Layers: the ABMIL path branch (fc Linear(D->512)
ReLU Dropout; gated attention 512->256 -> 1; masked softmax; rho Linear(512->256) ReLU Dropout), a
genomic SNN of two blocks SNNBlock(sum(omic_sizes)->256) + SNNBlock(256->256), concat fusion
Linear(512->256) ReLU Linear(256->256) ReLU, classifier Linear(256->n_bins). PyTorch default
initialisation, as the reference (it calls no init helper, the SNN branch included).
MCAT's released results carry its published row (bench.report, `AMIL+SNN`).

Deliberate deviations:
- One `dropout` rate drives every dropout; the reference fixes the attention-branch and SNN
  dropouts at 0.25, which equals the paper default.
- The genomic input is the six signature groups concatenated, as `snn` takes it (genes in two
  groups appear twice); the reference feeds every genomic column of the `_sig` table once.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import OMICS, WSI, REFERENCE_OPTIM, SurvivalModel, SurvivalOutput, as_batch, require
from .blocks import GatedAttention, SNNBlock, gated_attention_pool
from .registry import DEFAULT_OMIC_SIZES, register_model


@register_model
class ABMILSNN(SurvivalModel):
    name = "abmil_snn"
    relative_job_cost = 1.0  # bench.perf sweep, blca fold 0: job-seconds / abmil's (4.7 s in the same run)
    train_modalities = frozenset({WSI, OMICS})
    infer_modalities = frozenset({WSI, OMICS})
    batchable = True
    paper_defaults = {**REFERENCE_OPTIM, "dropout": 0.25}

    def __init__(self, *, path_dim=1024, omic_sizes=DEFAULT_OMIC_SIZES, n_bins=4, dropout=0.25):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(path_dim, 512), nn.ReLU(), nn.Dropout(dropout))
        self.attention = GatedAttention(512, 256, n_out=1, dropout=dropout)
        self.rho = nn.Sequential(nn.Linear(512, 256), nn.ReLU(), nn.Dropout(dropout))
        self.fc_omic = nn.Sequential(SNNBlock(int(sum(omic_sizes)), 256, dropout), SNNBlock(256, 256, dropout))
        self.mm = nn.Sequential(nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU())
        self.classifier = nn.Linear(256, n_bins)

    def forward(self, wsi=None, mask=None, omics=None) -> SurvivalOutput:
        wsi, mask, omics = as_batch(require(wsi, WSI, self.name), mask, require(omics, OMICS, self.name))
        pooled, weights = gated_attention_pool(self.attention, self.fc(wsi), mask)
        h_path = self.rho(pooled)  # [B, 256]
        h_omic = self.fc_omic(torch.cat(omics, dim=-1))  # [B, 256]
        logits = self.classifier(self.mm(torch.cat([h_path, h_omic], dim=-1)))
        return SurvivalOutput(logits, {"attention": weights})
