"""Read an MCAT-format table into a validated, patient-level `Cohort`.

One row per slide in the file (1 = censored); one record per patient here: time, event, the
6 signature gene groups and the list of slides. Every genomic column is kept (MCAT's dropped
last column is not reproduced), and only suffixed gene columns (`_rnaseq`, `_cnv`, `_mut`)
can reach model inputs, so label columns such as LUAD's `censorship` never do.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import BenchError

GENE_SUFFIXES = ("_mut", "_cnv", "_rnaseq")
REQUIRED_COLUMNS = ("case_id", "slide_id", "survival_months", "censorship")
# The patient covariates a clinical model may read (models/clinical.py), kept raw here: encoding is fitted per fold.
CLINICAL_COLUMNS = ("age", "is_female", "oncotree_code", "site")
NUMERIC_CLINICAL = ("age", "is_female")
GROUP_NAMES = (
    "Tumor Suppressor Genes",
    "Oncogenes",
    "Protein Kinases",
    "Cell Differentiation Markers",
    "Transcription Factors",
    "Cytokines and Growth Factors",
)


@dataclass
class Cohort:
    """Patient-level view of one cohort; `patients` and `omics` share the case_id index and order."""

    name: str
    patients: pd.DataFrame  # index case_id; columns time, event (1 = death), slides (tuple)
    omics: pd.DataFrame  # index case_id; every genomic column, float32, unscaled
    groups: tuple[tuple[str, ...], ...]  # 6 sorted lists of column names
    table_path: Path
    truth: pd.Series | None = None  # synthetic only: true risk per case_id
    clinical: pd.DataFrame | None = None  # index case_id; the CLINICAL_COLUMNS the table has, raw (first slide row)

    @property
    def omic_sizes(self) -> tuple[int, ...]:
        return tuple(len(g) for g in self.groups)

    @property
    def case_ids(self) -> list[str]:
        return list(self.patients.index)

    def require_clinical(self, columns, models) -> None:
        """Refuse, before any job, a table that lacks a covariate `models` read or holds a non-number in a numeric one."""
        have = [] if self.clinical is None else list(self.clinical.columns)
        missing = [c for c in columns if c not in have]
        if missing:
            raise BenchError(f"cohort {self.name}: the table {self.table_path} has no column {missing[0]}, which "
                             f"{', '.join(models)} read{'s' if len(models) == 1 else ''} (clinical columns: "
                             f"{', '.join(columns)}). Use an MCAT-format table with those columns (python -m bench.data "
                             "fetch writes them), or leave those models out of --models.")
        for column in (c for c in columns if c in NUMERIC_CLINICAL):
            values = self.clinical[column]
            bad = values.notna() & pd.to_numeric(values, errors="coerce").isna()
            if bad.any():
                raise BenchError(f"cohort {self.name}: the table {self.table_path} has {_cell(values[bad].iloc[0])} in "
                                 f"column {column} for patient {values.index[bad][0]} ({int(bad.sum())} patient(s)); "
                                 f"{column} must be a number or empty (an empty value takes the training median). "
                                 "Fix those rows.")

    def group_arrays(self, case_ids) -> list[np.ndarray]:
        """Unscaled group matrices [n, d_i] for these patients, in the given order."""
        rows = self.omics.loc[list(case_ids)]
        return [rows[list(g)].to_numpy(np.float32) for g in self.groups]


def read_signatures(path: Path) -> list[list[str]]:
    """The 6 signature gene lists (unique, file order) from `signatures.csv`."""
    if not Path(path).is_file():
        raise BenchError(f"signature file {path} does not exist. Put MCAT's signatures.csv there "
                         "(python -m bench.data fetch downloads it) or point --data-root at a complete data root.")
    sig = pd.read_csv(path)
    if sig.shape[1] != len(GROUP_NAMES):
        raise BenchError(f"signature file {path} has {sig.shape[1]} columns; expected the 6 MCAT gene families "
                         f"({', '.join(GROUP_NAMES)}). Use MCAT's signatures.csv.")
    return [list(dict.fromkeys(str(g) for g in sig[c].dropna() if str(g).strip())) for c in sig.columns]


def _cell(value) -> str:
    """A table value as the user wrote it: `2`, `'yes'` or `nan`, not `np.int64(2)`."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _read_table(path: Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"cohort table {path} does not exist. Fetch the public tables with "
                         "`python -m bench.data fetch --out DIR` or generate synthetic ones with `python -m bench.data synth`.")
    try:
        compression = "zip" if zipfile.is_zipfile(path) else None
        # .copy() consolidates read_csv's one-block-per-column frame: later row/column selections get ~10x faster
        return pd.read_csv(path, compression=compression, low_memory=False).copy()
    except (ValueError, OSError, zipfile.BadZipFile, pd.errors.ParserError) as err:
        raise BenchError(f"cohort table {path} cannot be read as an MCAT-format CSV ({err}). "
                         "Re-download it; `python -m bench.data fetch` verifies checksums.") from None


def load_cohort(name: str, table_path: Path, signatures_path: Path, truth_path: Path | None = None) -> Cohort:
    """Read and validate one cohort table; every problem names the file and the patient."""
    df = _read_table(table_path)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise BenchError(f"cohort table {table_path} lacks the column(s) {', '.join(missing)}. An MCAT-format table "
                         f"needs {', '.join(REQUIRED_COLUMNS)} plus <GENE>_rnaseq|_cnv|_mut columns.")
    df["case_id"] = df["case_id"].astype(str)
    df["slide_id"] = df["slide_id"].astype(str)

    cens = pd.to_numeric(df["censorship"], errors="coerce")
    bad = df.loc[~cens.isin([0, 1]), "case_id"]
    if len(bad):
        raise BenchError(f"cohort table {table_path}: censorship must be 0 (event) or 1 (censored); patient "
                         f"{bad.iloc[0]} has {_cell(df.loc[bad.index[0], 'censorship'])} ({len(bad)} row(s) affected). "
                         "Fix those rows.")
    time = pd.to_numeric(df["survival_months"], errors="coerce")
    bad = df.loc[~(np.isfinite(time) & (time > 0)), "case_id"]
    if len(bad):
        raise BenchError(f"cohort table {table_path}: survival_months must be a positive number; patient {bad.iloc[0]} "
                         f"has {_cell(df.loc[bad.index[0], 'survival_months'])} ({len(bad)} row(s) affected). "
                         "Fix or drop those rows.")
    df["censorship"] = cens.astype(int)
    df["survival_months"] = time.astype(float)

    labels = df.groupby("case_id", sort=False)[["survival_months", "censorship"]].nunique()
    bad = labels.index[(labels > 1).any(axis=1)]
    if len(bad):
        raise BenchError(f"cohort table {table_path}: the slide rows of patient {bad[0]} disagree on survival_months or "
                         f"censorship ({len(bad)} patient(s) affected). A patient's labels must be identical on every slide row.")
    dup = df.loc[df["slide_id"].duplicated(), "slide_id"]
    if len(dup):
        raise BenchError(f"cohort table {table_path}: slide {dup.iloc[0]} appears on more than one row. Remove the duplicate.")

    gene_cols = [c for c in df.columns if c.endswith(GENE_SUFFIXES)]
    first = df.drop_duplicates("case_id", keep="first").set_index("case_id")
    slides = df.groupby("case_id", sort=False)["slide_id"].agg(tuple)
    patients = pd.DataFrame({
        "time": first["survival_months"],
        "event": 1 - first["censorship"],
        "slides": slides.reindex(first.index),
    })
    omics = first[gene_cols].copy()
    for col in omics.columns[~omics.dtypes.map(pd.api.types.is_numeric_dtype)]:  # parse text columns only (fast)
        omics[col] = pd.to_numeric(omics[col], errors="coerce")
    omics = omics.astype(np.float32)
    if omics.isna().any().any():
        col = omics.columns[omics.isna().any()][0]
        case = omics.index[omics[col].isna()][0]
        raise BenchError(f"cohort table {table_path}: genomic column {col} is missing or non-numeric for patient {case}. "
                         "Fill or drop it; models need complete genomic inputs.")

    present = set(gene_cols)
    groups = tuple(
        tuple(sorted(c for g in genes for c in (g + s for s in GENE_SUFFIXES) if c in present))
        for genes in read_signatures(signatures_path)
    )
    empty = [GROUP_NAMES[i] for i, g in enumerate(groups) if not g]
    if empty:
        raise BenchError(f"cohort table {table_path}: no genomic column matches the signature group(s) {', '.join(empty)} "
                         f"of {signatures_path}. Check that gene columns are named <GENE>_rnaseq|_cnv|_mut.")
    truth = None
    if truth_path is not None and Path(truth_path).is_file():
        t = pd.read_csv(truth_path, dtype={"case_id": str}).set_index("case_id")["true_risk"]
        truth = t.reindex(patients.index)
    clinical = first[[c for c in CLINICAL_COLUMNS if c in first.columns]].copy()
    return Cohort(name=name, patients=patients, omics=omics, groups=groups, table_path=Path(table_path), truth=truth,
                  clinical=clinical)
