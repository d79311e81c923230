"""Validate a data root and print a per-cohort summary before any training starts.

Tables, labels, signature groups, split integrity and checksums, and slide features: which
patients have them, bag sizes, and the data volume one epoch reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bench.data.folds import load_folds, pinned_sums
from bench.survival import assign_bins, c_index, fit_bin_edges

from . import open_cohort
from .cohort import Cohort
from .features import FeatureStore
from .layout import DataRoot, study


@dataclass
class CohortReport:
    cohort: str
    lines: list[str] = field(default_factory=list)
    missing_patients: list[str] = field(default_factory=list)
    bag_sizes: dict[str, int] = field(default_factory=dict)
    feature_dim: int | None = None  # the width every feature file of the cohort has


def feature_coverage(cohort: Cohort, store: FeatureStore) -> tuple[dict[str, int], list[str]]:
    """Bag size per patient whose every slide has features (widths and dtypes checked), and the patients lacking any."""
    present = {case: slides for case, slides in cohort.patients["slides"].items() if not store.missing_slides(slides)}
    missing = [case for case in cohort.patients.index if case not in present]
    return store.index(present), missing


def _shown(path, root) -> str:
    """A table's path inside the data root (tables/sig/... says which variant was read)."""
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def check_cohort(root: DataRoot, name: str, variant: str | None = None, features: bool = True,
                 allow_unverified: bool = False, deep: bool = False) -> CohortReport:
    """Validate one cohort and describe it; `deep` also reads every bag to check its values."""
    rep = CohortReport(name)
    cohort = open_cohort(root, name, variant)
    p = cohort.patients
    n_events = int(p["event"].sum())
    rep.lines.append(f"{study(name)}: {len(p)} patients, {int(p['slides'].map(len).sum())} slides, {n_events} events, "
                     f"censoring rate {1 - n_events / len(p):.3f}  [{_shown(cohort.table_path, root.root)}]")
    edges = fit_bin_edges(p["time"].to_numpy(), p["event"].to_numpy())
    counts = np.bincount(assign_bins(p["time"].to_numpy(), edges), minlength=4)
    rep.lines.append(f"  bins (whole cohort): inner cut points {', '.join(f'{e:.2f}' for e in edges[1:-1])} months; "
                     f"patients per bin {' / '.join(map(str, counts))}")
    rep.lines.append(f"  genomic groups (TSG, Onc, PK, CDM, TF, CGF): {', '.join(map(str, cohort.omic_sizes))}; "
                     f"{cohort.omics.shape[1]} genomic columns")
    if cohort.truth is not None:
        rep.lines.append(f"  oracle C-index (true risk): {c_index(p['time'], p['event'], cohort.truth.to_numpy()):.3f}")
    folds = load_folds(root, name, cohort.case_ids, allow_unverified=allow_unverified)
    sums, label = pinned_sums(root.root)
    sizes = ", ".join(f"{len(s.train)}/{len(s.val)}" for s in folds.values())
    verdict = label if sums is None else f"all 5 match the manifest ({label})"
    if sums is not None and allow_unverified:
        bad = [k for k, s in folds.items() if sums.get(root.split_key(name, k)) != s.sha256]
        verdict = f"UNVERIFIED folds {bad} (allowed by --allow-unverified-splits)" if bad else verdict
    rep.lines.append(f"  splits: train/val {sizes}; val sets disjoint and cover {sum(len(s.val) for s in folds.values())} "
                     f"patients; sha256: {verdict}")
    if features:
        store = FeatureStore(root.features(name))
        rep.bag_sizes, rep.missing_patients = feature_coverage(cohort, store)
        if rep.bag_sizes:
            q = np.percentile(list(rep.bag_sizes.values()), [0, 25, 50, 75, 100]).astype(int)
            n_patch = sum(rep.bag_sizes.values())
            rep.feature_dim = store.dim
            stored = sum(store.stored_bytes[s] for case in rep.bag_sizes for s in p.at[case, "slides"])
            rep.lines.append(f"  bags: {len(rep.bag_sizes)}/{len(p)} patients have features of width {store.dim}; "
                             f"patches per bag min/q25/median/q75/max {'/'.join(map(str, q))}; {n_patch} patches = "
                             f"{stored / 2**20:.1f} MiB on disk, read per epoch without cache "
                             f"({n_patch * store.dim * 4 / 2**20:.1f} MiB once read as float32)")
        per_fold = [sum(c in rep.bag_sizes for c in s.val) for s in folds.values()]
        rep.lines.append(f"  val patients with features per fold: {per_fold}")
        if rep.missing_patients:
            rep.lines.append(f"  WITHOUT features ({len(rep.missing_patients)}): {', '.join(rep.missing_patients)}")
        if deep:
            for case in rep.bag_sizes:
                store.bag(case, p.at[case, "slides"])
    return rep
