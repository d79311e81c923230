"""MCAT (Chen et al. 2021), MCAT's `MCAT_Surv` with co-attention and concat fusion.

Reference file: models/model_coattn.py of mahmoodlab/MCAT @ b9cca63be83c67de7f95308d54a58f80b78b0da1.

Needs WSI and omics in training and at inference. Layers (data_formats.md section 11):
WSI fc Linear(D->256) ReLU Dropout; one SNN encoder per signature group,
SNNBlock(d_i->256) + SNNBlock(256->256), giving 6 genomic tokens; genomic-guided co-attention
MultiheadAttention(256, 1 head, no dropout) with query = the 6 genomic tokens and key = value =
the patch embeddings (padding masked), giving 6 co-attended tokens and a 6 x N map; a path and
an omic branch, each a post-norm TransformerEncoder (2 layers, d 256, 8 heads, ff 512, ReLU,
dropout) over its 6 tokens, gated attention pooling (256->256->1) over the tokens, and rho
Linear(256->256) ReLU Dropout; concat fusion Linear(512->256) ReLU Linear(256->256) ReLU;
classifier Linear(256->n_bins). PyTorch default initialisation, as the reference (its
MultiheadAttention is a batch-second copy of torch's with the same xavier/zero-bias init; here
torch's own runs batch-first, the same computation).

Deliberate deviations: `aux["coattn"]` holds the softmax co-attention weights [B, 6, N]
(the reference returns the raw pre-softmax scores); one `dropout` rate drives every dropout
(the reference fixes the WSI fc, SNN and attention-branch dropouts at 0.25, which equals the
paper default).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import OMICS, WSI, REFERENCE_OPTIM, SurvivalModel, SurvivalOutput, as_batch, require
from .blocks import GatedAttention, SNNBlock, masked_softmax
from .registry import DEFAULT_OMIC_SIZES, register_model


class TokenBranch(nn.Module):
    """Transformer over 6 tokens, gated attention pooling over them, then rho: [B, 6, d] -> [B, d]."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            d_model=dim, nhead=8, dim_feedforward=2 * dim, dropout=dropout, activation="relu", batch_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.attention = GatedAttention(dim, dim, n_out=1, dropout=dropout)
        self.rho = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.transformer(tokens)
        weights = masked_softmax(self.attention(h).squeeze(-1), None)  # [B, 6]
        pooled = torch.bmm(weights.unsqueeze(1), h).squeeze(1)
        return self.rho(pooled), weights


@register_model
class MCAT(SurvivalModel):
    name = "mcat"
    relative_job_cost = 0.9  # bench.perf sweep, blca fold 0: job-seconds / abmil's (5.2 s)
    train_modalities = frozenset({WSI, OMICS})
    infer_modalities = frozenset({WSI, OMICS})
    batchable = True
    paper_defaults = {**REFERENCE_OPTIM, "dropout": 0.25}

    def __init__(self, *, path_dim=1024, omic_sizes=DEFAULT_OMIC_SIZES, n_bins=4, dropout=0.25):
        super().__init__()
        dim = 256
        self.wsi_net = nn.Sequential(nn.Linear(path_dim, dim), nn.ReLU(), nn.Dropout(dropout))
        self.sig_networks = nn.ModuleList(
            nn.Sequential(SNNBlock(size, dim, dropout), SNNBlock(dim, dim, dropout)) for size in omic_sizes
        )
        self.coattn = nn.MultiheadAttention(embed_dim=dim, num_heads=1, batch_first=True)
        self.path_branch = TokenBranch(dim, dropout)
        self.omic_branch = TokenBranch(dim, dropout)
        self.mm = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU())
        self.classifier = nn.Linear(dim, n_bins)

    def forward(self, wsi=None, mask=None, omics=None) -> SurvivalOutput:
        wsi, mask, omics = as_batch(require(wsi, WSI, self.name), mask, require(omics, OMICS, self.name))
        h_path_bag = self.wsi_net(wsi)  # [B, N, 256]
        h_omic_bag = torch.stack([net(x) for net, x in zip(self.sig_networks, omics)], dim=1)  # [B, 6, 256]
        h_coattn, a_coattn = self.coattn(
            h_omic_bag, h_path_bag, h_path_bag, key_padding_mask=~mask, need_weights=True
        )
        h_path, a_path = self.path_branch(h_coattn)
        h_omic, a_omic = self.omic_branch(h_omic_bag)
        logits = self.classifier(self.mm(torch.cat([h_path, h_omic], dim=-1)))
        return SurvivalOutput(logits, {"coattn": a_coattn, "path_attention": a_path, "omic_attention": a_omic})
