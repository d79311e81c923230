"""MOTCat (Xu & Chen, ICCV 2023): MCAT with optimal-transport co-attention.

Reference file: models/model_motcat.py (`MOTCAT_Surv`, concat fusion) of Innse/MOTCat @
712e03d7dcef750aadcdb637094f81e89f55405c.

Needs WSI and omics in training and at inference. Layers: WSI fc Linear(D->256) ReLU Dropout; one SNN
encoder per signature group, SNNBlock(d_i->256) + SNNBlock(256->256), giving 6 genomic tokens; then,
instead of MCAT's learned co-attention, an unbalanced entropic Sinkhorn transport plan between the
bag's patch embeddings and the 6 genomic tokens (no parameters): each embedding is shifted by its own
minimum, the cost is the squared Euclidean distance divided by its maximum, the marginals uniform,
epsilon `ot_reg` 0.1 and marginal relaxation `ot_tau` 0.5 (POT's `sinkhorn_knopp_unbalanced`, the
reference's solver, in float64 on the CPU). The plan is detached, as in the reference: gradients reach
the embeddings only through the plan-weighted sum of patch embeddings, 6 tokens of plan^T @ patches.
Then MCAT's path and omic branches (2-layer post-norm transformer, d 256, 8 heads, ff 512; gated
attention pooling over the 6 tokens; rho), concat fusion Linear(512->256) ReLU Linear(256->256) ReLU
and the classifier. The reference's optimisation is MCAT's (Adam 2e-4, weight decay 1e-5, 32 patients
per step, 20 epochs); its current trainer runs the full bag (patch micro-batching off), as here.

Batchable: each bag's plan is solved on its real patches alone, so padding never reaches it.

Deliberate deviations: POT >= 0.9.5 defaults to `reg_type="kl"`; the reference's POT had only the
entropy regulariser, so it is asked for explicitly (`reg_type="entropy"`). A one-patch bag runs (the
reference's `squeeze()` drops the patch axis there and fails): its plan is one row, so every
co-attended token is a multiple of that patch's embedding. Where the cost is zero everywhere
(identical shifted embeddings) the cost stays 0 instead of 0/0. `aux["coattn"]` is the plan [B, 6, N],
zero on padding. One `dropout` rate drives every dropout, as in `models/mcat.py` (the reference fixes
the WSI fc and SNN dropouts at 0.25, equal to the default).
"""

from __future__ import annotations

import warnings

import ot
import torch
from torch import nn

from .base import OMICS, WSI, REFERENCE_OPTIM, SurvivalModel, SurvivalOutput, as_batch, require
from .blocks import SNNBlock
from .mcat import TokenBranch
from .registry import DEFAULT_OMIC_SIZES, register_model


def transport_plan(patches: torch.Tensor, genes: torch.Tensor, reg: float, tau: float) -> torch.Tensor:
    """Detached unbalanced Sinkhorn plan [N, 6] between one bag's patches [N, d] and its genomic tokens [6, d]."""
    x = patches.detach()
    y = genes.detach()
    x = x - x.min(dim=-1, keepdim=True).values
    y = y - y.min(dim=-1, keepdim=True).values
    cost = torch.cdist(x, y) ** 2
    cost = cost / cost.max().clamp_min(torch.finfo(cost.dtype).tiny)
    a, b = ot.unif(x.shape[0]), ot.unif(y.shape[0])
    with warnings.catch_warnings():  # POT warns on every entropy call that it ignores `c`, which we never pass
        warnings.filterwarnings("ignore", message="If reg_type = entropy")
        plan = ot.unbalanced.sinkhorn_knopp_unbalanced(
            a, b, cost.double().cpu().numpy(), reg=reg, reg_m=tau, reg_type="entropy"
        )
    return torch.from_numpy(plan).to(device=patches.device, dtype=patches.dtype)


@register_model
class MOTCat(SurvivalModel):
    name = "motcat"
    relative_job_cost = 0.95  # bench.perf sweep, blca fold 0: job-seconds / abmil's (4.7 s in the same run)
    train_modalities = frozenset({WSI, OMICS})
    infer_modalities = frozenset({WSI, OMICS})
    batchable = True
    paper_defaults = {**REFERENCE_OPTIM, "dropout": 0.25}

    def __init__(self, *, path_dim=1024, omic_sizes=DEFAULT_OMIC_SIZES, n_bins=4, dropout=0.25,
                 ot_reg=0.1, ot_tau=0.5):
        super().__init__()
        dim = 256
        self.ot_reg, self.ot_tau = float(ot_reg), float(ot_tau)
        self.wsi_net = nn.Sequential(nn.Linear(path_dim, dim), nn.ReLU(), nn.Dropout(dropout))
        self.sig_networks = nn.ModuleList(
            nn.Sequential(SNNBlock(size, dim, dropout), SNNBlock(dim, dim, dropout)) for size in omic_sizes
        )
        self.path_branch = TokenBranch(dim, dropout)
        self.omic_branch = TokenBranch(dim, dropout)
        self.mm = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU())
        self.classifier = nn.Linear(dim, n_bins)

    def forward(self, wsi=None, mask=None, omics=None) -> SurvivalOutput:
        wsi, mask, omics = as_batch(require(wsi, WSI, self.name), mask, require(omics, OMICS, self.name))
        h_path_bag = self.wsi_net(wsi)  # [B, N, 256]
        h_omic_bag = torch.stack([net(x) for net, x in zip(self.sig_networks, omics)], dim=1)  # [B, 6, 256]
        plan = h_path_bag.new_zeros(wsi.shape[0], h_omic_bag.shape[1], wsi.shape[1])  # [B, 6, N]
        for i, keep in enumerate(mask):
            plan[i, :, keep] = transport_plan(h_path_bag[i, keep], h_omic_bag[i], self.ot_reg, self.ot_tau).T
        h_coattn = torch.bmm(plan, h_path_bag)  # padding has zero plan mass
        h_path, a_path = self.path_branch(h_coattn)
        h_omic, a_omic = self.omic_branch(h_omic_bag)
        logits = self.classifier(self.mm(torch.cat([h_path, h_omic], dim=-1)))
        return SurvivalOutput(logits, {"coattn": plan, "path_attention": a_path, "omic_attention": a_omic})
