"""The data-root layout (fixed) and cohort naming.

    <root>/signatures.csv
    <root>/tables/tcga_<cohort>_all_clean.csv.zip        (or tables/<variant>/... for fetched real tables)
    <root>/splits/5foldcv/tcga_<cohort>/splits_<k>.csv    k = 0..4
    <root>/features/tcga_<cohort>/h5_files/<slide stem>.h5  (or pt_files/<slide stem>.pt)
    <root>/truth/tcga_<cohort>.csv                        synthetic only: case_id, true_risk
    <root>/published/mcat/<experiment>/summary_latest_tcga_<cohort>.csv   fetched: MCAT's per-fold C (bench.data.published)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError

COHORTS = ("blca", "brca", "gbmlgg", "luad", "ucec")
N_FOLDS = 5
TABLE_VARIANTS = ("sig", "mutsig")


def parse_cohorts(text: str | None) -> list[str]:
    """`blca,luad` -> ['blca', 'luad']; `tcga_blca` is accepted too; unknown names are an error."""
    if not text:
        return list(COHORTS)
    out = []
    for name in (t.strip().lower() for t in text.split(",") if t.strip()):
        name = name.removeprefix("tcga_")
        if name not in COHORTS:
            raise BenchError(f"unknown cohort {name!r}. Known cohorts: {', '.join(COHORTS)} (short names, comma-separated).")
        out.append(name)
    return out


def study(cohort: str) -> str:
    """Short name -> the `tcga_<cohort>` name used in files and folders."""
    return f"tcga_{cohort}"


def slide_stem(slide_id: str) -> str:
    """Slide file stem: the slide id without its `.svs` suffix (MCAT's rstrip('.svs') done right)."""
    return slide_id.removesuffix(".svs")


@dataclass(frozen=True)
class DataRoot:
    """Paths inside one data root; `features_dir` may point at a user's existing MCAT feature folder."""

    root: Path
    features_dir: Path | None = None

    @property
    def signatures(self) -> Path:
        return self.root / "signatures.csv"

    def table(self, cohort: str, variant: str | None = None) -> Path:
        name = f"{study(cohort)}_all_clean.csv.zip"
        return self.root / "tables" / (variant or "") / name if variant else self.root / "tables" / name

    def split(self, cohort: str, k: int) -> Path:
        return self.root / "splits" / "5foldcv" / study(cohort) / f"splits_{k}.csv"

    def split_key(self, cohort: str, k: int) -> str:
        """Path of a split file relative to `<root>/splits`, the key used by split manifests."""
        return f"5foldcv/{study(cohort)}/splits_{k}.csv"

    def features(self, cohort: str) -> Path:
        """Folder holding `h5_files/` or `pt_files/` for a cohort.

        With `features_dir`, MCAT's `tcga_<c>_20x_features/` is looked for first, then `tcga_<c>/`.
        """
        if self.features_dir is not None:
            mcat = self.features_dir / f"{study(cohort)}_20x_features"
            plain = self.features_dir / study(cohort)
            return plain if plain.is_dir() and not mcat.is_dir() else mcat
        return self.root / "features" / study(cohort)

    def resolve_variant(self, cohort: str, requested: str | None = None) -> str | None:
        """Table variant to read: the requested one, else `tables/` itself, else `sig`, else `mutsig`."""
        if requested is not None:
            return requested
        if self.table(cohort).is_file():
            return None
        for variant in TABLE_VARIANTS:
            if self.table(cohort, variant).is_file():
                return variant
        return None

    def truth(self, cohort: str) -> Path:
        return self.root / "truth" / f"{study(cohort)}.csv"
