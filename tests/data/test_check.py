"""`python -m bench.data check`: one damaged input per test, each a non-zero exit with one paragraph naming the culprit.

Each test copies a small synthetic root (BLCA, 20 patients), damages one thing and runs the CLI entry point
in-process (`main([...])`: `cli_main` turns a user error into exit status 2 and one stderr paragraph, so
any traceback would fail the test instead). `tests/data/test_synth.py` runs `python -m bench.data` as a process.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from bench.data import DataRoot, open_cohort
from bench.data.__main__ import main
from bench.data.layout import slide_stem
from bench.data.synth import synthesize
from bench.splits import write_split

@pytest.fixture(scope="module")
def clean_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clean")
    synthesize(root, ["blca"], seed=0, scale=0.05, min_test_events=0, log=lambda _: None)
    return root


@pytest.fixture(scope="module")
def slides(clean_root) -> pd.Series:
    """Each patient's slide ids, in table order (read once)."""
    return open_cohort(DataRoot(clean_root), "blca").patients["slides"]


@pytest.fixture
def root(clean_root, tmp_path) -> DataRoot:
    """A private copy of the clean root to damage."""
    shutil.copytree(clean_root, tmp_path / "root")
    return DataRoot(tmp_path / "root")


def check(root: DataRoot, capsys, *args: str, cohort: str = "blca") -> tuple[int, str, str]:
    code = main(["check", "--data-root", str(root.root), "--cohorts", cohort, *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def failing(root: DataRoot, capsys, *args: str, cohort: str = "blca") -> str:
    """Run check, expect exit 2 and exactly one `error:` paragraph; return it on one line."""
    code, _, err = check(root, capsys, *args, cohort=cohort)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("error:") == 1
    return " ".join(err.split())


def read_table(root: DataRoot) -> pd.DataFrame:
    return pd.read_csv(root.table("blca"), compression="zip")


def write_table(root: DataRoot, df: pd.DataFrame) -> None:
    df.to_csv(root.table("blca"), index=False, compression={"method": "zip", "archive_name": "t.csv"})


def splits(root: DataRoot) -> list[tuple[list[str], list[str]]]:
    out = []
    for k in range(5):
        df = pd.read_csv(root.split("blca", k), dtype=str)
        out.append((list(df["train"].dropna()), list(df["val"].dropna())))
    return out


def h5_path(root: DataRoot, slide: str) -> Path:
    return root.features("blca") / "h5_files" / f"{slide_stem(slide)}.h5"


def test_clean_root_passes_and_is_summarised(root, capsys):
    code, out, err = check(root, capsys, "--deep")
    assert code == 0, err
    assert "tcga_blca: 20 patients" in out
    assert "genomic groups (TSG, Onc, PK, CDM, TF, CGF): 94, 334, 521, 468, 1496, 479" in out
    assert "val sets disjoint and cover 20 patients" in out and "generated (seed 0, scale 0.05), not pinned" in out
    assert "bags: 20/20 patients have features" in out and "WITHOUT features" not in out


def test_io_per_epoch_is_counted_in_the_files_own_dtype(tmp_path, capsys):
    """float16 files put half the bytes on disk that they take once read as float32; check says both."""
    sizes = {}
    for dtype in ("float32", "float16"):
        synthesize(tmp_path / dtype, ["ucec"], scale=0.001, min_test_events=0, dtype=dtype, log=lambda _: None)
        code, out, err = check(DataRoot(tmp_path / dtype), capsys, cohort="ucec")
        assert code == 0, err
        disk, read = re.search(r"= ([0-9.]+) MiB on disk, read per epoch without cache \(([0-9.]+) MiB once read", out).groups()
        sizes[dtype] = float(disk), float(read)
    assert sizes["float32"][0] == sizes["float32"][1] == sizes["float16"][1]
    assert sizes["float16"][0] == pytest.approx(sizes["float32"][0] / 2, abs=0.1)


@pytest.mark.parametrize("column", ["case_id", "slide_id", "survival_months", "censorship"])
def test_missing_table_column(root, capsys, column):
    write_table(root, read_table(root).drop(columns=column))
    err = failing(root, capsys)
    assert f"{root.table('blca')} lacks the column(s) {column}" in err  # the full path, unbroken at its hyphens


def test_censorship_not_0_or_1(root, capsys):
    df = read_table(root)
    df.loc[3, "censorship"] = 2
    write_table(root, df)
    err = failing(root, capsys)
    assert "censorship must be 0 (event) or 1 (censored)" in err and f"patient {df.loc[3, 'case_id']} has 2" in err


@pytest.mark.parametrize("value", [0.0, -3.5, np.nan])
def test_time_not_positive_or_missing(root, capsys, value):
    df = read_table(root)
    df.loc[5, "survival_months"] = value
    write_table(root, df)
    err = failing(root, capsys)
    assert "survival_months must be a positive number" in err and f"patient {df.loc[5, 'case_id']}" in err


def test_slide_rows_of_a_patient_disagree_on_labels(root, capsys):
    df = read_table(root)
    multi = df["case_id"][df["case_id"].duplicated()]
    assert len(multi), "the fixture needs a patient with two slides"
    row = multi.index[0]
    df.loc[row, "survival_months"] += 1.0
    write_table(root, df)
    err = failing(root, capsys)
    assert f"the slide rows of patient {df.loc[row, 'case_id']} disagree" in err


def test_split_id_not_in_table(root, capsys):
    train, val = splits(root)[2]
    write_split(root.split("blca", 2), train, val + ["TCGA-ZZ-9999"])
    err = failing(root, capsys)
    assert "splits_2.csv lists patient TCGA-ZZ-9999" in err and "not in the cohort table" in err


def test_patient_in_two_val_sets(root, capsys):
    folds = splits(root)
    moved = folds[1][1][0]  # a fold-1 val patient, also put in fold 0's val set
    train0, val0 = folds[0]
    write_split(root.split("blca", 0), [c for c in train0 if c != moved], val0 + [moved])
    err = failing(root, capsys)
    assert f"patient {moved} is in the val set of both" in err and "splits_0.csv" in err and "splits_1.csv" in err


def test_patient_in_train_and_val_of_one_fold(root, capsys):
    train, val = splits(root)[3]
    write_split(root.split("blca", 3), train, val + [train[0]])
    err = failing(root, capsys)
    assert "splits_3.csv" in err and f"patient {train[0]} is in both train and val" in err


@pytest.fixture
def two_missing(root, slides) -> list[str]:
    """Delete the feature file of one slide of two patients."""
    cases = list(slides.index[[2, 7]])
    for c in cases:
        h5_path(root, slides[c][-1]).unlink()
    return cases


def test_missing_feature_file_is_an_error_naming_the_patients(root, capsys, two_missing):
    err = failing(root, capsys)
    assert "2 patient(s) have no slide features" in err and all(c in err for c in two_missing)
    assert "--on-missing skip" in err


def test_missing_features_with_skip_lists_every_dropped_patient(root, capsys, two_missing):
    code, out, err = check(root, capsys, "--on-missing", "skip")
    assert code == 0, err
    assert f"WITHOUT features (2): {', '.join(two_missing)}" in out
    assert "bags: 18/20 patients have features" in out


def corrupt_h5(path: Path) -> None:
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def corrupt_pt(path: Path) -> None:
    path.unlink()
    pt = path.parent.parent / "pt_files" / (path.stem + ".pt")
    pt.parent.mkdir(exist_ok=True)
    pt.write_bytes(b"PK\x03\x04" + b"\x17" * 40)


def rewrite(feats_of):
    def damage(path: Path) -> None:
        with h5py.File(path, "r") as f:
            feats = f["features"][:]
        with h5py.File(path, "w") as f:
            f.create_dataset("features", data=feats_of(feats))
    return damage


def with_nan(feats):
    feats[0, 5] = np.nan
    return feats


def with_inf(feats):
    feats[-1, 0] = np.inf
    return feats


@pytest.mark.parametrize(("damage", "deep", "message"), [
    (corrupt_h5, False, "cannot be read"),
    (truncate, False, "cannot be read"),
    (corrupt_pt, False, "cannot be read"),
    (rewrite(with_nan), True, "contains NaN or inf values"),
    (rewrite(with_inf), True, "contains NaN or inf values"),
    (rewrite(lambda f: f[:, :512]), False, "expected [N, 1024]"),
    (rewrite(lambda f: f[:0]), False, "has an empty bag"),
], ids=["h5-garbage", "h5-truncated", "pt-garbage", "nan", "inf", "width-512", "empty-bag"])
def test_bad_feature_file(root, slides, capsys, damage, deep, message):
    case = slides.index[4]
    slide = slides[case][0]
    damage(h5_path(root, slide))
    err = failing(root, capsys, *(["--deep"] if deep else []))
    assert message in err
    assert slide_stem(slide) in err and f"patient {case}" in err


def test_pt_features_are_checked_like_h5(root, slides, capsys):
    """A slide stored only as pt_files/<stem>.pt (torch.save of a float32 tensor) passes the deep check."""
    path = h5_path(root, slides.iloc[0][0])
    with h5py.File(path, "r") as f:
        feats = torch.from_numpy(f["features"][:])
    path.unlink()
    (path.parent.parent / "pt_files").mkdir()
    torch.save(feats, path.parent.parent / "pt_files" / f"{path.stem}.pt")
    code, out, err = check(root, capsys, "--deep")
    assert code == 0, err
    assert "bags: 20/20 patients have features" in out


def test_mcat_style_features_dir(root, capsys, tmp_path):
    """--features-dir takes MCAT's `tcga_<c>_20x_features/` folder in place of the root's features."""
    shutil.move(root.features("blca"), tmp_path / "feats" / "tcga_blca_20x_features")
    code, out, _ = check(root, capsys, "--on-missing", "skip")
    assert code == 0 and "WITHOUT features (20)" in out
    code, out, err = check(root, capsys, "--features-dir", str(tmp_path / "feats"))
    assert code == 0, err
    assert "bags: 20/20 patients have features" in out


@pytest.fixture
def real_ucec_root(shared_data, tmp_path) -> DataRoot:
    """The public UCEC table and signatures (linked, not copied) beside copies of its 5 public split files."""
    root = tmp_path / "real"
    (root / "tables" / "sig").mkdir(parents=True)
    (root / "signatures.csv").symlink_to(shared_data / "signatures.csv")
    name = "tcga_ucec_all_clean.csv.zip"
    (root / "tables" / "sig" / name).symlink_to(shared_data / "tcga" / "ucec" / "sig" / name)
    shutil.copytree(shared_data / "splits" / "5foldcv" / "tcga_ucec", root / "splits" / "5foldcv" / "tcga_ucec")
    return DataRoot(root)


def test_changed_public_split_fails_its_checksum_unless_allowed(real_ucec_root, capsys):
    args = ("--table-variant", "sig", "--no-features")
    code, out, err = check(real_ucec_root, capsys, *args, cohort="ucec")
    assert code == 0, err
    assert "sha256: all 5 match the manifest (public MCAT splits)" in out
    path = real_ucec_root.split("ucec", 2)
    path.write_bytes(path.read_bytes() + b"\n")  # same folds to pandas, different bytes
    err = failing(real_ucec_root, capsys, *args, cohort="ucec")
    assert "splits_2.csv has sha256" in err and "--allow-unverified-splits" in err
    code, out, err = check(real_ucec_root, capsys, *args, "--allow-unverified-splits", cohort="ucec")
    assert code == 0, err
    assert "UNVERIFIED folds [2]" in out
