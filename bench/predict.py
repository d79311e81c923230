"""`python -m bench.predict`: score a cohort's patients with a fold model that `bench.run` saved.

    python -m bench.predict --run-id ID --data-root DIR --cohort C [--out predictions.csv] [--attention DIR]
                            [--tracking-uri URI] [--features-dir DIR] [--table-variant V] [--device auto|cpu|cuda]

Writes one row per patient with features (every patient for a genomics-only model) as the run's
predictions.csv has them: case_id, split, time, event, bin, risk, S_1..S_k, true_risk. `split` says what
the model saw: `train` or `test` for the patients its own fold trained on or held out (the run's cohort in
the run's data root), `new` for every other patient. Each kind is scored apart with the run's micro-batch
and token budget, so the run's own patients get the numbers it logged (same device).

`--attention DIR` writes one CSV per slide, `DIR/<slide>.csv`: patch, x, y (the h5 `coords`; empty for
pt files) and the model's weights per patch. They are normalised over the patient's whole bag (all
slides), as the model pools them. ABMIL: `attention`. G-HANet: `attention` (its gated attention E1) and
`hyperedge_<group>` (the incidence (E1 + E2) / 2 of each gene group's hyperedge, which pools the patches).
MCAT: `coattn_<group>` (each gene group's co-attention). AMIL+SNN and CLAM-SB: `attention`. MOTCat:
`plan_<group>` (the transport plan's mass per patch; unbalanced, so it need not sum to 1). TransMIL, SNN,
CMTA and CoxNet have no per-patch weights.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch

from bench import checkpoint
from bench.data import DataRoot, FeatureStore, open_cohort, parse_cohorts
from bench.data.features import ENCODER_WIDTHS
from bench.data.layout import TABLE_VARIANTS, slide_stem
from bench.errors import BenchError, cli_main
from bench.fold import PatientSet, patient_set
from bench.survival import c_index
from bench.tracking import (PREDICTIONS_ARTIFACT, TRACKING_URI_HELP, default_tracking_uri, describe,
                            finished_fold_run)
from bench.train import TrainSettings, collate, predict
from models import OMICS, WSI

GROUP_CODES = ("tsg", "onc", "pk", "cdm", "tf", "cgf")  # the six gene groups, in GROUP_NAMES order


def _ghanet_maps(aux) -> dict[str, torch.Tensor]:
    maps = {"attention": aux["morph_weights"][0]}
    maps.update({f"hyperedge_{g}": aux["incidence"][0, i] for i, g in enumerate(GROUP_CODES)})
    return maps


def _attention(aux) -> dict[str, torch.Tensor]:
    return {"attention": aux["attention"][0]}


def _per_group(key: str, column: str):
    return lambda aux: {f"{column}_{g}": aux[key][0, i] for i, g in enumerate(GROUP_CODES)}


# Per-patch weights [N] by column, from one unpadded bag's `aux`, for the models that have them.
ATTENTION_MAPS = {
    "abmil": _attention, "abmil_snn": _attention, "clam_sb": _attention,
    "ghanet": _ghanet_maps,
    "mcat": _per_group("coattn", "coattn"),
    "motcat": _per_group("coattn", "plan"),
}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--run-id", required=True, help="a finished fold run of `bench.run` (saved with --save-models, the default)")
    p.add_argument("--data-root", type=Path, required=True, help="a data root in the suite's layout (tables, features)")
    p.add_argument("--cohort", required=True, help="the cohort to score (blca, brca, gbmlgg, luad, ucec)")
    p.add_argument("--out", type=Path, default=Path("predictions.csv"))
    p.add_argument("--attention", type=Path, default=None, metavar="DIR", help="write per-patch attention, one CSV per slide")
    p.add_argument("--tracking-uri", default=default_tracking_uri(), help=TRACKING_URI_HELP)
    p.add_argument("--features-dir", type=Path, default=None, help="MCAT-style feature folder (tcga_<c>_20x_features/)")
    p.add_argument("--table-variant", choices=TABLE_VARIANTS, default=None,
                   help="default: the run's own where the data root has it, else as bench.run picks")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    return p.parse_args(argv)


def load_run_model(uri: str, run_id: str, tmp: Path):
    """(run, saved model, the run's own predictions) of a finished fold run that saved its model."""
    client, run = finished_fold_run(uri, run_id)
    names = {Path(f.path).name for f in client.list_artifacts(run_id, checkpoint.ARTIFACT_DIR)}
    if not {checkpoint.SPEC, checkpoint.WEIGHTS} <= names:
        t = run.data.tags
        raise BenchError(f"{describe(run)} holds no saved model (artifact {checkpoint.ARTIFACT_DIR}/ with "
                         f"{checkpoint.SPEC} and {checkpoint.WEIGHTS}): it ran with --no-save-models, or before fold "
                         "models were saved. bench.run skips a finished job, so train it again into a new experiment: "
                         f"python -m bench.run --models {t.get('model')} --cohorts {t.get('cohort')} --folds {t.get('fold')} "
                         f"--seed {t.get('seed')} --protocol {t.get('protocol')} --experiment NEW with the sweep's other "
                         "arguments (the same settings and seed train the same model on the same device), then score that run.")
    folder = Path(client.download_artifacts(run_id, checkpoint.ARTIFACT_DIR, str(tmp)))
    saved = checkpoint.load(folder, describe(run))
    own = pd.read_csv(client.download_artifacts(run_id, PREDICTIONS_ARTIFACT, str(tmp)), dtype={"case_id": str})
    return run, saved, own


def _check_omics(cohort, saved: checkpoint.SavedModel, where: str) -> None:
    for i, (have, want) in enumerate(zip(cohort.groups, saved.omic_groups, strict=True)):
        if list(have) != list(want):
            diff = sorted(set(want) ^ set(have))[:5]
            raise BenchError(f"the {saved.name} model of {where} reads genomics at inference, but gene group "
                             f"{GROUP_CODES[i]} of {cohort.table_path} has {len(have)} columns where the model was "
                             f"trained on {len(want)} (differing: {', '.join(diff) or 'same genes, other order'}). "
                             "Score it with a table of the same genes (the run's table variant, tag table_variant).")


def _coords(path: Path, n: int) -> np.ndarray:
    """The h5 file's patch coordinates [n, 2]; NaN where the file has none (pt files)."""
    if path.suffix == ".h5":
        with h5py.File(path, "r") as f:
            if "coords" in f and f["coords"].shape == (n, 2):
                return np.asarray(f["coords"][:], dtype=float)
    return np.full((n, 2), np.nan)


@torch.no_grad()
def write_attention(saved: checkpoint.SavedModel, pset: PatientSet, cohort, store: FeatureStore,
                    settings: TrainSettings, folder: Path) -> int:
    """One CSV per slide: patch, x, y and the model's weights per patch (one unpadded bag at a time, float32)."""
    folder.mkdir(parents=True, exist_ok=True)
    model, maps = saved.model, ATTENTION_MAPS[saved.name]
    written = 0
    for i, case in enumerate(pset.case_ids):
        wsi, mask, omics = collate(pset, [i], type(model), settings.device, for_training=False)
        aux = model(wsi=wsi, mask=mask, omics=omics).aux
        scores = {k: v.float().cpu().numpy() for k, v in maps(aux).items()}
        start = 0
        for slide in cohort.patients.at[case, "slides"]:
            n = store.n_patches(slide, case)
            xy = _coords(store.slide_path(slide), n)
            table = pd.DataFrame({"patch": np.arange(n), "x": xy[:, 0], "y": xy[:, 1],
                                  **{k: v[start:start + n] for k, v in scores.items()}})
            table.to_csv(folder / f"{slide_stem(slide)}.csv", index=False, lineterminator="\n", float_format="%.8g")
            start += n
            written += 1
    return written


def _main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # three small downloads, no bars
    cohorts = parse_cohorts(args.cohort)
    if len(cohorts) != 1:
        raise BenchError(f"--cohort {args.cohort!r}: score one cohort at a time.")
    name = cohorts[0]
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda was asked for, but torch sees no CUDA device. Use --device cpu or auto.")
    with tempfile.TemporaryDirectory() as tmp:
        run, saved, own = load_run_model(args.tracking_uri, args.run_id, Path(tmp))
    where, tags = describe(run), run.data.tags
    cls = type(saved.model)
    if args.attention is not None and saved.name not in ATTENTION_MAPS:
        raise BenchError(f"--attention: the {saved.name} model of {where} has no per-patch attention weights to write "
                         f"(models with them: {', '.join(sorted(ATTENTION_MAPS))}). Leave --attention out to score the "
                         "patients, or pick a run of one of those models.")

    root = DataRoot(args.data_root, args.features_dir)
    variant = args.table_variant or tags.get("table_variant")
    if variant not in TABLE_VARIANTS or not root.table(name, variant).is_file():
        variant = root.resolve_variant(name, args.table_variant)
    cohort = open_cohort(root, name, variant)
    needs_omics = OMICS in cls.infer_modalities
    if needs_omics:
        _check_omics(cohort, saved, where)
    ids, store = cohort.case_ids, None
    if WSI in cls.infer_modalities:
        store = FeatureStore(root.features(name), dtype=saved.scoring["feature_precision"])
        ids = [c for c in ids if not store.missing_slides(cohort.patients.at[c, "slides"])]
        if not ids:
            raise BenchError(f"no patient of {name} has feature files under {store.folder} (h5_files/ or pt_files/). "
                             "Extract the slides' features with CLAM, or pass --features-dir naming where they are.")
        skipped = len(cohort.case_ids) - len(ids)
        if skipped:
            print(f"{skipped} patient(s) of {name} without feature files are not scored", file=sys.stderr)
        store.index({c: cohort.patients.at[c, "slides"] for c in ids})  # every file's width and dtype, headers only
        if store.dim != saved.feature_dim:
            raise BenchError(f"the features of {name} under {store.folder} are {store.dim} wide, but the "
                             f"{saved.name} model of {where} was trained on {saved.feature_dim}-wide features: a model "
                             f"reads features of its own encoder only ({ENCODER_WIDTHS}). Score features from the "
                             "encoder it was trained on, or pick a run trained on this encoder's features (tag feature_dim).")

    # the run's own patients (its cohort in its data root) keep its split, in its order; everyone else is new
    mine = tags.get("cohort") == name and tags.get("data_root") == str(root.root.resolve())
    keep = set(ids)
    groups = {s: [c for c in own.loc[own["split"] == s, "case_id"] if c in keep] if mine else [] for s in ("test", "train")}
    seen = set(groups["test"]) | set(groups["train"])
    groups["new"] = [c for c in ids if c not in seen]
    scoring = saved.scoring
    settings = TrainSettings(micro_batch=scoring["micro_batch"], max_tokens=scoring["max_tokens"],
                             precision=scoring["precision"], device=device)
    model = saved.model.to(device)
    scaler = saved.scaler if needs_omics else None  # genomics only where the model reads them at inference
    psets = {s: patient_set(cohort, g, saved.edges, scaler, store) for s, g in groups.items() if g}
    preds = pd.concat([predict(model, pset, settings, split=s) for s, pset in psets.items()], ignore_index=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    preds.to_csv(args.out, index=False, lineterminator="\n", float_format="%.8g")
    counts = ", ".join(f"{len(g)} {s}" for s, g in groups.items() if g)
    print(f"scored {len(preds)} patients of {name} ({counts}) with the {saved.name} model of {where} -> {args.out}")
    for s, pset in psets.items():
        rows = preds[preds["split"] == s]
        c = c_index(rows["time"], rows["event"], rows["risk"])
        logged = f" (the run logged {run.data.metrics['c_index']:.4f})" if s == "test" and "c_index" in run.data.metrics else ""
        print(f"  C-index of the {s} patients: {c:.4f}{logged}")
    if args.attention is not None:
        slides = sum(write_attention(saved, pset, cohort, store, settings, args.attention) for pset in psets.values())
        print(f"attention of {len(preds)} patients: {slides} slide CSVs in {args.attention}")
    return 0


main = cli_main(_main)

if __name__ == "__main__":
    raise SystemExit(main())
