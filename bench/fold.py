"""One fold's patients made ready for a model: labels, scaled genomics and bags.

Everything fitted (bin edges when the protocol cuts them per fold, the genomic scaler) is fitted
on the patients passed as `fit_ids` only, so the held-out side never informs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.data import Cohort, FeatureStore
from bench.data.features import Bags
from bench.survival import assign_bins


@dataclass
class PatientSet:
    """Patients of one side of a split, in a fixed order, ready for training or scoring."""

    case_ids: list[str]
    time: np.ndarray
    event: np.ndarray  # 1 = death observed
    bins: np.ndarray
    omics: list[np.ndarray]  # 6 x [n, d_i], z-scored with the training side's scaler
    bags: Sequence[np.ndarray] | None  # [N_i, D] per patient (`Bags` reads them on access); None without WSI
    truth: np.ndarray | None = None
    edges: np.ndarray | None = None  # the bin edges `bins` were cut at (an estimator's survival is read there)
    clinical: pd.DataFrame | None = None  # raw covariates in `case_ids` order; a clinical model encodes them

    def __len__(self) -> int:
        return len(self.case_ids)

    def subset(self, idx) -> "PatientSet":
        idx = list(idx)
        return PatientSet(
            case_ids=[self.case_ids[i] for i in idx], time=self.time[idx], event=self.event[idx], bins=self.bins[idx],
            omics=[o[idx] for o in self.omics], bags=None if self.bags is None else
            self.bags.take(idx) if isinstance(self.bags, Bags) else [self.bags[i] for i in idx],
            truth=None if self.truth is None else self.truth[idx], edges=self.edges,
            clinical=None if self.clinical is None else self.clinical.iloc[idx],
        )

    def bag_sizes(self) -> np.ndarray:
        """Patches per bag, without reading bags that are read on access."""
        return self.bags.sizes() if isinstance(self.bags, Bags) else np.array([len(b) for b in self.bags])


class OmicScaler:
    """Per-column z-scoring (StandardScaler semantics: ddof 0, constant columns left unscaled)."""

    def __init__(self, groups: list[np.ndarray]):
        self.mean = [g.mean(axis=0) for g in groups]
        # Constant means max == min: a float std of equal values can come out ~1e-17, not 0, and dividing
        # by it would blow a held-out value up by 1e16.
        self.std = [np.where(np.ptp(g, axis=0) > 0, g.std(axis=0), 1.0) for g in groups]

    @classmethod
    def from_stats(cls, mean: list[np.ndarray], std: list[np.ndarray]) -> "OmicScaler":
        """A scaler fitted before (a saved fold model's, bench.checkpoint)."""
        scaler = cls.__new__(cls)
        scaler.mean, scaler.std = list(mean), list(std)
        return scaler

    def transform(self, groups: list[np.ndarray]) -> list[np.ndarray]:
        return [((g - m) / s).astype(np.float32) for g, m, s in zip(groups, self.mean, self.std)]


def patient_set(cohort: Cohort, case_ids, edges: np.ndarray, scaler: OmicScaler | None,
                store: FeatureStore | None) -> PatientSet:
    """`scaler` None: no genomics, for a model that reads none at inference (so a table of other genes still works)."""
    p = cohort.patients.loc[list(case_ids)]
    bags = None if store is None else store.bags(case_ids, [p.at[c, "slides"] for c in case_ids])
    truth = None if cohort.truth is None else cohort.truth.loc[list(case_ids)].to_numpy(float)
    return PatientSet(
        case_ids=list(case_ids), time=p["time"].to_numpy(float), event=p["event"].to_numpy(int),
        bins=assign_bins(p["time"].to_numpy(float), edges),
        omics=[] if scaler is None else scaler.transform(cohort.group_arrays(case_ids)),
        bags=bags, truth=truth, edges=np.asarray(edges, dtype=float),
        clinical=None if cohort.clinical is None else cohort.clinical.loc[list(case_ids)],
    )


def make_fold(cohort: Cohort, fit_ids, other_ids, edges: np.ndarray, store: FeatureStore | None) -> tuple[PatientSet, PatientSet]:
    """(fit side, held-out side): the scaler is fitted on `fit_ids` only; `edges` are chosen by the caller."""
    scaler = OmicScaler(cohort.group_arrays(fit_ids))
    return patient_set(cohort, fit_ids, edges, scaler, store), patient_set(cohort, other_ids, edges, scaler, store)
