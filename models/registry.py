"""Name -> model class registry in the style of timm: a decorator and a dict.

A registered class is a torch `SurvivalModel` or a `SurvivalEstimator` (fitted outside torch; its
`estimator` attribute is True and models/base.py says what it must provide). `DEFAULT_MODELS` names the
mission's five, the embedded default sweep; every other registered model is "extended". `TABULAR_MODELS`
names the slide-free floor a real-table run without features can compute: the genomic and clinical models
(`clinical_site` stays out: it adds a centre effect, see models/clinical.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import WSI, SurvivalEstimator, SurvivalModel

# BLCA `sig` table with every genomic column kept (TSG, Onc, PK, CDM, TF, CGF).
DEFAULT_OMIC_SIZES = (94, 334, 521, 468, 1496, 479)
N_GROUPS = 6
DEFAULT_MODELS = ("abmil", "ghanet", "mcat", "snn", "transmil")
TABULAR_MODELS = ("clinical", "clinical_coxnet", "coxnet", "snn")
MODEL_SELECTIONS = ("default", "extended", "tabular", "all")

_MODELS: dict[str, type[SurvivalModel | SurvivalEstimator]] = {}


class ModelError(ValueError):
    """A wrong model name or input size: a user's mistake, printed as one paragraph by the CLIs."""


def register_model(cls: type[SurvivalModel | SurvivalEstimator]) -> type[SurvivalModel | SurvivalEstimator]:
    """Class decorator: make `cls` available to `create_model(cls.name, ...)`."""
    if not getattr(cls, "name", ""):
        raise TypeError(f"{cls.__qualname__} must set a class attribute `name` to be registered")
    if cls.name in _MODELS and _MODELS[cls.name] is not cls:
        raise TypeError(f"model name {cls.name!r} is registered twice")
    _MODELS[cls.name] = cls
    return cls


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_MODELS)


def select_models(selection: str) -> list[str]:
    """Registered names of a selection: "default" (the mission's five), "extended" (the others), "tabular"
    (the slide-free floor) or "all"."""
    if selection not in MODEL_SELECTIONS:
        raise ModelError(f"unknown model selection {selection!r}: use one of {', '.join(MODEL_SELECTIONS)}.")
    if selection == "all":
        return list_models()
    if selection == "tabular":
        return list(TABULAR_MODELS)
    return [n for n in list_models() if (n in DEFAULT_MODELS) == (selection == "default")]


def get_model_class(name: str) -> type[SurvivalModel | SurvivalEstimator]:
    """The registered class for `name`; a clear error listing the known names otherwise."""
    try:
        return _MODELS[name]
    except KeyError:
        raise ModelError(
            f"unknown model {name!r}. Registered models: {', '.join(list_models())}. "
            "Pick one of those (python -m bench.run --list-models prints them)."
        ) from None


def reads_slides(name: str) -> bool:
    """Whether the model reads slide features in training or at inference (a sweep of none opens no feature folder)."""
    cls = get_model_class(name)
    return WSI in cls.train_modalities | cls.infer_modalities


def create_model(
    name: str,
    *,
    path_dim: int = 1024,
    omic_sizes: Sequence[int] = DEFAULT_OMIC_SIZES,
    n_bins: int = 4,
    **hparams,
) -> SurvivalModel | SurvivalEstimator:
    """Build model `name` for the given input sizes and hyperparameters."""
    cls = get_model_class(name)
    omic_sizes = tuple(int(s) for s in omic_sizes)
    if len(omic_sizes) != N_GROUPS or any(s < 1 for s in omic_sizes):
        raise ModelError(
            f"omic_sizes must list {N_GROUPS} positive group sizes (TSG, Onc, PK, CDM, TF, CGF), "
            f"got {omic_sizes!r}. Take them from the cohort (Cohort.omic_sizes)."
        )
    return cls(path_dim=path_dim, omic_sizes=omic_sizes, n_bins=n_bins, **hparams)
