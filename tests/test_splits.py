"""Split files: the 25 public MCAT files verify against the manifest, and `bench.splits make` deals stratified folds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.data.layout import COHORTS, DataRoot
from bench.errors import BenchError
from bench.data.folds import pinned_sums
from bench.splits import check_folds, main, read_manifest, read_split, sha256_file, write_split

# data_formats.md section 4: train/val per fold
FOLD_SIZES = {
    "blca": [(298, 75)] * 3 + [(299, 74)] * 2,
    "brca": [(764, 192)] + [(765, 191)] * 4,
    "gbmlgg": [(455, 114)] * 4 + [(456, 113)],
    "luad": [(362, 91)] * 3 + [(363, 90)] * 2,
    "ucec": [(384, 96)] * 5,
}


def test_manifest_pins_all_25_public_files():
    mcat = {k for k in read_manifest() if k.startswith("mcat/")}
    assert mcat == {f"mcat/5foldcv/tcga_{c}/splits_{k}.csv" for c in COHORTS for k in range(5)}


@pytest.mark.parametrize("cohort", COHORTS)
def test_public_splits_match_manifest_and_section_4(shared_data, cohort):
    """Checksums verify, fold sizes are the published ones, val sets partition the cohort's patients."""
    sums, label = pinned_sums(shared_data)
    assert label == "public MCAT splits"
    root = DataRoot(shared_data)
    splits = [read_split(root.split(cohort, k), sums[root.split_key(cohort, k)]) for k in range(5)]
    assert [(len(s.train), len(s.val)) for s in splits] == FOLD_SIZES[cohort]
    case_ids = list(pd.read_csv(shared_data / "tcga" / cohort / "clinical.csv")["case_id"].unique())
    check_folds(splits, case_ids)  # every id known, val sets disjoint
    assert sorted(c for s in splits for c in s.val) == sorted(case_ids)
    for s in splits:
        assert set(s.train) | set(s.val) == set(case_ids)


def two_fold_files(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / "splits_0.csv", tmp_path / "splits_1.csv"]
    write_split(paths[0], ["a", "b", "c"], ["d", "e"])
    write_split(paths[1], ["d", "e"], ["a", "b", "c"])
    return paths


def test_read_split_rejects_a_changed_file_unless_allowed(tmp_path):
    path = two_fold_files(tmp_path)[0]
    pinned = sha256_file(path)
    assert read_split(path, pinned).val == ("d", "e")
    path.write_text(path.read_text() + "\n")  # same content to pandas, different bytes
    with pytest.raises(BenchError, match=r"splits_0\.csv has sha256 .* manifest pins " + pinned):
        read_split(path, pinned)
    assert read_split(path, pinned, allow_unverified=True).val == ("d", "e")


def test_write_split_uses_mcat_format(tmp_path):
    """Unnamed index, train and val columns, the shorter val column NaN-padded."""
    path = two_fold_files(tmp_path)[0]
    df = pd.read_csv(path)
    assert list(df.columns) == ["Unnamed: 0", "train", "val"]
    assert df["val"].isna().tolist() == [False, False, True]


def test_check_folds_rejects_unknown_ids_and_overlapping_val_sets(tmp_path):
    paths = two_fold_files(tmp_path)
    splits = [read_split(p) for p in paths]
    check_folds(splits, list("abcde"))
    with pytest.raises(BenchError, match="patient e .*not in the cohort table"):
        check_folds(splits, list("abcd"))
    write_split(paths[1], ["e"], ["a", "b", "c", "d"])
    with pytest.raises(BenchError, match="patient d is in the val set of both"):
        check_folds([read_split(p) for p in paths], list("abcde"))


def write_table(path: Path, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """A minimal MCAT-format table: one row per slide, a few patients with two slides."""
    df = pd.DataFrame({
        "case_id": [f"TCGA-XX-{i:04d}" for i in range(n)],
        "survival_months": np.round(rng.exponential(20.0, n) + 0.1, 2),
        "censorship": (rng.uniform(size=n) < 0.6).astype(int),
        "G1_rnaseq": rng.normal(size=n),
    })
    df.insert(1, "slide_id", [f"{c}-01Z-00-DX1.svs" for c in df["case_id"]])
    extra = df.iloc[: n // 5].assign(slide_id=lambda d: d["case_id"] + "-01Z-00-DX2.svs")
    pd.concat([df, extra]).to_csv(path)
    return df


def test_make_writes_stratified_disjoint_reproducible_folds(tmp_path, rng):
    table = tmp_path / "t.csv"
    df = write_table(table, 87, rng)
    events = dict(zip(df["case_id"], 1 - df["censorship"]))
    assert main(["make", "--table", str(table), "--out", str(tmp_path / "a"), "--seed", "3"]) == 0
    files = sorted((tmp_path / "a").glob("splits_*.csv"))
    assert [f.name for f in files] == [f"splits_{k}.csv" for k in range(5)]
    splits = [read_split(f) for f in files]
    vals = [s.val for s in splits]
    assert sorted(c for v in vals for c in v) == sorted(df["case_id"])  # disjoint and covering
    assert max(map(len, vals)) - min(map(len, vals)) <= 1
    n_events = [sum(events[c] for c in v) for v in vals]
    assert max(n_events) - min(n_events) <= 1, n_events
    for s in splits:
        assert set(s.train) == set(df["case_id"]) - set(s.val)

    assert main(["make", "--table", str(table), "--out", str(tmp_path / "b"), "--seed", "3"]) == 0
    assert [f.read_bytes() for f in files] == [(tmp_path / "b" / f.name).read_bytes() for f in files]
    assert main(["make", "--table", str(table), "--out", str(tmp_path / "c"), "--seed", "4"]) == 0
    assert [f.read_bytes() for f in files] != [(tmp_path / "c" / f.name).read_bytes() for f in files]


def test_make_on_a_missing_table_is_a_clear_error(tmp_path, capsys):
    assert main(["make", "--table", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "none.csv does not exist" in err and "Traceback" not in err


def test_splits_module_imports_nothing_from_the_data_package():
    """bench.data builds on bench.splits (reading a root's folds lives in bench.data.folds), never the reverse."""
    import ast

    source = (Path(__file__).resolve().parents[1] / "bench" / "splits.py").read_text()
    imported = [n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and m.startswith("bench.data")]


def test_make_names_a_table_without_label_columns(tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("case_id,survival_months\nA,1.0\n")
    assert main(["make", "--table", str(table), "--out", str(tmp_path / "s")]) == 2
    assert "lacks the column(s) censorship" in " ".join(capsys.readouterr().err.split())
