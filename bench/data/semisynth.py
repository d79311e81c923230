"""Semi-synthetic mode: the real tables, labels and splits, with simulated slide features.

Each patient's latent factors are read off its real genomic profile (the top principal
components of the z-scored signature genes), and drive the informative patches of its bags by
the synthetic generator's mechanism. So the whole real-data path (tables, verified splits,
label quirks, multi-slide patients) runs end to end without slide features. Survival labels are
the real ones, so there is no oracle risk. Features go to `<root>/semisynthetic/tcga_<c>/h5_files/`.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from .cohort import Cohort
from .layout import COHORTS, DataRoot, slide_stem
from .synth import FEATURE_DIM, LATENT_DIM, _bag

FOLDER = "semisynthetic"
PATCHES = (8, 33)  # patches per slide, [low, high): real cohorts have thousands of slides


def latent_from_genomics(cohort: Cohort) -> np.ndarray:
    """Standardised top principal components of the patient x gene matrix (z-scored per gene)."""
    x = cohort.omics.to_numpy(np.float64)
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    z = u[:, :LATENT_DIM] * s[:LATENT_DIM]
    return z / z.std(0)


def features_root(root: DataRoot) -> Path:
    return root.root / FOLDER


def ensure_features(root: DataRoot, cohort: Cohort, seed: int = 0, log=print, dim: int = FEATURE_DIM) -> Path:
    """Write the cohort's simulated bags (width `dim`) once; a stamp file records how they were made."""
    folder = features_root(root) / f"tcga_{cohort.name}"
    stamp = folder / "semisynthetic.json"
    params = {"generator": "bench.data.semisynth", "seed": seed, "table": cohort.table_path.name,
              "patients": len(cohort.patients), "dim": dim}
    if stamp.is_file() and json.loads(stamp.read_text()) == params:
        return folder
    rng = np.random.default_rng([seed, COHORTS.index(cohort.name), 7])
    z = latent_from_genomics(cohort).astype(np.float32)
    prototypes = rng.gamma(1.0, 1.0, size=(8, dim)).astype(np.float32)
    tumour = rng.gamma(1.0, 1.0, size=dim).astype(np.float32)
    loadings = (rng.standard_normal((dim, LATENT_DIM)) * 0.35).astype(np.float32)
    out = folder / "h5_files"
    out.mkdir(parents=True, exist_ok=True)
    for i, slides in enumerate(cohort.patients["slides"]):
        for slide in slides:
            n = int(rng.integers(*PATCHES))
            feats = _bag(rng, z[i], prototypes, tumour, loadings, n)
            tmp = out / f".{slide_stem(slide)}.h5.part"
            with h5py.File(tmp, "w") as f:
                f.create_dataset("features", data=feats, track_times=False)
                f.create_dataset("coords", data=np.zeros((n, 2), np.int32), track_times=False)
            tmp.replace(out / f"{slide_stem(slide)}.h5")
    stamp.write_text(json.dumps(params, indent=1) + "\n")
    log(f"  semisynthetic features for tcga_{cohort.name}: {sum(map(len, cohort.patients['slides']))} slides of width "
        f"{dim} in {out}")
    return folder
