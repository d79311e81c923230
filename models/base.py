"""The one call contract every survival model follows.

    out = model(wsi=[B, N, D] | None, mask=[B, N] bool | None, omics=[6 x [B, d_i]] | None)
    out.logits: [B, n_bins] hazard logits (hazards = sigmoid); out.aux: named extras.

`mask` is True for real patches, False for padding; padding never changes a bag's result.
A single unbatched bag ([N, D], omics 1-D) gives logits [1, n_bins]. Class attributes declare
what the trainer needs to know: modalities, whether bags may be batched, paper defaults, and
the Optuna search space. `extra_loss` adds a model's own terms to the shared NLL, per patient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

WSI = "wsi"
OMICS = "omics"

# Settings the trainer consumes; every other key of a hyperparameter dict goes to the model.
OPTIM_KEYS = frozenset({"lr", "weight_decay", "epochs", "grad_accum", "l1_reg"})

# MCAT main.py defaults shared by every reference (data_formats.md section 10).
REFERENCE_OPTIM = {"lr": 2e-4, "weight_decay": 1e-5, "epochs": 20, "grad_accum": 32, "l1_reg": 0.0}


@dataclass
class SurvivalOutput:
    logits: torch.Tensor
    aux: dict[str, Any] = field(default_factory=dict)


class SurvivalModel(nn.Module):
    """Base class: subclasses set the class attributes and implement `forward`."""

    name: ClassVar[str] = ""
    train_modalities: ClassVar[frozenset[str]] = frozenset({WSI})
    infer_modalities: ClassVar[frozenset[str]] = frozenset({WSI})
    batchable: ClassVar[bool] = True
    # Padded patches that one more forward + backward pass costs on a CPU, measured: the trainer cuts a
    # step's micro-batches where padding would cost more (a speed setting). None: the fewest passes.
    cpu_pass_cost: ClassVar[float | None] = None
    # Seconds of a quick-profile job per patient relative to ABMIL's (measured on a 2-core CPU): the
    # sweep starts the longest jobs first and weighs its ETA by it. Scheduling only, never a result.
    relative_job_cost: ClassVar[float] = 1.0
    paper_defaults: ClassVar[dict[str, Any]] = dict(REFERENCE_OPTIM)

    @staticmethod
    def search_space(trial) -> dict[str, Any]:
        """Optuna search space shared by the baselines; models may override."""
        return {
            "lr": trial.suggest_float("lr", 5e-5, 1e-3, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        }

    @classmethod
    def prepare(cls, omics: list[np.ndarray], bins: np.ndarray, event: np.ndarray) -> dict[str, Any]:
        """Fit-time preparation on the training fold only; returns extra constructor kwargs."""
        return {}

    def extra_loss(self, out: SurvivalOutput, omics: list[torch.Tensor] | None) -> torch.Tensor | None:
        """Model-specific loss terms per patient ([B]) added to the NLL; None for none."""
        return None


def as_batch(
    wsi: torch.Tensor | None, mask: torch.Tensor | None, omics: list[torch.Tensor] | None
) -> tuple[torch.Tensor | None, torch.Tensor | None, list[torch.Tensor] | None]:
    """Lift an unbatched bag to a batch of one and build an all-True mask when none is given."""
    if wsi is not None:
        if wsi.dim() == 2:
            wsi = wsi.unsqueeze(0)
            mask = None if mask is None else mask.view(1, -1)
        if wsi.dim() != 3:
            raise ValueError(f"wsi must be [N, D] or [B, N, D], got shape {tuple(wsi.shape)}")
        if mask is None:
            mask = torch.ones(wsi.shape[:2], dtype=torch.bool, device=wsi.device)
        mask = mask.to(torch.bool)
    if omics is not None:
        omics = [o.unsqueeze(0) if o.dim() == 1 else o for o in omics]
    return wsi, mask, omics


def require(value, modality: str, model_name: str):
    """Raise a clear error when a model is called without a modality it needs."""
    if value is None:
        raise ValueError(f"model {model_name!r} needs `{modality}` at this stage, got None")
    return value
