"""Data layer: cohort tables, slide features, the synthetic generator, fetch and check.

    python -m bench.data synth|fetch|check ...
"""

from .cohort import GROUP_NAMES, Cohort, load_cohort, read_signatures
from .features import FeatureStore
from .layout import COHORTS, N_FOLDS, DataRoot, parse_cohorts, study

__all__ = ["COHORTS", "GROUP_NAMES", "N_FOLDS", "Cohort", "DataRoot", "FeatureStore", "load_cohort", "open_cohort",
           "parse_cohorts", "read_signatures", "study"]


def open_cohort(root: DataRoot, cohort: str, variant: str | None = None) -> Cohort:
    """Load a cohort from a data root: `tables/<variant>/` when given, else `tables/`."""
    return load_cohort(cohort, root.table(cohort, variant), root.signatures, root.truth(cohort))
