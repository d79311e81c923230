"""Synthetic TCGA-like cohorts, written in the real formats, with a known ground truth.

Each patient has latent factors z (3-d). They drive (a) a minority of genes in each of the 6
signature groups, (b) a minority of "informative" patches in each bag (a tumour-like patch type
whose features shift linearly with z), and (c) a Weibull hazard with log-risk beta.z, the oracle
risk. Censoring is independent uniform follow-up, calibrated on the sample to half the cohort's
real censoring rate. So genomic-only, WSI-only and fused models each have signal to find, and the
oracle C-index is the ceiling. Median survival, group sizes and the order of the censoring rates
mirror the real cohorts (data_formats.md sections 2 and 6).

Scenarios (known truths, for checking that the benchmark finds what is there and nothing else): `shared` above
(the default, its files unchanged); `histology`, where the genes follow an independent latent w of the same law
instead of z, so only the patches carry the risk; `genomic`, the reverse; `null`, where the hazard follows w and
the genes and patches keep following z, so nothing in the data predicts the time (the truth file's z.beta has a
C of about 0.5); `sparse`, `shared` with rare informative patches (2% of a slide on average instead of 17.5%),
the case G-HANet's training-time genomics are meant to help with. The truth file always holds z.beta, and
outside `shared` also which modality carries it (`carried_by`).

Power: a cohort holds `scale` x its real patient count, but at least enough patients that every
test fold holds `min_test_events` deaths (8 by default; the folds are stratified by event, so the
deaths spread evenly). At the real censoring rates (BRCA and UCEC over 84%) that floor would need
about 880 patients in all; at half the rates it needs about 320, fewer than the 340 that 12% of the
real counts gave before, with 1-5 deaths per test fold. The default scale is small enough that
the floor sets every cohort's size, so a smaller `scale` changes nothing and a larger one only adds
patients. Same seed -> byte-identical files.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.splits import make_splits, write_split
from bench.survival import assign_bins, c_index, fit_bin_edges

from .cohort import GROUP_NAMES
from .layout import COHORTS, N_FOLDS, DataRoot, slide_stem, study

DEFAULT_SEED = 0
DEFAULT_SCALE = 0.05
MIN_PATIENTS = 20
MIN_EVENTS = 8  # deaths per cohort at any setting: 4 survival bins need >= 4 events, folds need a few more
MIN_TEST_EVENTS = 8  # default deaths in every test fold: a fold's C-index then rests on more than a few events
CENSORING_SHARE = 0.5  # synthetic censoring rate = this x the real cohort's (BRCA 86.4% -> 43.2%)
GENERATOR_VERSION = 2  # in synth.json: 2 = censoring at half the real rate and the per-fold event floor
FEATURE_DIM = 1024
PATCHES_PER_SLIDE = (16, 96)  # the default's small bags; real TCGA slides hold about 15k patches at 20x
LATENT_DIM = 3
BETA = np.array([1.0, -0.8, 0.6])  # log-hazard weights on z
WEIBULL_SHAPE = 1.3
GROUP_ABBREV = ("TSG", "ONC", "PK", "CDM", "TF", "CGF")
INFORMATIVE_SHARE = (0.1, 0.25)  # a slide's share of informative patches is drawn uniformly from this range
MEAN_INFORMATIVE = sum(INFORMATIVE_SHARE) / 2


@dataclass(frozen=True)
class Scenario:
    """Which latent drives the hazard, the genes and the informative patches: `z`, whose risk z.beta the truth
    file records, or `w`, an independent latent of the same law that nothing records."""

    hazard: str
    genes: str
    patches: str
    carried_by: str  # the modalities that carry the truth (models' names: wsi, omics)
    fraction: float = MEAN_INFORMATIVE  # mean share of informative patches per slide


DEFAULT_SCENARIO = "shared"
SPARSE_FRACTION = 0.02
SCENARIOS = {
    "shared": Scenario("z", "z", "z", "wsi+omics"),
    "histology": Scenario("z", "w", "z", "wsi"),
    "genomic": Scenario("z", "z", "w", "omics"),
    "null": Scenario("w", "z", "z", "none"),
    "sparse": Scenario("z", "z", "z", "wsi+omics", SPARSE_FRACTION),
}


@dataclass(frozen=True)
class CohortSpec:
    patients: int
    censoring: float
    median_months: float
    omic_sizes: tuple[int, ...]  # every genomic column kept (sig tables; BRCA/GBMLGG from G-HANet's list)
    cnv_only: bool = False


SPECS = {
    "blca": CohortSpec(373, 0.547, 17.61, (94, 334, 521, 468, 1496, 479)),
    "brca": CohortSpec(956, 0.864, 28.93, (91, 353, 553, 480, 1565, 480)),
    "gbmlgg": CohortSpec(569, 0.671, 19.22, (84, 314, 498, 415, 1395, 428)),
    "luad": CohortSpec(453, 0.651, 21.88, (89, 334, 534, 471, 1510, 482)),
    "ucec": CohortSpec(480, 0.844, 31.00, (3, 24, 21, 22, 65, 15), cnv_only=True),
}


def _group_columns(sizes: tuple[int, ...], cnv_only: bool) -> list[list[str]]:
    """Column names per group: genes `<ABBR><nnnn>` with `_rnaseq`, about 10% also with `_cnv`."""
    groups = []
    for abbr, d in zip(GROUP_ABBREV, sizes):
        if cnv_only:
            groups.append([f"{abbr}{j:04d}_cnv" for j in range(d)])
            continue
        n_cnv = d // 10
        n_genes = d - n_cnv
        cols = [f"{abbr}{j:04d}_rnaseq" for j in range(n_genes)] + [f"{abbr}{j:04d}_cnv" for j in range(n_cnv)]
        groups.append(sorted(cols))
    return groups


def _signatures() -> pd.DataFrame:
    """One signature file for all cohorts: each family lists enough synthetic gene symbols."""
    longest = max(max(s.omic_sizes) for s in SPECS.values())
    return pd.DataFrame({name: [f"{abbr}{j:04d}" for j in range(longest)] for name, abbr in zip(GROUP_NAMES, GROUP_ABBREV)})


def _write_zip_csv(path: Path, member: str, df: pd.DataFrame) -> None:
    """CSV inside a zip with a fixed timestamp, so the same data gives the same bytes."""
    buf = io.StringIO()
    df.to_csv(buf, index=True, lineterminator="\n", float_format="%.6g")
    info = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(info, buf.getvalue())


def synthetic_censoring(cohort: str) -> float:
    """The censoring rate the generator aims at: CENSORING_SHARE x the real cohort's."""
    return CENSORING_SHARE * SPECS[cohort].censoring


def n_patients(cohort: str, scale: float, min_test_events: int) -> int:
    """`scale` x the real count, but enough for MIN_EVENTS deaths and `min_test_events` per test fold."""
    events = max(MIN_EVENTS, N_FOLDS * min_test_events)
    floor = int(np.ceil(events / (1.0 - synthetic_censoring(cohort))))
    return max(MIN_PATIENTS, int(round(SPECS[cohort].patients * scale)), floor)


def _survival(rng: np.random.Generator, eta: np.ndarray, spec: CohortSpec, censoring: float) -> tuple[np.ndarray, np.ndarray]:
    """Weibull event times with median ~ the cohort's, uniform follow-up censoring floor(n x `censoring`) patients.

    Censoring floor(n c) rather than about n c keeps n - floor(n c) >= the deaths `n_patients` sized the cohort for.
    """
    u = rng.uniform(size=len(eta))
    t_event = (-np.log(u) * np.exp(-eta)) ** (1.0 / WEIBULL_SHAPE)
    v = rng.uniform(size=len(eta))
    target = np.floor(len(eta) * censoring + 1e-9)
    lo, hi = 1e-3, 1e3  # follow-up = v * c_max * median; the censored count falls as c_max grows
    for _ in range(60):
        mid = np.sqrt(lo * hi)
        lo, hi = (mid, hi) if np.sum(v * mid * spec.median_months < t_event) > target else (lo, mid)
    t_cens = v * hi * spec.median_months  # hi always censors at most `target` patients
    censored = (t_cens < t_event).astype(int)
    time = np.where(censored == 1, t_cens, t_event)
    time *= spec.median_months / np.median(time)  # observed median follow-up as in the real cohort
    return np.round(np.maximum(time, 0.1), 2), censored


def _bag(rng, z_i, prototypes, tumour, loadings, n_patches, fraction: float = MEAN_INFORMATIVE) -> np.ndarray:
    """Patches from tissue prototypes; a minority (`fraction` of a slide on average) are tumour patches shifted
    along loadings @ z."""
    dim = prototypes.shape[1]
    kinds = rng.integers(0, len(prototypes), size=n_patches)
    feats = prototypes[kinds] + 0.6 * rng.standard_normal((n_patches, dim), dtype=np.float32)
    frac = rng.uniform(*INFORMATIVE_SHARE) * (fraction / MEAN_INFORMATIVE)  # x 1.0 exactly at the default
    inf = rng.uniform(size=n_patches) < frac
    inf[rng.integers(n_patches)] = True  # at least one informative patch per slide
    n_inf = int(inf.sum())
    feats[inf] = tumour + (loadings @ z_i)[None, :] + 0.6 * rng.standard_normal((n_inf, dim), dtype=np.float32)
    return np.maximum(feats, 0.0).astype(np.float32)  # ResNet features are post-ReLU


def scenario(name: str, fraction: float | None = None) -> Scenario:
    """A named scenario; `fraction` (sparse only) sets its mean share of informative patches per slide."""
    if name not in SCENARIOS:
        raise BenchError(f"unknown scenario {name!r}: use one of {', '.join(SCENARIOS)}.")
    if fraction is None:
        return SCENARIOS[name]
    if name != "sparse" or not 0 < fraction <= 1:
        raise BenchError(f"a prognostic fraction of {fraction} with scenario {name!r}: the fraction is the mean share "
                         "of informative patches per slide of the sparse scenario, above 0 and at most 1 (default "
                         f"{SPARSE_FRACTION}); the other scenarios keep the default's {MEAN_INFORMATIVE}.")
    return replace(SCENARIOS[name], fraction=fraction)


@dataclass(frozen=True)
class Labels:
    """A cohort's patients as drawn before any file is written: its labels, truth (z.beta) and test folds."""

    case_ids: list[str]
    time: np.ndarray
    censored: np.ndarray
    truth: np.ndarray
    folds: list[tuple[list[str], list[str]]]


def _draw(cohort: str, seed: int, scale: float, min_test_events: int, sc: Scenario):
    """The first draws of a cohort: its stream (left where the labels end), latents z and w, times, censoring.

    w has a stream of its own, so a scenario changes no draw of z, of the survival noise or of what follows."""
    rng = np.random.default_rng([seed, COHORTS.index(cohort)])
    n = n_patients(cohort, scale, min_test_events)
    latents = {"z": rng.standard_normal((n, LATENT_DIM)),
               "w": np.random.default_rng([seed, COHORTS.index(cohort), 1]).standard_normal((n, LATENT_DIM))}
    time, censored = _survival(rng, latents[sc.hazard] @ BETA, SPECS[cohort], synthetic_censoring(cohort))
    case_ids = [f"TCGA-S{COHORTS.index(cohort) + 1}-{i:04d}" for i in range(n)]
    return rng, latents, case_ids, time, censored


def _folds(case_ids, time, censored, seed: int) -> list[tuple[list[str], list[str]]]:
    event = 1 - censored
    return make_splits(case_ids, event, assign_bins(time, fit_bin_edges(time, event)), n_folds=N_FOLDS, seed=seed)


def draw_labels(cohort: str, seed: int = DEFAULT_SEED, scale: float = DEFAULT_SCALE,
                min_test_events: int = MIN_TEST_EVENTS, scenario_name: str = DEFAULT_SCENARIO) -> Labels:
    """The labels, truth and folds `synthesize` would write for these settings, without writing (or drawing) the
    tables and bags: cheap enough for studies of the tests' power over many large cohorts."""
    _, latents, case_ids, time, censored = _draw(cohort, seed, scale, min_test_events, scenario(scenario_name))
    return Labels(case_ids, time, censored, latents["z"] @ BETA, _folds(case_ids, time, censored, seed))


def synth_cohort(root: DataRoot, cohort: str, seed: int, scale: float, min_test_events: int = MIN_TEST_EVENTS,
                 dim: int = FEATURE_DIM, patches_per_slide: tuple[int, int] = PATCHES_PER_SLIDE,
                 dtype: str = "float32", scenario_name: str = DEFAULT_SCENARIO,
                 prognostic_fraction: float | None = None) -> dict:
    """Write one cohort's table, features of width `dim` (`patches_per_slide` = inclusive range, stored as `dtype`),
    truth and splits under a scenario; return its summary.

    Labels, genomics and splits are drawn before the features, so they do not depend on `dim` or the bag sizes."""
    spec = SPECS[cohort]
    sc = scenario(scenario_name, prognostic_fraction)
    rng, latents, case_ids, time, censored = _draw(cohort, seed, scale, min_test_events, sc)
    eta = latents["z"] @ BETA
    n = len(case_ids)
    n_slides = 1 + rng.binomial(2, 0.15, size=n)
    # genomics: about 15% of the genes in each group load on z; the rest are noise
    groups = _group_columns(spec.omic_sizes, spec.cnv_only)
    columns, values = [], []
    for cols in groups:
        d = len(cols)
        load = rng.standard_normal((LATENT_DIM, d)) * (rng.uniform(size=d) < 0.15)
        x = latents[sc.genes] @ load + rng.standard_normal((n, d))
        is_cnv = np.array([c.endswith("_cnv") for c in cols])
        x[:, is_cnv] = np.clip(np.round(x[:, is_cnv] / 1.5), -2, 2)
        columns += cols
        values.append(x)
    omics = pd.DataFrame(np.round(np.concatenate(values, axis=1), 4), columns=columns)

    prototypes = rng.gamma(1.0, 1.0, size=(8, dim)).astype(np.float32)
    tumour = rng.gamma(1.0, 1.0, size=dim).astype(np.float32)
    loadings = (rng.standard_normal((dim, LATENT_DIM)) * 0.35).astype(np.float32)
    feat_dir = root.features(cohort) / "h5_files"
    feat_dir.mkdir(parents=True, exist_ok=True)
    rows, patches = [], []
    for i, case in enumerate(case_ids):
        n_patch_total = 0
        for k in range(n_slides[i]):
            slide = f"{case}-01Z-00-DX{k + 1}.{rng.integers(0, 2**63):016X}{rng.integers(0, 2**63):016X}.svs"
            n_patch = int(rng.integers(patches_per_slide[0], patches_per_slide[1] + 1))
            feats = _bag(rng, latents[sc.patches][i].astype(np.float32), prototypes, tumour, loadings, n_patch,
                         sc.fraction)
            coords = (np.stack([np.arange(n_patch) % 32, np.arange(n_patch) // 32], 1) * 256).astype(np.int32)
            with h5py.File(feat_dir / f"{slide_stem(slide)}.h5", "w", track_order=False) as f:
                f.create_dataset("features", data=feats.astype(dtype, copy=False), track_times=False)
                f.create_dataset("coords", data=coords, track_times=False)
            n_patch_total += n_patch
            rows.append({"case_id": case, "slide_id": slide, "site": f"S{COHORTS.index(cohort) + 1}",
                         "is_female": int(rng.integers(0, 2)), "oncotree_code": cohort.upper(),
                         "age": int(rng.integers(35, 85)), "survival_months": time[i],
                         "censorship": int(censored[i]), "train": 1, "_row": i})
        patches.append(n_patch_total)
    meta = pd.DataFrame(rows)
    table = pd.concat([meta.drop(columns="_row"), omics.iloc[meta["_row"]].reset_index(drop=True)], axis=1)
    _write_zip_csv(root.table(cohort), f"{study(cohort)}_all_clean.csv", table)

    root.truth(cohort).parent.mkdir(parents=True, exist_ok=True)
    truth = pd.DataFrame({"case_id": case_ids, "true_risk": np.round(eta, 6)})
    if scenario_name != DEFAULT_SCENARIO:  # the default's truth files keep their bytes
        truth["carried_by"] = sc.carried_by
    truth.to_csv(root.truth(cohort), index=False, lineterminator="\n")

    event = 1 - censored
    test_events = []
    for k, (train, val) in enumerate(_folds(case_ids, time, censored, seed)):
        write_split(root.split(cohort, k), train, val)
        test_events.append(int(event[np.isin(case_ids, val)].sum()))
    return {"cohort": cohort, "patients": n, "slides": int(n_slides.sum()), "censoring": float(censored.mean()),
            "test_events": test_events, "oracle_c_index": c_index(time, event, eta), "patches": int(np.sum(patches))}


def params(seed: int = DEFAULT_SEED, scale: float = DEFAULT_SCALE, min_test_events: int = MIN_TEST_EVENTS,
           dim: int = FEATURE_DIM, patches_per_slide: tuple[int, int] = PATCHES_PER_SLIDE, dtype: str = "float32",
           scenario_name: str = DEFAULT_SCENARIO, prognostic_fraction: float | None = None) -> dict:
    """What synth.json records besides the cohorts: everything that decides the files (width, bag sizes, dtype and
    scenario only when they are not the defaults, so a default root keeps its bytes)."""
    sc = scenario(scenario_name, prognostic_fraction)
    return {"generator": "bench.data.synth", "version": GENERATOR_VERSION, "seed": seed, "scale": scale,
            "min_test_events": min_test_events, "censoring_share": CENSORING_SHARE,
            **({"dim": dim} if dim != FEATURE_DIM else {}),
            **({"patches_per_slide": list(patches_per_slide)} if tuple(patches_per_slide) != PATCHES_PER_SLIDE else {}),
            **({"dtype": dtype} if dtype != "float32" else {}),
            **({"scenario": scenario_name} if scenario_name != DEFAULT_SCENARIO else {}),
            **({"prognostic_fraction": sc.fraction} if scenario_name == "sparse" else {})}


def is_default(recorded: dict) -> bool:
    """Whether a root's synth.json describes the embedded default (any subset of cohorts): its splits are pinned."""
    return {k: v for k, v in recorded.items() if k != "cohorts"} == params()


def ensure_synthetic(root: Path, rewrite_stale: bool = False, log=print) -> None:
    """Write the default cohorts into `root` on first use; with `rewrite_stale`, also rewrite a root an older
    generator wrote (otherwise a sweep would read stale cohorts whose splits the manifest no longer pins).
    A root written by this generator with other settings is the user's choice and left alone."""
    root = Path(root)
    stamp = root / "synth.json"
    if (root / "signatures.csv").is_file():
        recorded = json.loads(stamp.read_text()) if stamp.is_file() else {}
        if not rewrite_stale or recorded.get("generator") != "bench.data.synth" or recorded.get("version") == GENERATOR_VERSION:
            return
        log(f"{root} was written by synthetic generator version {recorded.get('version', 1)}; rewriting it with "
            f"version {GENERATOR_VERSION} ...")
        for folder in ("tables", "splits", "features", "truth"):
            shutil.rmtree(root / folder, ignore_errors=True)  # slide names change with the generator
    else:
        log(f"generating the embedded synthetic cohorts in {root} ...")
    synthesize(root, log=log)


def synthesize(out: Path, cohorts=COHORTS, seed: int = DEFAULT_SEED, scale: float = DEFAULT_SCALE,
               min_test_events: int = MIN_TEST_EVENTS, log=print, dim: int = FEATURE_DIM,
               patches_per_slide: tuple[int, int] = PATCHES_PER_SLIDE, dtype: str = "float32",
               scenario_name: str = DEFAULT_SCENARIO, prognostic_fraction: float | None = None) -> list[dict]:
    """Write the synthetic data root: signatures, then each cohort; records the parameters used (synth.json, last,
    so its presence means the root is complete)."""
    recorded = {**params(seed, scale, min_test_events, dim, patches_per_slide, dtype, scenario_name,
                         prognostic_fraction), "cohorts": list(cohorts)}
    root = DataRoot(Path(out))
    root.root.mkdir(parents=True, exist_ok=True)
    (root.root / "synth.json").unlink(missing_ok=True)
    _signatures().to_csv(root.signatures, index=False, lineterminator="\n")
    summaries = []
    for cohort in cohorts:
        s = synth_cohort(root, cohort, seed, scale, min_test_events, dim, patches_per_slide, dtype, scenario_name,
                         prognostic_fraction)
        log(f"  synth {study(cohort):12s} {s['patients']:4d} patients  {s['slides']:4d} slides  {s['patches']:6d} patches  "
            f"censoring {s['censoring']:.3f} (target {synthetic_censoring(cohort):.3f}, real {SPECS[cohort].censoring:.3f})  "
            f"deaths per test fold {min(s['test_events'])}-{max(s['test_events'])}  oracle C {s['oracle_c_index']:.3f}")
        summaries.append(s)
    (root.root / "synth.json").write_text(json.dumps(recorded, indent=1) + "\n")
    return summaries
