"""The table loader on the real public tables (data_formats.md sections 2, 5, 6) and on tiny hand-made ones."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.data.cohort import GROUP_NAMES, load_cohort, read_signatures
from bench.errors import BenchError
from bench.survival import assign_bins, fit_bin_edges

# (cohort, table variant) -> facts recomputed in data_formats.md: patients, slides, inner cut points,
# patients per bin, uncensored per bin, group sizes with every genomic column kept (section 6 lists
# the MCAT sizes, which lose the file's last column: BLCA TF 1495 -> 1496, LUAD TF 1509 -> 1510, UCEC TF 64 -> 65).
REAL = {
    ("blca", "sig"): (373, 437, [7.62, 13.57, 21.85], [63, 75, 95, 140], [41, 43, 42, 43],
                      (94, 334, 521, 468, 1496, 479)),
    ("luad", "sig"): (453, 516, [10.0975, 20.55, 35.445], [77, 133, 123, 120], [40, 39, 39, 40],
                      (89, 334, 534, 471, 1510, 482)),
    ("ucec", "sig"): (480, 539, [12.125, 23.46, 33.855], [61, 122, 80, 217], [19, 18, 19, 19],
                      (3, 24, 21, 22, 65, 15)),
    ("brca", "mutsig"): (956, 1022, [24.005, 45.975, 77.86], [421, 220, 164, 151], [33, 32, 32, 33],
                         (93, 330, 529, 460, 223, 450)),
}


@functools.cache
def real_cohort(shared: Path, cohort: str, variant: str):
    """Each real table is read once per session (they take a second or two)."""
    return load_cohort(cohort, shared / "tcga" / cohort / variant / f"tcga_{cohort}_all_clean.csv.zip",
                       shared / "signatures.csv")


@pytest.mark.parametrize(("cohort", "variant"), list(REAL))
def test_real_cohort_counts_bins_and_groups(shared_data, cohort, variant):
    n_patients, n_slides, cuts, per_bin, per_bin_events, sizes = REAL[cohort, variant]
    co = real_cohort(shared_data, cohort, variant)
    p = co.patients
    assert len(p) == n_patients and p.index.is_unique
    assert int(p["slides"].map(len).sum()) == n_slides
    time, event = p["time"].to_numpy(), p["event"].to_numpy()
    edges = fit_bin_edges(time, event)
    assert edges[1:-1].tolist() == pytest.approx(cuts, abs=1e-9)
    bins = assign_bins(time, edges)
    assert np.bincount(bins, minlength=4).tolist() == per_bin
    assert np.bincount(bins[event == 1], minlength=4).tolist() == per_bin_events
    assert co.omic_sizes == sizes
    assert [a.shape for a in co.group_arrays(co.case_ids[:3])] == [(3, d) for d in sizes]


def test_real_cohort_labels_match_the_clinical_table(shared_data):
    """Patient rows are the first slide row; event = 1 - censorship (section 2: BLCA 169 events)."""
    co = real_cohort(shared_data, "blca", "sig")
    clin = pd.read_csv(shared_data / "tcga" / "blca" / "clinical.csv").drop_duplicates("case_id").set_index("case_id")
    assert int(co.patients["event"].sum()) == 169
    assert (co.patients["event"] == 1 - clin.loc[co.case_ids, "censorship"].astype(int)).all()
    assert np.allclose(co.patients["time"], clin.loc[co.case_ids, "survival_months"])


def test_luad_label_columns_never_reach_genomic_features(shared_data):
    """LUAD's sig table carries `censorship` among its trailing columns; only suffixed gene columns are features."""
    raw = pd.read_csv(shared_data / "tcga" / "luad" / "sig" / "tcga_luad_all_clean.csv.zip", compression="zip", nrows=2)
    non_gene = [c for c in raw.columns if not c.endswith(("_rnaseq", "_cnv", "_mut"))]
    assert "censorship" in non_gene and "Unnamed: 0.1" in non_gene
    co = real_cohort(shared_data, "luad", "sig")
    assert not set(non_gene) & set(co.omics.columns)
    assert all(c.endswith(("_rnaseq", "_cnv")) for c in co.omics.columns)
    grouped = {c for g in co.groups for c in g}
    assert grouped <= set(co.omics.columns) and "censorship" not in grouped
    assert "ZXDC_rnaseq" in co.omics.columns  # the last column, which MCAT's loader drops, is kept


def test_signature_file_has_six_families(shared_data):
    sig = read_signatures(shared_data / "signatures.csv")
    assert [len(g) for g in sig] == [82, 328, 513, 443, 1536, 452]  # section 6; CDM has 452 cells, 443 unique


def write_sig(path: Path) -> Path:
    pd.DataFrame({name: ["A", "B", "C"] if i == 0 else ["D", None, None] for i, name in enumerate(GROUP_NAMES)}).to_csv(
        path, index=False)
    return path


def test_hand_made_table_patients_slides_and_groups(tmp_path):
    """Slides keep table order; the first row defines the patient; groups are sorted suffixed columns only."""
    table = tmp_path / "t.csv"
    pd.DataFrame({
        "case_id": ["P2", "P1", "P2", "P3"],
        "slide_id": ["P2-z.svs", "P1-a.svs", "P2-a.svs", "P3-a.svs"],
        "survival_months": [5.0, 7.5, 5.0, 1.25],
        "censorship": [1, 0, 1, 0],
        "train": [1, 0, 1, 1],
        "B_rnaseq": [0.5, 1.5, 0.5, 2.5],
        "A_rnaseq": [1.0, 2.0, 1.0, 3.0],
        "A_cnv": [-1, 0, -1, 2],
        "D_mut": [1, 0, 1, 0],
        "E_rnaseq": [9.0, 9.0, 9.0, 9.0],  # in no signature: kept in omics, in no group
    }).to_csv(table, index=False)
    co = load_cohort("x", table, write_sig(tmp_path / "sig.csv"))
    assert co.case_ids == ["P2", "P1", "P3"]
    assert co.patients.at["P2", "slides"] == ("P2-z.svs", "P2-a.svs")
    assert co.patients["event"].tolist() == [0, 1, 1]
    assert co.patients["time"].tolist() == [5.0, 7.5, 1.25]
    assert co.groups[0] == ("A_cnv", "A_rnaseq", "B_rnaseq") and all(g == ("D_mut",) for g in co.groups[1:])
    assert "train" not in co.omics.columns and "E_rnaseq" in co.omics.columns
    tsg = co.group_arrays(["P3", "P2"])[0]
    assert tsg.dtype == np.float32 and tsg.tolist() == [[2, 3, 2.5], [-1, 1, 0.5]]


def test_missing_signature_file_is_a_clear_error(tmp_path):
    with pytest.raises(BenchError, match="signature file .*nope.csv does not exist"):
        read_signatures(tmp_path / "nope.csv")


def test_non_numeric_genomic_value_names_column_and_patient(tmp_path):
    table = tmp_path / "t.csv"
    pd.DataFrame({"case_id": ["P1", "P2"], "slide_id": ["a.svs", "b.svs"], "survival_months": [1.0, 2.0],
                  "censorship": [0, 1], "A_rnaseq": ["0.5", "n/a"], "D_mut": [0, 1]}).to_csv(table, index=False)
    with pytest.raises(BenchError, match="A_rnaseq is missing or non-numeric for patient P2"):
        load_cohort("x", table, write_sig(tmp_path / "sig.csv"))
