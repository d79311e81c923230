"""Fixed patient-level k-fold splits: read, verify against a sha256 manifest, and make new ones.

Split files only; which sums pin a data root's files is bench.data.folds (the data package builds
on this module, never the reverse).

Split files use MCAT's format: an unnamed index, `train` and `val` columns of case ids, the
shorter `val` column NaN-padded. The repo's `splits/MANIFEST.sha256` pins the 25 public MCAT
files (`mcat/...`) and the embedded synthetic default's files (`synthetic/...`).

    python -m bench.splits make --table T.csv.zip --out DIR [--folds 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import BenchError, cli_main

REPO_MANIFEST = Path(__file__).resolve().parents[1] / "splits" / "MANIFEST.sha256"


@dataclass(frozen=True)
class Split:
    train: tuple[str, ...]
    val: tuple[str, ...]
    path: Path
    sha256: str


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(path: Path = REPO_MANIFEST) -> dict[str, str]:
    """`key -> sha256` from a sha256sum-style file (comments allowed)."""
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, key = line.split(maxsplit=1)
            out[key.strip()] = digest
    return out


def read_split(path: Path, expected_sha256: str | None = None, allow_unverified: bool = False) -> Split:
    """Read one split file; a checksum that differs from `expected_sha256` is an error unless allowed."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"split file {path} does not exist. Fetch the public splits with `python -m bench.data fetch`, "
                         "or make your own with `python -m bench.splits make`.")
    digest = sha256_file(path)
    if expected_sha256 is not None and digest != expected_sha256 and not allow_unverified:
        raise BenchError(f"split file {path} has sha256 {digest}, but the manifest pins {expected_sha256}. The file was "
                         "changed, so results would not be comparable with published ones. Restore it (python -m bench.data "
                         "fetch re-downloads the public files), or pass --allow-unverified-splits to use it anyway.")
    try:
        df = pd.read_csv(path, dtype=str)
    except (ValueError, pd.errors.ParserError) as err:
        raise BenchError(f"split file {path} cannot be parsed as CSV ({err}). Restore it.") from None
    if not {"train", "val"} <= set(df.columns):
        raise BenchError(f"split file {path} needs `train` and `val` columns of case ids (MCAT format); found "
                         f"{', '.join(map(str, df.columns))}.")
    train = tuple(df["train"].dropna().astype(str))
    val = tuple(df["val"].dropna().astype(str))
    both = sorted(set(train) & set(val))
    if both:
        raise BenchError(f"split file {path}: patient {both[0]} is in both train and val ({len(both)} patient(s)). "
                         "A patient may sit on one side of a fold only; fix the split.")
    return Split(train=train, val=val, path=path, sha256=digest)


def check_folds(splits: list[Split], case_ids: list[str]) -> None:
    """Every split id is a known patient, and no patient is in two folds' val sets."""
    known = set(case_ids)
    seen: dict[str, Path] = {}
    for s in splits:
        unknown = [c for c in s.train + s.val if c not in known]
        if unknown:
            raise BenchError(f"split file {s.path} lists patient {unknown[0]} ({len(unknown)} id(s) in all), which is not in "
                             "the cohort table. Use splits made for this table, or drop those ids.")
        for c in s.val:
            if c in seen:
                raise BenchError(f"patient {c} is in the val set of both {seen[c]} and {s.path}. The folds' val sets must "
                                 "be disjoint; fix the split files.")
            seen[c] = s.path


def make_splits(case_ids, event, strata_bins, n_folds: int = 5, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """Seeded patient-level k folds stratified by (event, bin): each stratum dealt round-robin."""
    rng = np.random.default_rng(seed)
    case_ids = np.asarray(case_ids)
    strata = np.asarray(event).astype(int) * 100 + np.asarray(strata_bins).astype(int)
    fold_of = np.empty(len(case_ids), dtype=int)
    offset = 0
    for s in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == s))
        fold_of[idx] = (np.arange(len(idx)) + offset) % n_folds
        offset += len(idx)  # continue dealing where the last stratum stopped, to balance fold sizes
    return [(list(case_ids[fold_of != k]), list(case_ids[fold_of == k])) for k in range(n_folds)]


def write_split(path: Path, train: list[str], val: list[str]) -> None:
    """MCAT format: unnamed index, `train`, `val` NaN-padded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = max(len(train), len(val))
    df = pd.DataFrame({"train": list(train) + [None] * (n - len(train)), "val": list(val) + [None] * (n - len(val))})
    df.to_csv(path, lineterminator="\n")


def _read_labels(path: Path) -> pd.DataFrame:
    """One row per patient: case_id, survival_months, censorship (a csv or zipped csv, MCAT format)."""
    columns = ["case_id", "survival_months", "censorship"]
    if not Path(path).is_file():
        raise BenchError(f"table {path} does not exist. Pass a cohort table (csv or csv.zip), e.g. one fetched with "
                         "`python -m bench.data fetch`.")
    try:
        df = pd.read_csv(path, usecols=lambda c: c in columns)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise BenchError(f"table {path} cannot be read as an MCAT-format CSV ({err}). Pass a cohort table "
                         "(csv or csv.zip) such as tables/tcga_blca_all_clean.csv.zip.") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise BenchError(f"table {path} lacks the column(s) {', '.join(missing)}; split making needs each patient's "
                         "case_id, survival_months and censorship (MCAT format).")
    return df.drop_duplicates("case_id")


def _main(argv: list[str] | None = None) -> int:
    from bench.survival import assign_bins, fit_bin_edges

    parser = argparse.ArgumentParser(prog="python -m bench.splits", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    make = sub.add_parser("make", help="write seeded, stratified patient-level k-fold split files")
    make.add_argument("--table", type=Path, required=True, help="MCAT-format table (csv or csv.zip)")
    make.add_argument("--out", type=Path, required=True, help="folder for splits_<k>.csv")
    make.add_argument("--folds", type=int, default=5)
    make.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    df = _read_labels(args.table)
    event = 1 - df["censorship"].astype(int).to_numpy()
    time = df["survival_months"].astype(float).to_numpy()
    bins = assign_bins(time, fit_bin_edges(time, event))
    for k, (train, val) in enumerate(make_splits(df["case_id"].astype(str), event, bins, args.folds, args.seed)):
        write_split(args.out / f"splits_{k}.csv", train, val)
    print(f"wrote {args.folds} split files to {args.out}")
    return 0


main = cli_main(_main)

if __name__ == "__main__":
    raise SystemExit(main())
