"""Fit one model on one fold with the reference optimisation, and score patients.

Reference (MCAT/G-HANet): batch of one patient, the loss of each divided by `grad_accum` (32) and
one Adam step per 32 patients, a leftover partial step carried into the next epoch, patients drawn
with replacement, weighted by the inverse frequency of their (bin, censorship) stratum.
Here the patients of one step may travel in padded, masked micro-batches: the step's gradient
is the same sum over patients, so `micro_batch` is a speed setting, never a hyperparameter.
A step's micro-batches are cut by bag size where padding costs more than another pass (`_chunks`);
dropout draws its masks per pass, so another cut draws other masks, never another loss.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from bench.fold import PatientSet
from bench.survival import c_index, nll_loss, survival_curve
from models import CLINICAL, OMICS, WSI, create_model, get_model_class
from models.base import OPTIM_KEYS, SurvivalEstimator, SurvivalModel


class TrainingError(RuntimeError):
    """A job-level failure (e.g. a NaN loss): recorded on the run, the sweep goes on."""


@dataclass
class TrainSettings:
    """Optimisation settings; `micro_batch`, `device` and `precision` change speed, not the maths."""

    lr: float = 2e-4
    weight_decay: float = 1e-5
    epochs: int = 20
    grad_accum: int = 32
    l1_reg: float = 0.0
    alpha: float = 0.0
    optimizer: str = "adam"  # or "sgd" (momentum 0.9), as a model's paper_defaults ask
    seed: int = 1
    micro_batch: int = 8
    device: str = "cpu"
    precision: str = "fp32"
    max_tokens: int | None = None  # padded patches per micro-batch (memory); a longer bag travels alone

    @classmethod
    def from_params(cls, params: dict, **speed) -> "TrainSettings":
        return cls(**{k: v for k, v in params.items() if k in OPTIM_KEYS}, **speed)


@dataclass
class FitResult:
    """Per-epoch mean loss per drawn patient: `train_loss` = `loss_nll` + `loss_aux` (the model's extra
    term, e.g. G-HANet's reconstruction; empty for models without one). The L1 penalty is in none."""

    model: SurvivalModel
    model_kwargs: dict = field(default_factory=dict)  # what `create_model` got (a saved model is rebuilt from it)
    train_loss: list[float] = field(default_factory=list)
    loss_nll: list[float] = field(default_factory=list)
    loss_aux: list[float] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def balanced_draws(bins: np.ndarray, event: np.ndarray, n_epochs: int, gen: torch.Generator) -> list[np.ndarray]:
    """Per epoch, N draws with replacement, weight N / n_stratum over (bin, censorship) strata."""
    strata = 2 * bins + (1 - event)
    counts = np.bincount(strata, minlength=8)
    weights = torch.as_tensor(len(strata) / counts[strata], dtype=torch.double)
    return [torch.multinomial(weights, len(strata), replacement=True, generator=gen).numpy() for _ in range(n_epochs)]


def collate(pset: PatientSet, idx, model_cls: type[SurvivalModel], device: str, for_training: bool):
    """Padded, masked batch of the modalities the model needs at this stage."""
    needs = model_cls.train_modalities if for_training else model_cls.infer_modalities
    wsi = mask = omics = None
    if WSI in needs:
        bags = [pset.bags[i] for i in idx]
        n_max = max(len(b) for b in bags)
        wsi = torch.zeros((len(bags), n_max, bags[0].shape[1]), dtype=torch.float32)
        mask = torch.zeros((len(bags), n_max), dtype=torch.bool)
        for j, b in enumerate(bags):
            wsi[j, : len(b)] = torch.from_numpy(b)
            mask[j, : len(b)] = True
        wsi, mask = wsi.to(device), mask.to(device)
    if OMICS in needs:
        omics = [torch.from_numpy(o[idx]).to(device) for o in pset.omics]
    return wsi, mask, omics


def _runs(sizes: np.ndarray, size: int, max_tokens: int | None, pass_cost: float) -> list[tuple[int, int]]:
    """Cut ascending bag sizes into runs of at most `size` bags (and `max_tokens` padded patches unless alone),
    minimising padded patches + `pass_cost` per run: an exact dynamic programme over the cut points."""
    n = len(sizes)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(max(0, end - size), end):  # longest run first: it wins ties
            k = end - start
            if k > 1 and max_tokens and k * sizes[end - 1] > max_tokens:
                continue
            cost = best[start] + k * float(sizes[end - 1]) + pass_cost
            if cost < best[end]:
                best[end], cut[end] = cost, start
    runs, end = [], n
    while end:
        runs.append((cut[end], end))
        end = cut[end]
    return runs[::-1]


def _chunks(pset: PatientSet, idx: np.ndarray, size: int, max_tokens: int | None = None,
            pass_cost: float | None = None) -> list[np.ndarray]:
    """Split patients into micro-batches of similar bag size; order does not change a sum.

    Sorted by bag size, cut where padding costs more than another pass (`pass_cost`, in padded patches;
    None: the fewest passes, then the least padding). Under `max_tokens`, a micro-batch also holds at most
    that many padded patches (patients x longest bag); a longer bag travels alone.
    """
    if pset.bags is None or size <= 1:
        return [idx[i : i + size] for i in range(0, len(idx), size)]
    sizes = pset.bag_sizes()
    idx = idx[np.argsort(sizes[idx], kind="stable")]
    cost = float(len(idx) * sizes.max() + 1) if pass_cost is None else pass_cost  # above any padding: fewest passes
    return [idx[a:b] for a, b in _runs(sizes[idx], size, max_tokens, cost)]


def _pass_cost(cls: type[SurvivalModel], settings: TrainSettings) -> float | None:
    """The model's measured CPU pass cost; on other devices (not measured) the fewest passes, as before."""
    return cls.cpu_pass_cost if torch.device(settings.device).type == "cpu" else None


def _autocast(settings: TrainSettings):
    if settings.precision == "bf16":
        return torch.autocast(device_type=torch.device(settings.device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def model_kwargs(name: str, train: PatientSet, params: dict) -> dict:
    """What `create_model(name, ...)` gets: input sizes, the model's hyperparameters and its fit-time
    preparation on the training side (e.g. G-HANet's gene filter)."""
    cls = get_model_class(name)
    hparams = {k: v for k, v in params.items() if k not in OPTIM_KEYS}
    path_dim = train.bags[0].shape[1] if train.bags else 1024
    clinical = {"clinical": train.clinical} if CLINICAL in cls.train_modalities else {}
    return dict(path_dim=path_dim, omic_sizes=[o.shape[1] for o in train.omics], **hparams,
                **cls.prepare(train.omics, train.bins, train.event, **clinical))


def make_optimizer(model: SurvivalModel, settings: TrainSettings) -> torch.optim.Optimizer:
    """Adam, or SGD with the momentum 0.9 its one reference (CMTA's `define_optimizer`) fixes."""
    if settings.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    if settings.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=0.9, weight_decay=settings.weight_decay)
    raise ValueError(f"optimizer {settings.optimizer!r}: use 'adam' or 'sgd' (a model's paper_defaults set it)")


def build_model(name: str, kwargs: dict, seed: int) -> SurvivalModel:
    """A seeded model from `model_kwargs`: where `fit` starts."""
    seed_everything(seed)
    return create_model(name, **kwargs)


def fit(name: str, train: PatientSet, params: dict, settings: TrainSettings,
        on_epoch: Callable[[int, SurvivalModel], None] | None = None) -> FitResult:
    """Train `name` on `train` for `settings.epochs`; `on_epoch(epoch, model)` may score or prune."""
    kwargs = model_kwargs(name, train, params)
    if get_model_class(name).estimator:
        return _fit_estimator(name, train, kwargs, on_epoch)
    model = build_model(name, kwargs, settings.seed).to(settings.device)
    cls = type(model)
    micro = settings.micro_batch if cls.batchable else 1
    opt = make_optimizer(model, settings)
    gen = torch.Generator().manual_seed(settings.seed)
    result = FitResult(model, kwargs)
    pending = 0  # patients accumulated since the last step (carried across epochs, as the reference does)
    opt.zero_grad(set_to_none=True)
    for epoch, draws in enumerate(balanced_draws(train.bins, train.event, settings.epochs, gen)):
        model.train()
        total = nll_total = aux_total = 0.0
        has_aux = False
        for start in range(0, len(draws), settings.grad_accum):
            step = draws[start : start + settings.grad_accum]
            for mb in _chunks(train, step, micro, settings.max_tokens, _pass_cost(cls, settings)):
                wsi, mask, omics = collate(train, mb, cls, settings.device, for_training=True)
                bins = torch.as_tensor(train.bins[mb], device=settings.device)
                cens = torch.as_tensor(1 - train.event[mb], device=settings.device, dtype=torch.float32)
                with _autocast(settings):
                    out = model(wsi=wsi, mask=mask, omics=omics)
                    nll = nll_loss(out.logits.float(), bins, cens, settings.alpha)
                    terms = [t for t in (model.extra_loss(out, omics), model.label_loss(out, bins)) if t is not None]
                    extra = sum(terms[1:], terms[0]) if terms else None
                    per_patient = nll if extra is None else nll + extra.float()
                loss = per_patient.sum() / settings.grad_accum
                if settings.l1_reg:
                    loss = loss + len(mb) * settings.l1_reg * sum(p.abs().sum() for p in model.parameters())
                if not torch.isfinite(loss):
                    raise TrainingError(f"{name}: non-finite loss at epoch {epoch} (lr {settings.lr:g}); "
                                        "the run is marked failed, the sweep goes on")
                loss.backward()
                total += float(per_patient.detach().sum())
                nll_total += float(nll.detach().sum())
                if extra is not None:
                    has_aux = True
                    aux_total += float(extra.detach().float().sum())
            pending += len(step)
            if pending >= settings.grad_accum:
                opt.step()
                opt.zero_grad(set_to_none=True)
                pending = 0
        result.train_loss.append(total / len(draws))
        result.loss_nll.append(nll_total / len(draws))
        if has_aux:
            result.loss_aux.append(aux_total / len(draws))
        if on_epoch is not None:
            on_epoch(epoch, model)
    return result


def _fit_estimator(name: str, train: PatientSet, kwargs: dict,
                   on_epoch: Callable[[int, SurvivalEstimator], None] | None) -> FitResult:
    """One fit of a model fitted outside torch (the registry's SurvivalEstimator), then `on_epoch` once."""
    model = create_model(name, **kwargs)
    try:
        model.fit(train.omics, train.time, train.event, clinical=train.clinical)
    except (ArithmeticError, ValueError) as err:  # e.g. Coxnet's "weights are too large" at a tiny alpha
        raise TrainingError(f"{name}: the fit failed ({err}); the run is marked failed, the sweep goes on") from None
    if on_epoch is not None:
        on_epoch(0, model)
    return FitResult(model, kwargs)


def _predict_estimator(model: SurvivalEstimator, pset: PatientSet) -> tuple[np.ndarray, np.ndarray]:
    """(risk, S at the bin edges past the first): the columns a network's survival curve fills."""
    if pset.edges is None:
        raise ValueError(f"{model.name} reads survival at the bin edges: this PatientSet carries none (make_fold sets them)")
    return model.predict(pset.omics, pset.edges[1:], clinical=pset.clinical)


@torch.no_grad()
def predict(model: SurvivalModel | SurvivalEstimator, pset: PatientSet, settings: TrainSettings,
            split: str = "test") -> pd.DataFrame:
    """One row per patient: case_id, split, time, event, bin, risk, S_1..S_k, true_risk."""
    model.eval()
    cls = type(model)
    if cls.estimator:
        risk, surv = _predict_estimator(model, pset)
        return _prediction_frame(pset, split, risk, surv)
    micro = max(settings.micro_batch, 16) if cls.batchable else 1
    order = np.arange(len(pset))
    surv = np.zeros((len(pset), 0))
    rows = []
    for mb in _chunks(pset, order, micro, settings.max_tokens, _pass_cost(cls, settings)):
        wsi, mask, omics = collate(pset, mb, cls, settings.device, for_training=False)
        with _autocast(settings):
            logits = model(wsi=wsi, mask=mask, omics=omics).logits.float()
        rows.append((mb, survival_curve(logits).cpu().numpy()))
    n_bins = rows[0][1].shape[1]
    surv = np.zeros((len(pset), n_bins))
    for mb, s in rows:
        surv[mb] = s
    return _prediction_frame(pset, split, -surv.sum(axis=1), surv)


def _prediction_frame(pset: PatientSet, split: str, risk: np.ndarray, surv: np.ndarray) -> pd.DataFrame:
    n_bins = surv.shape[1]
    df = pd.DataFrame({"case_id": pset.case_ids, "split": split, "time": pset.time, "event": pset.event,
                       "bin": pset.bins, "risk": risk})
    for k in range(n_bins):
        df[f"S_{k + 1}"] = surv[:, k]
    df["true_risk"] = np.nan if pset.truth is None else pset.truth
    return df


def score(model: SurvivalModel, pset: PatientSet, settings: TrainSettings) -> float:
    """Harrell's C of the model on these patients."""
    pred = predict(model, pset, settings)
    return c_index(pred["time"], pred["event"], pred["risk"])
