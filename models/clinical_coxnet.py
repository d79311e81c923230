"""Clinical + CoxNet: sksurv's elastic-net Cox on the clinical covariates and the six z-scored gene groups,
the clinical columns unpenalised (`penalty_factor` 0), as the field usually combines a clinical baseline with
high-dimensional genomics: the genes must earn their place over age, sex and subtype, which stay in at every
penalty. The clinical encoding is `clinical`'s (models/clinical.py: fitted on the training side in `prepare`,
z-scored, constant columns dropped), the genes are CoxNet's input, and the penalty is tuned and fitted as
CoxNet's (alpha_ratio of alpha_max along the warm-started path; alpha_max is set by the penalised genes, so
alpha_ratio 1 leaves the unpenalised clinical model). Risk, Breslow's S and `paper_defaults` are CoxNet's.
"""

from __future__ import annotations

import numpy as np

from .base import CLINICAL, OMICS
from .clinical import CLINICAL_COLUMNS, encode, fit_encoding
from .coxnet import CoxNet
from .registry import DEFAULT_OMIC_SIZES, register_model


@register_model
class ClinicalCoxNet(CoxNet):
    name = "clinical_coxnet"
    train_modalities = frozenset({OMICS, CLINICAL})
    infer_modalities = frozenset({OMICS, CLINICAL})
    relative_job_cost = 0.06
    clinical_columns = CLINICAL_COLUMNS

    def __init__(self, *, path_dim=1024, omic_sizes=DEFAULT_OMIC_SIZES, n_bins=4, clinical_encoding=None,
                 alpha_ratio=0.1, l1_ratio=0.5):
        if clinical_encoding is None:
            raise ValueError(f"{self.name} needs the clinical_encoding its prepare() fits on the training side")
        super().__init__(path_dim=path_dim, omic_sizes=omic_sizes, n_bins=n_bins, alpha_ratio=alpha_ratio,
                         l1_ratio=l1_ratio)
        self.encoding = clinical_encoding
        self.n_clinical = len(clinical_encoding["design"])
        self.n_features += self.n_clinical

    @classmethod
    def prepare(cls, omics, bins, event, clinical=None) -> dict:
        if clinical is None:
            raise ValueError(f"{cls.name} reads the clinical columns: the training side carries none")
        return {"clinical_encoding": fit_encoding(clinical, cls.clinical_columns)}

    def _design(self, omics, clinical=None) -> np.ndarray:
        genes = np.concatenate([np.asarray(o, dtype=np.float64) for o in omics], axis=1)
        x = np.concatenate([encode(clinical, self.encoding), genes], axis=1)
        if x.shape[1] != self.n_features:
            raise ValueError(f"{self.name} was built for {self.n_features - self.n_clinical} genomic values, "
                             f"got {genes.shape[1]}")
        return x

    def _penalty_factor(self) -> np.ndarray:
        return np.concatenate([np.zeros(self.n_clinical), np.ones(self.n_features - self.n_clinical)])
