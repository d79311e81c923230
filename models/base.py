"""The one call contract every survival model follows.

    out = model(wsi=[B, N, D] | None, mask=[B, N] bool | None, omics=[6 x [B, d_i]] | None)
    out.logits: [B, n_bins] hazard logits (hazards = sigmoid); out.aux: named extras.

`mask` is True for real patches, False for padding; padding never changes a bag's result.
A single unbatched bag ([N, D], omics 1-D) gives logits [1, n_bins]. Class attributes declare
what the trainer needs to know: modalities, whether bags may be batched, paper defaults, and
the Optuna search space. `extra_loss` adds a model's own terms to the shared NLL, per patient;
`label_loss` adds those that need the patient's bin.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

WSI = "wsi"
OMICS = "omics"
CLINICAL = "clinical"  # the table's patient covariates (age, sex, subtype): raw, encoded by the model's prepare

# Settings the trainer consumes; every other key of a hyperparameter dict goes to the model.
# `optimizer`: "adam" (every reference but one, and the default) or "sgd" (momentum 0.9, CMTA's).
OPTIM_KEYS = frozenset({"lr", "weight_decay", "epochs", "grad_accum", "l1_reg", "optimizer"})

# MCAT main.py defaults shared by every reference (data_formats.md section 10).
REFERENCE_OPTIM = {"lr": 2e-4, "weight_decay": 1e-5, "epochs": 20, "grad_accum": 32, "l1_reg": 0.0}


@dataclass
class SurvivalOutput:
    logits: torch.Tensor
    aux: dict[str, Any] = field(default_factory=dict)


class SurvivalModel(nn.Module):
    """Base class: subclasses set the class attributes and implement `forward`."""

    name: ClassVar[str] = ""
    estimator: ClassVar[bool] = False  # True: fitted outside torch, see SurvivalEstimator
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
    clinical_columns: ClassVar[tuple[str, ...]] = ()  # table covariates read (modality CLINICAL); the sweep checks them

    @staticmethod
    def search_space(trial) -> dict[str, Any]:
        """Optuna search space shared by the baselines; models may override."""
        return {
            "lr": trial.suggest_float("lr", 5e-5, 1e-3, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        }

    @classmethod
    def paper_params(cls, cohort: str) -> dict[str, Any]:
        """The reference hyperparameters for `cohort`: `paper_defaults` unless a reference set them per cohort."""
        return dict(cls.paper_defaults)

    @classmethod
    def prepare(cls, omics: list[np.ndarray], bins: np.ndarray, event: np.ndarray) -> dict[str, Any]:
        """Fit-time preparation on the training fold only; returns extra constructor kwargs."""
        return {}

    def extra_loss(self, out: SurvivalOutput, omics: list[torch.Tensor] | None) -> torch.Tensor | None:
        """Model-specific loss terms per patient ([B]) added to the NLL; None for none."""
        return None

    def label_loss(self, out: SurvivalOutput, bins: torch.Tensor) -> torch.Tensor | None:
        """Terms per patient ([B]) that need the patient's discrete bin (CLAM's instance loss), added
        to the NLL in training only; None for none."""
        return None


class SurvivalEstimator(ABC):
    """The contract of a model fitted outside torch in one call (e.g. sksurv's Coxnet), registered like a network.

    The trainer dispatches on `estimator`: instead of epochs of gradient steps it calls `fit(omics, time,
    event, clinical=...)` once on the training side (omics z-scored there, event 1 = death) and then its `on_epoch` once;
    it scores with `predict(omics, times) -> (risk [n], survival [n, len(times)])`, survival P(T >= t) at
    the bin edges, so predictions.csv, the C-index, the KM split and the Brier score read it as they read a
    network's. `state_dict`/`load_state_dict` hold what the fit learned as tensors, so a fold model is saved
    and reloaded as a network is. The constructor takes the keywords `create_model` passes; the class
    attributes mean what they mean on SurvivalModel (`paper_defaults` only needs the model's own keys).
    """

    name: ClassVar[str] = ""
    estimator: ClassVar[bool] = True
    train_modalities: ClassVar[frozenset[str]] = frozenset({OMICS})
    infer_modalities: ClassVar[frozenset[str]] = frozenset({OMICS})
    batchable: ClassVar[bool] = False
    cpu_pass_cost: ClassVar[float | None] = None
    relative_job_cost: ClassVar[float] = 1.0
    paper_defaults: ClassVar[dict[str, Any]] = {}
    clinical_columns: ClassVar[tuple[str, ...]] = ()
    state_keys: ClassVar[tuple[str, ...]] = ("coef",)  # the fitted arrays state_dict holds; "coef" among them

    @staticmethod
    @abstractmethod
    def search_space(trial) -> dict[str, Any]:
        """Optuna search space of the model's own keys."""

    @classmethod
    def prepare(cls, omics: list[np.ndarray], bins: np.ndarray, event: np.ndarray,
                clinical: pd.DataFrame | None = None) -> dict[str, Any]:
        """Fit-time preparation on the training side; a model that reads `clinical` gets the raw frame as
        `clinical=` and returns its encoding here, so the encoding travels in the saved model's kwargs."""
        return {}

    @classmethod
    def paper_params(cls, cohort: str) -> dict[str, Any]:
        return dict(cls.paper_defaults)

    @abstractmethod
    def fit(self, omics: list[np.ndarray], time: np.ndarray, event: np.ndarray,
            clinical: pd.DataFrame | None = None) -> "SurvivalEstimator":
        """Fit on the training side; returns self. `clinical`: the raw covariates, for models that read them."""

    @abstractmethod
    def predict(self, omics: list[np.ndarray], times: np.ndarray,
                clinical: pd.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(risk [n], higher = worse; survival P(T >= t) [n, len(times)])."""

    @abstractmethod
    def coefficients_expected(self) -> tuple[int, str]:
        """How many coefficients a fit of this configuration has, and what they are (for load's error)."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What the fit learned (the `state_keys` attributes), as float64 tensors."""
        return {k: torch.as_tensor(getattr(self, k), dtype=torch.float64) for k in self.state_keys}

    def load_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True):
        """Restore a `state_dict`, refusing one whose keys or coefficient count do not fit this model."""
        if strict and set(state) != set(self.state_keys):
            raise RuntimeError(f"{self.name} state needs {', '.join(self.state_keys)}, got {sorted(state)}")
        n, what = self.coefficients_expected()
        if len(state["coef"]) != n:
            raise RuntimeError(f"{self.name} state has {len(state['coef'])} coefficients for {n} {what}")
        for k, v in state.items():
            setattr(self, k, v.numpy())
        return self

    def eval(self) -> "SurvivalEstimator":
        """No train/eval modes: a fitted estimator scores the same either way."""
        return self

    def to(self, device) -> "SurvivalEstimator":
        """Fitted on the CPU whatever the sweep's device."""
        return self


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
