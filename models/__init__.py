"""Model registry: `create_model(name, ...)` and `list_models()`; importing registers every model."""

from .base import CLINICAL, OMICS, WSI, SurvivalEstimator, SurvivalModel, SurvivalOutput
from .registry import (DEFAULT_MODELS, DEFAULT_OMIC_SIZES, ModelError, create_model, get_model_class, list_models,
                       reads_slides, register_model, select_models)

# Importing each model module registers it.
from . import abmil, ghanet, mcat, snn, transmil  # noqa: E402,F401
from . import abmil_snn, clam_sb, clinical, clinical_coxnet, coxnet  # noqa: E402,F401
from . import cmta, motcat  # noqa: E402,F401

__all__ = [
    "CLINICAL", "DEFAULT_MODELS", "DEFAULT_OMIC_SIZES", "ModelError", "OMICS", "WSI", "SurvivalEstimator", "SurvivalModel",
    "SurvivalOutput", "create_model", "get_model_class", "list_models", "reads_slides", "register_model",
    "select_models",
]
