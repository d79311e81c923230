"""CLAM-SB for survival: MOTCat's `CLAM_SB`, with CLAM's instance loss and bag weight.

Reference files: models/model_clam.py of Innse/MOTCat @ 97e89b9c55028dc535148292e241f74702295c84 (the commit that
holds it: MOTCat's model commit 712e03d7dcef750aadcdb637094f81e89f55405c, which models/motcat.py follows, does not);
the instance loss and bag weight of mahmoodlab/CLAM @ 53e2409d4a8189c682c173382964a85f114f923c.

WSI only, in training and at inference. Layers (size "small" = [1024, 256, 256], gated): fc
Linear(D->256) ReLU Dropout; gated attention 256->256 (Dropout on both branches) -> 1; masked softmax;
bag classifier Linear(256->n_bins) on the attention-pooled 256-d vector, read as hazard logits
(hazards = sigmoid, S = cumprod(1 - h)); one instance classifier Linear(256->2) per bin. Every Linear is
xavier-normal with zero bias (the reference's `initialize_weights`).

Instance loss on survival: no patch labels exist, so CLAM's pseudo-labels stand in. The bag label is
the patient's discrete survival bin (MOTCat's `disc_label`), censored or not. `inst_eval` runs for that
bin only: its instance classifier learns the k_sample = 8 most attended patches as class 1 and the 8
least attended as class 0, with cross-entropy averaged over the 16; with `subtyping` off (the
reference default) the other bins' classifiers get no term, and nothing at inference reads any of
them. The pseudo-labels only sharpen the attention of the bin the patient falls in: a censored
patient's bin is where follow-up ended, not where death came. CLAM trains `bag_weight` (0.7) x bag
loss + 0.3 x instance loss; here the trainer adds `label_loss` = (0.3 / 0.7) x instance loss to the
NLL, the same objective divided by 0.7 (Adam is blind to the factor, up to eps and weight decay).

Deliberate deviations:
- MOTCat defines the class but wires it to no trainer; the loss weighting follows CLAM's trainer.
- A bag of fewer than 8 patches uses all of them as top and as bottom (k = its size): the reference's
  `topk` fails there. Such a bag's pseudo-labels contradict each other and its instance loss is ~log 2.
- The reference's `dropout` is a switch for 0.25; here a rate, 0.25 by default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import WSI, REFERENCE_OPTIM, SurvivalModel, SurvivalOutput, as_batch, require
from .blocks import GatedAttention, gated_attention_pool
from .registry import DEFAULT_OMIC_SIZES, register_model


@register_model
class CLAMSB(SurvivalModel):
    name = "clam_sb"
    relative_job_cost = 0.45  # bench.perf sweep, blca fold 0: job-seconds / abmil's (4.7 s in the same run)
    train_modalities = frozenset({WSI})
    infer_modalities = frozenset({WSI})
    batchable = True
    paper_defaults = {**REFERENCE_OPTIM, "dropout": 0.25}

    def __init__(self, *, path_dim=1024, omic_sizes=DEFAULT_OMIC_SIZES, n_bins=4, dropout=0.25,
                 k_sample=8, bag_weight=0.7):
        super().__init__()
        if not 0.0 < bag_weight <= 1.0:
            raise ValueError(f"bag_weight must lie in (0, 1], got {bag_weight}")
        self.k_sample, self.bag_weight = int(k_sample), float(bag_weight)
        self.fc = nn.Sequential(nn.Linear(path_dim, 256), nn.ReLU(), nn.Dropout(dropout))
        self.attention = GatedAttention(256, 256, n_out=1, dropout=dropout)
        self.classifier = nn.Linear(256, n_bins)
        self.instance_classifiers = nn.ModuleList(nn.Linear(256, 2) for _ in range(n_bins))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, wsi=None, mask=None, omics=None) -> SurvivalOutput:
        wsi, mask, _ = as_batch(require(wsi, WSI, self.name), mask, None)
        h = self.fc(wsi)  # [B, N, 256]
        pooled, weights = gated_attention_pool(self.attention, h, mask)
        # Each bag's k most and least attended real patches; a bag shorter than k keeps its first len rows.
        k = min(self.k_sample, h.shape[1])
        top = weights.masked_fill(~mask, -1.0).topk(k, dim=1).indices
        bottom = weights.masked_fill(~mask, 2.0).topk(k, dim=1, largest=False).indices
        valid = torch.arange(k, device=h.device) < mask.sum(1, keepdim=True).clamp(max=k)

        def rows(idx):
            return torch.gather(h, 1, idx.unsqueeze(-1).expand(-1, -1, h.shape[-1]))

        aux = {"attention": weights, "top": rows(top), "bottom": rows(bottom), "valid": valid}
        return SurvivalOutput(self.classifier(pooled), aux)

    def label_loss(self, out: SurvivalOutput, bins: torch.Tensor) -> torch.Tensor:
        """Per patient: the instance classifier of its bin on its top (class 1) and bottom (class 0)
        patches, cross-entropy averaged over them, weighted against the NLL as CLAM weights it."""
        bins = bins.long().view(-1)
        weight = torch.stack([c.weight for c in self.instance_classifiers])[bins]  # [B, 2, 256]
        bias = torch.stack([c.bias for c in self.instance_classifiers])[bins]  # [B, 2]
        inst = torch.cat([out.aux["top"], out.aux["bottom"]], dim=1)  # [B, 2k, 256]
        logits = torch.einsum("bkd,bcd->bkc", inst, weight) + bias.unsqueeze(1)
        k = out.aux["top"].shape[1]
        target = torch.cat([torch.ones(k), torch.zeros(k)]).long().to(logits.device).expand(len(bins), -1)
        ce = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # [B, 2k]
        valid = torch.cat([out.aux["valid"], out.aux["valid"]], dim=1).to(ce.dtype)
        instance_loss = (ce * valid).sum(1) / valid.sum(1)
        return (1.0 - self.bag_weight) / self.bag_weight * instance_loss
