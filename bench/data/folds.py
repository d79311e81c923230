"""A data root's split files, verified: which manifest sums pin them, and the five folds read and checked.

Real roots are pinned by the public MCAT sums, the embedded synthetic default by its own sums
(splits/MANIFEST.sha256); bench.splits reads and checks the files themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.errors import BenchError
from bench.splits import Split, check_folds, read_manifest, read_split

from .layout import N_FOLDS, DataRoot
from .synth import is_default


def pinned_sums(root: Path) -> tuple[dict[str, str] | None, str]:
    """The manifest entries that pin a data root's split files, keyed `5foldcv/tcga_<c>/splits_<k>.csv`.

    Real roots are pinned by the public MCAT sums; a synthetic root made with the default settings
    of the current generator by the embedded default's sums; any other synthetic root is generated,
    not pinned (None).
    """
    params_file = Path(root) / "synth.json"
    if params_file.is_file():
        params = json.loads(params_file.read_text())
        if not is_default(params):
            return None, f"generated (seed {params.get('seed')}, scale {params.get('scale')}), not pinned"
        prefix, label = "synthetic/", "embedded synthetic default"
    else:
        prefix, label = "mcat/", "public MCAT splits"
    sums = {k.removeprefix(prefix): v for k, v in read_manifest().items() if k.startswith(prefix)}
    return sums, label


def load_folds(root, cohort: str, case_ids: list[str], folds=range(5), allow_unverified: bool = False) -> dict[int, Split]:
    """Read and verify a cohort's split files; fold integrity is checked across all five files."""
    root = root if isinstance(root, DataRoot) else DataRoot(Path(root))
    sums, _ = pinned_sums(root.root)
    out = {}
    for k in range(N_FOLDS):
        key = root.split_key(cohort, k)
        expected = None if sums is None else sums.get(key)
        if sums is not None and expected is None and not allow_unverified:
            raise BenchError(f"split file {root.split(cohort, k)} is not pinned by the split manifest, so it cannot be "
                             "verified. Use the public splits (python -m bench.data fetch), or pass --allow-unverified-splits "
                             "for your own splits.")
        out[k] = read_split(root.split(cohort, k), expected, allow_unverified)
    check_folds(list(out.values()), case_ids)
    return {k: out[k] for k in folds}
