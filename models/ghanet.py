"""G-HANet (Wang et al., IEEE TMI 2025): genome-informed hyper-attention survival from WSIs alone.

Follows the official code (ZacharyWang-007/G-HANet @ 54020e8050ec3688f4485033f20f4b9077ee5f7e:
`G_HANet_Surv`, `Reconstruction_Net`, `Hyper_attention`, `attention_modules`; docs/ghanet.md sections 2-5).
Two branches read the bag:

- CAB (cross-modal associating branch): 6 learnable tokens, one per gene group, cross-attend to
  the patches in two rounds that share ONE attention module (as published). The final tokens G
  are decoded into the 6 groups' selected genes (training-only targets), and the round-2
  pre-softmax logits S tell which patches each token relates to.
- HSB (hyper-attention survival branch): a hypergraph with 6 hyperedges whose incidence averages
  gated-attention patch weights E1 with the softmax over each token's top-k patches of S (E2,
  detached, so the survival loss reaches CAB only through G). Hyperedge features go through a
  residual MLP, are averaged with G, pass one transformer block and a per-token head, and are
  flattened into hazard logits.

Genomics never enter `forward` (inference is WSI-only): they are the reconstruction targets of
`extra_loss`, chosen per training fold by the Welch t-test of `prepare`.

Deliberate deviations from the official code:
- Bags are batched with a patch mask (official: one bag per step). Padding is zeroed on entry and
  masked out of the cross attention, the gated-attention softmax and the top-k, so a padded bag
  gives the result it gets alone.
- Top-k keeps exactly k patches per token (rank < k after a stable descending sort). The official
  code keeps every patch whose logit is >= the k-th largest, so exact ties (duplicated patches)
  can keep more there.
- k = max(1, floor(ratio * N)): the official k = 0 for bags under 5 patches and top-k fails.
- Dropout p is applied in CAB too; the official CAB ignores the model's dropout and hard-codes
  0.25, which is the same value at the default.
- The second cross-attention module that the official CAB builds but never calls (~1.05M
  parameters) is not built; round 2 reuses round 1's module, as published.
- `prepare` runs the t-test on the unique training patients (deterministic); the official code
  runs it on one pass of the weighted sampler's draws (with replacement, so stochastic).
- A group where no feature reaches p < 0.05 keeps its single smallest-p feature, and a group
  where no feature has a defined p (constant features, or a risk group under 2 patients) keeps
  every feature; the official code would build a 0-output decoder there and its MSE would be NaN.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import ttest_ind
from torch import nn

from .base import OMICS, REFERENCE_OPTIM, WSI, SurvivalModel, SurvivalOutput, as_batch, require
from .blocks import GatedAttention, masked_softmax
from .registry import DEFAULT_OMIC_SIZES, N_GROUPS, register_model

DIM = 512
HEADS = 4
DIM_HEAD = 128
HEAD_DIM = 256  # per-token width after the compression head
P_THRESHOLD = 0.05
SCE_EXPONENT = 3
HIGH_RISK_BINS = 2  # bins below this are "high risk" when uncensored


class GEGLUFeedForward(nn.Sequential):
    """Linear d -> 2*mult*d, GEGLU (value * GELU(gate)) -> mult*d, Linear -> d, Dropout."""

    def __init__(self, dim: int = DIM, mult: int = 4, dropout: float = 0.25):
        super().__init__(nn.Linear(dim, dim * mult * 2), GEGLU(), nn.Linear(dim * mult, dim), nn.Dropout(dropout))


class GEGLU(nn.Module):
    """First half of the features gated by GELU of the second half."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = x.chunk(2, dim=-1)
        return value * F.gelu(gate)


class MultiHeadAttention(nn.Module):
    """4 x 128 attention: bias-free q/k/v, biased output linear, dropout on the attention weights.

    Returns the output and the pre-softmax scaled logits [B, heads, Nq, Nk]; keys whose
    `key_mask` is False get exactly zero weight. The softmax runs in float32 (bf16 autocast).
    """

    def __init__(self, dim: int = DIM, heads: int = HEADS, dim_head: int = DIM_HEAD, dropout: float = 0.25):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head, self.scale = heads, dim_head, dim_head**-0.5
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        self.dropout = nn.Dropout(dropout)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], t.shape[1], self.heads, self.dim_head).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        q, k, v = self._split(self.to_q(x)), self._split(self.to_k(context)), self._split(self.to_v(context))
        logits = (q @ k.transpose(-1, -2)) * self.scale
        attn = masked_softmax(_fp32(logits), None if key_mask is None else key_mask[:, None, None, :])
        out = (self.dropout(attn).to(v.dtype) @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return self.to_out(out), logits


class CrossModalAssociatingBranch(nn.Module):
    """CAB (`Reconstruction_Net`): tokens G [B, 6, 512], round-2 logits S, and 6 reconstructions.

    LayerNorms as in the official code: one on the round-1 queries, one on the patch context
    (shared by both rounds), one before each FFN, one on the round-2 queries T + R, one on G.
    """

    def __init__(self, path_dim: int, decoder_sizes: Sequence[int], dropout: float):
        super().__init__()
        self.wsi_net = nn.Sequential(nn.Linear(path_dim, DIM), nn.ReLU(), nn.Dropout(dropout))
        self.tokens = nn.Parameter(torch.randn(1, len(decoder_sizes), DIM))
        self.attn = MultiHeadAttention(dropout=dropout)
        self.ffn0 = GEGLUFeedForward(dropout=dropout)
        self.ffn1 = GEGLUFeedForward(dropout=dropout)
        self.ln_query0 = nn.LayerNorm(DIM)
        self.ln_context = nn.LayerNorm(DIM)
        self.ln_ffn0 = nn.LayerNorm(DIM)
        self.ln_query1 = nn.LayerNorm(DIM)
        self.ln_ffn1 = nn.LayerNorm(DIM)
        self.ln_out = nn.LayerNorm(DIM)
        self.decoders = nn.ModuleList(
            nn.Sequential(nn.Linear(DIM, DIM), nn.LayerNorm(DIM), nn.ELU(), nn.Dropout(dropout), nn.Linear(DIM, d))
            for d in decoder_sizes
        )

    def forward(
        self, wsi: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        context = self.ln_context(self.wsi_net(wsi))
        tokens = self.tokens.expand(wsi.shape[0], -1, -1)
        r, _ = self.attn(self.ln_query0(tokens), context, mask)  # round 1: no residual from T
        r = r + self.ffn0(self.ln_ffn0(r))
        r, logits = self.attn(self.ln_query1(tokens + r), context, mask)  # round 2: same module
        r = r + self.ffn1(self.ln_ffn1(r))
        g = self.ln_out(r)
        recon = [decoder(g[:, i]) for i, decoder in enumerate(self.decoders)]
        return g, logits, recon


@register_model
class GHANet(SurvivalModel):
    """G-HANet survival model; trains on WSI + omics (reconstruction targets), infers from WSI only."""

    name = "ghanet"
    relative_job_cost = 3.3  # bench.perf sweep, blca fold 0: job-seconds / abmil's (5.2 s)
    train_modalities = frozenset({WSI, OMICS})
    infer_modalities = frozenset({WSI})
    batchable = True
    # A quick-profile step of 8 blca bags (one thread, 2-core machine): 262-276 ms in one pass, 244-257 ms cut
    # at 128-512 padded patches. MCAT gained nothing (58-67 ms at 512, 65-74 at 64) and keeps the default.
    cpu_pass_cost = 256.0
    paper_defaults = {**REFERENCE_OPTIM, "dropout": 0.25, "topk_ratio": 0.2, "recon_weight": 0.3}

    def __init__(
        self,
        *,
        path_dim: int = 1024,
        omic_sizes: Sequence[int] = DEFAULT_OMIC_SIZES,
        n_bins: int = 4,
        dropout: float = 0.25,
        recon_masks: Sequence[Any] | None = None,
        topk_ratio: float = 0.2,
        recon_weight: float = 0.3,
    ):
        super().__init__()
        if not 0.0 < topk_ratio <= 1.0:
            raise ValueError(f"topk_ratio must lie in (0, 1], got {topk_ratio}")
        masks = _check_recon_masks(recon_masks, omic_sizes)
        self.topk_ratio, self.recon_weight = float(topk_ratio), float(recon_weight)
        for i, m in enumerate(masks):
            self.register_buffer(f"recon_mask_{i}", m)
        self.cab = CrossModalAssociatingBranch(path_dim, [int(m.sum()) for m in masks], dropout)
        self.wsi_net = nn.Sequential(nn.Linear(path_dim, DIM), nn.LayerNorm(DIM), nn.ReLU(), nn.Dropout(dropout))
        self.gate = GatedAttention(dim=DIM, hidden=256, n_out=1, dropout=0.0)
        self.hyper_mlp = nn.Sequential(  # `Hyper_attention` without its residual
            nn.Linear(DIM, DIM), nn.LayerNorm(DIM), nn.ReLU(), nn.Linear(DIM, DIM), nn.LayerNorm(DIM), nn.ReLU()
        )
        self.attn = MultiHeadAttention(dropout=dropout)
        self.ln_ffn = nn.LayerNorm(DIM)
        self.ffn = GEGLUFeedForward(dropout=dropout)
        self.head = nn.Sequential(nn.Linear(DIM, HEAD_DIM), nn.LayerNorm(HEAD_DIM), nn.ReLU(), nn.Dropout(dropout))
        self.classifier = nn.Linear(len(masks) * HEAD_DIM, n_bins)

    @property
    def recon_masks(self) -> list[torch.Tensor]:
        return [getattr(self, f"recon_mask_{i}") for i in range(N_GROUPS)]

    def forward(self, wsi=None, mask=None, omics=None) -> SurvivalOutput:
        """Hazard logits from the bag alone; `omics` is accepted for the contract and ignored."""
        wsi, mask, _ = as_batch(require(wsi, WSI, self.name), mask, None)
        if not bool(mask.any(dim=1).all()):
            raise ValueError("every bag needs at least one real patch (mask all False in some row)")
        wsi = wsi.masked_fill(~mask.unsqueeze(-1), 0.0)  # padding content can never leak in
        g, attn_logits, recon = self.cab(wsi, mask)
        x = self.wsi_net(wsi)
        morph = masked_softmax(_fp32(self.gate(x).squeeze(-1)), mask)  # E1 [B, N]
        assoc, hyperedges = self._association_weights(attn_logits, mask)  # E2 [B, 6, N]
        incidence = (morph.unsqueeze(1) + assoc) / 2
        p = incidence.to(x.dtype) @ x
        f = (self.hyper_mlp(p) + p + g) / 2  # F = (Y + G) / 2 with Y = U + P
        f = f + self.attn(f, f)[0]  # no pre-LN here, as published
        f = f + self.ffn(self.ln_ffn(f))
        logits = self.classifier(self.head(f).flatten(1))
        aux = {
            "recon": recon,
            "incidence": incidence,
            "morph_weights": morph,
            "assoc_weights": assoc,
            "hyperedges": hyperedges,
        }
        return SurvivalOutput(logits, aux)

    def _association_weights(self, attn_logits: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """E2: per token, softmax of the head-mean logits over its top-k real patches, detached.

        Returns the weights [B, 6, N] and the boolean hyperedge membership [B, 6, N].
        """
        m = _fp32(attn_logits.detach()).mean(dim=1)
        k = torch.floor(mask.sum(dim=1).double() * self.topk_ratio).long().clamp_min(1)
        order = m.masked_fill(~mask.unsqueeze(1), float("-inf")).argsort(dim=-1, descending=True, stable=True)
        in_top = torch.arange(m.shape[-1], device=m.device) < k[:, None, None]
        hyperedges = torch.zeros(m.shape, dtype=torch.bool, device=m.device)
        hyperedges.scatter_(-1, order, in_top.expand_as(m))
        return masked_softmax(m, hyperedges), hyperedges

    def extra_loss(self, out: SurvivalOutput, omics: list[torch.Tensor] | None) -> torch.Tensor:
        """recon_weight * sum over groups of (SCE^3 + MSE) per patient, on the selected genes."""
        _, _, omics = as_batch(None, None, require(omics, OMICS, self.name))
        total = 0.0
        for i, (pred, target, keep) in enumerate(zip(out.aux["recon"], omics, self.recon_masks, strict=True)):
            if target.shape[-1] != keep.numel():
                raise ValueError(f"omics group {i} has {target.shape[-1]} features, the model expects {keep.numel()}")
            pred, target = _fp32(pred), _fp32(target[:, keep])
            cos = (F.normalize(pred, dim=-1) * F.normalize(target, dim=-1)).sum(dim=-1)
            total = total + (1.0 - cos).pow(SCE_EXPONENT) + (pred - target).pow(2).mean(dim=-1)
        return self.recon_weight * total

    @classmethod
    def prepare(cls, omics: list[np.ndarray], bins: np.ndarray, event: np.ndarray) -> dict[str, Any]:
        """Welch t-test per feature between high- and low-risk training patients; p < 0.05 are targets.

        High risk: uncensored patients in bins 0-1. Low risk: every patient in bins 2-3.
        Censored patients in bins 0-1 are left out (their risk is unknown).
        """
        bins, event = np.asarray(bins), np.asarray(event).astype(bool)
        if len(omics) != N_GROUPS or bins.shape != event.shape or any(len(g) != len(bins) for g in omics):
            raise ValueError(
                f"prepare needs {N_GROUPS} omics groups with one row per patient ({len(bins)} bins, "
                f"{len(event)} events), got rows {[len(g) for g in omics]}"
            )
        high = event & (bins < HIGH_RISK_BINS)
        low = bins >= HIGH_RISK_BINS
        masks = [_differential_mask(np.asarray(g, dtype=float)[high], np.asarray(g, dtype=float)[low]) for g in omics]
        return {"recon_masks": masks}


def _fp32(t: torch.Tensor) -> torch.Tensor:
    """Upcast half precision to float32 (the shared masked_softmax's fill value overflows bf16)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _differential_mask(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """Features with Welch p < 0.05; never empty (see the module docstring for the fallbacks)."""
    with warnings.catch_warnings():
        # Constant features and groups under 2 patients give NaN p; handled below.
        warnings.simplefilter("ignore", RuntimeWarning)
        p = np.atleast_1d(ttest_ind(high, low, axis=0, equal_var=False).pvalue)
    keep = p < P_THRESHOLD
    if keep.any():
        return keep
    if np.isnan(p).all():
        return np.ones_like(keep)
    keep[np.nanargmin(p)] = True
    return keep


def _check_recon_masks(recon_masks: Sequence[Any] | None, omic_sizes: Sequence[int]) -> list[torch.Tensor]:
    """One boolean mask per group, sized like the group, each selecting at least one feature."""
    sizes = [int(s) for s in omic_sizes]
    if len(sizes) != N_GROUPS:
        raise ValueError(f"G-HANet needs {N_GROUPS} omics groups, got omic_sizes {sizes}")
    if recon_masks is None:
        return [torch.ones(s, dtype=torch.bool) for s in sizes]
    masks = [torch.as_tensor(np.asarray(m, dtype=bool)) for m in recon_masks]
    if [m.numel() for m in masks] != sizes or any(m.dim() != 1 or not m.any() for m in masks):
        raise ValueError(
            f"recon_masks must be {N_GROUPS} 1-D boolean masks of lengths {sizes}, each selecting at least "
            f"one feature; got lengths {[m.numel() for m in masks]} with {[int(m.sum()) for m in masks]} selected"
        )
    return masks
