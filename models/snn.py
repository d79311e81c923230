"""SNN: the genomic-only self-normalising network (MCAT `max_net`, size "small").

Reference file: models/model_genomic.py of mahmoodlab/MCAT @ b9cca63be83c67de7f95308d54a58f80b78b0da1.

Omics only, in training and at inference. Four blocks [256]*4 of Linear -> ELU ->
AlphaDropout(0.25), classifier Linear(256->n_bins); Linear weights ~ N(0, 1/sqrt(fan_in)) and
biases 0 (`init_snn_weights`). The reference trained it with an L1 penalty of 1e-4 on the
weights (`l1_reg`, applied by the trainer).

Deliberate deviations:
- Both reference repos' SNN classes fail to construct (MCAT's calls `super(MaxNet, ...)`); this
  follows the fixed PORPOISE `SNN`, which has the same layers.
- Input is the six signature groups concatenated (sum(omic_sizes) values, genes that sit in two
  groups appear twice). The reference feeds every genomic column of the `_sig` table once
  instead: nearly the same genes, without the group duplicates.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import OMICS, REFERENCE_OPTIM, SurvivalModel, SurvivalOutput, as_batch, require
from .blocks import SNNBlock, init_snn_weights
from .registry import DEFAULT_OMIC_SIZES, register_model


@register_model
class SNN(SurvivalModel):
    name = "snn"
    relative_job_cost = 0.15  # bench.perf sweep, blca fold 0: job-seconds / abmil's (5.2 s)
    train_modalities = frozenset({OMICS})
    infer_modalities = frozenset({OMICS})
    batchable = True
    paper_defaults = {**REFERENCE_OPTIM, "l1_reg": 1e-4, "dropout": 0.25}

    def __init__(self, *, path_dim=1024, omic_sizes=DEFAULT_OMIC_SIZES, n_bins=4, dropout=0.25):
        super().__init__()
        dims = [int(sum(omic_sizes)), 256, 256, 256, 256]
        self.fc_omic = nn.Sequential(*(SNNBlock(a, b, dropout) for a, b in zip(dims[:-1], dims[1:])))
        self.classifier = nn.Linear(dims[-1], n_bins)
        init_snn_weights(self)

    def forward(self, wsi=None, mask=None, omics=None) -> SurvivalOutput:
        _, _, omics = as_batch(None, None, require(omics, OMICS, self.name))
        x = torch.cat(omics, dim=-1)
        return SurvivalOutput(self.classifier(self.fc_omic(x)))
