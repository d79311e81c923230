"""`python -m bench.data synth|fetch|check`: make, download or validate a data root."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.errors import BenchError, cli_main

from .layout import DataRoot, parse_cohorts


def patch_range(text: str) -> tuple[int, int]:
    """`LO-HI` patches per slide, inclusive, 1 <= LO <= HI."""
    lo, sep, hi = text.partition("-")
    if not (sep and lo.strip().isdigit() and hi.strip().isdigit()) or not 1 <= int(lo) <= int(hi):
        raise BenchError(f"--patches-per-slide {text!r}: give an inclusive range LO-HI of patches per slide with "
                         "1 <= LO <= HI, such as 16-96 (the default) or 10000-20000 (real slides at 20x, about 15k).")
    return int(lo), int(hi)


def _synth(args) -> int:
    from .synth import DEFAULT_SCALE, scenario, synthesize

    if args.min_test_events < 0 or (args.scale is not None and args.scale <= 0) or args.dim < 1:
        raise BenchError(f"--scale {args.scale}, --min-test-events {args.min_test_events} and --dim {args.dim}: the scale "
                         "must be positive, the deaths per test fold zero or more and the feature width at least 1.")
    patches = patch_range(args.patches_per_slide)
    sc = scenario(args.scenario, args.prognostic_fraction)
    t0 = time.perf_counter()
    print(f"writing synthetic cohorts to {args.out} (scenario {args.scenario}: risk carried by {sc.carried_by}, "
          f"{sc.fraction:.3g} of a slide's patches informative on average; seed {args.seed}, scale "
          f"{args.scale or DEFAULT_SCALE}, at least {args.min_test_events} deaths per test fold, features of width "
          f"{args.dim}, {patches[0]}-{patches[1]} patches per slide, {args.dtype})")
    cohorts = parse_cohorts(args.cohorts)
    synthesize(args.out, cohorts, seed=args.seed, scale=args.scale or DEFAULT_SCALE,
               min_test_events=args.min_test_events, dim=args.dim, patches_per_slide=patches, dtype=args.dtype,
               scenario_name=args.scenario, prognostic_fraction=args.prognostic_fraction)
    root = DataRoot(args.out)
    nbytes = sum(p.stat().st_size for c in cohorts for p in root.features(c).rglob("*.h5"))
    print(f"done in {time.perf_counter() - t0:.1f} s; features on disk {nbytes / 1e9:.2f} GB")
    return 0


def _check(args) -> int:
    from .check import check_cohort

    root = DataRoot(args.data_root, args.features_dir)
    missing = []
    patients = patches = nbytes = 0
    for cohort in parse_cohorts(args.cohorts):
        variant = root.resolve_variant(cohort, args.table_variant)
        rep = check_cohort(root, cohort, variant, features=not args.no_features,
                           allow_unverified=args.allow_unverified_splits, deep=args.deep)
        print("\n".join(rep.lines))
        missing += rep.missing_patients
        patients += len(rep.bag_sizes)
        patches += sum(rep.bag_sizes.values())
        nbytes += sum(rep.bag_sizes.values()) * (rep.feature_dim or 0) * 4
    if patches:
        print(sweep_estimate(patients, patches, nbytes))
    if missing and args.on_missing == "error":
        raise BenchError(f"{len(missing)} patient(s) have no slide features: {', '.join(missing[:5])}"
                         f"{', ...' if len(missing) > 5 else ''} (all listed above). Extract them, or pass "
                         "--on-missing skip to run without those patients (the run records which were dropped).")
    return 0


def sweep_estimate(patients: int, patches: int, nbytes: int) -> str:
    """Size of a paper-scale sweep over these patients: what one epoch reads, and patch passes in all."""
    from bench.profiles import PROFILES

    paper = PROFILES["paper"]
    fits = paper.trials * (1 - paper.inner_val_fraction) + 1  # tuning trials on the inner part, then the refit
    passes = 0.8 * patches * paper.epochs * fits * 5  # training folds hold 4/5 of the patients, 5 folds
    return (f"sweep size: {patients} patients with features, {patches} patches = {nbytes / 2**30:.2f} GiB of "
            f"float32 (the I/O of one epoch over every cohort without the in-memory cache). A paper-profile nested sweep "
            f"({paper.trials} trials + refit, {paper.epochs} epochs, 5 folds) makes about {passes / 1e6:,.1f} million patch "
            "forward+backward passes per model; multiply by a model's seconds per patch from `python -m bench.perf models` "
            "(run it on the GPU you will use) for its time.")


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.data", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser(
        "synth", help="write the synthetic TCGA-like cohorts (real formats, known ground truth)",
        description="Write the synthetic TCGA-like cohorts in the real formats, with a known true risk (its C-index, "
                    "the oracle, is printed per cohort). The synthetic default has power: every test fold of every "
                    "cohort holds at least 8 deaths. Its censoring rate is half the real cohort's (BRCA 86% -> 43%), and "
                    "each cohort holds the fewest patients that give 8 deaths per test fold at that rate (318 in all; "
                    "the real rates would need about 880). A smaller --scale keeps the floor; a larger one adds patients.")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--scale", type=float, default=None,
                   help="fraction of the real patient counts, above the floor of deaths per test fold (default 0.05, "
                        "below the floor for every cohort)")
    s.add_argument("--min-test-events", type=int, default=8,
                   help="the floor: deaths in every test fold (default 8; 0 leaves only 8 deaths per cohort, for tiny roots)")
    s.add_argument("--cohorts", default=None, help="comma-separated short names (default: all five)")
    s.add_argument("--dim", type=int, default=1024,
                   help="feature width, as an encoder's (CONCH 512, UNI2-h 1536, Virchow2 2560; default 1024, CLAM's ResNet-50)")
    s.add_argument("--patches-per-slide", default="16-96", metavar="LO-HI",
                   help="patches per slide, drawn uniformly from LO..HI (default 16-96, small bags for a fast default; "
                        "real TCGA slides hold about 15k at 20x: 10000-20000 makes real-size bags)")
    s.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                   help="stored feature precision (float16 halves the disk; the suite reads it as float32)")
    s.add_argument("--scenario", choices=["shared", "histology", "genomic", "null", "sparse"], default="shared",
                   help="which modality carries the risk: shared (default: genes and patches), histology (the patches "
                        "alone; the genes follow an independent latent of the same strength), genomic (the genes "
                        "alone), null (neither: the hazard follows a latent the data does not carry), sparse (as "
                        "shared, with rare informative patches); recorded in synth.json and the truth files")
    s.add_argument("--prognostic-fraction", type=float, default=None, metavar="F",
                   help="--scenario sparse: mean share of informative patches per slide (default 0.02; shared has "
                        "0.175; every slide keeps at least one)")
    s.set_defaults(func=_synth)

    c = sub.add_parser("check", help="validate a data root and print a per-cohort summary")
    c.add_argument("--data-root", type=Path, required=True)
    c.add_argument("--cohorts", default=None)
    c.add_argument("--table-variant", choices=["sig", "mutsig"], default=None,
                   help="read tables/<variant>/ (fetched real tables); default: tables/, else sig, else mutsig")
    c.add_argument("--features-dir", type=Path, default=None, help="MCAT-style feature folder (tcga_<c>_20x_features/)")
    c.add_argument("--no-features", action="store_true", help="skip the slide-feature checks")
    c.add_argument("--deep", action="store_true", help="read every bag and check its values (slow on real data)")
    c.add_argument("--on-missing", choices=["error", "skip"], default="error")
    c.add_argument("--allow-unverified-splits", action="store_true")
    c.set_defaults(func=_check)

    from . import fetch

    f = sub.add_parser("fetch", help="download and verify the public TCGA tables, splits and MCAT's per-fold results")
    fetch.add_arguments(f)
    f.set_defaults(func=fetch.run)

    args = parser.parse_args(argv)
    return args.func(args)


main = cli_main(_main)

if __name__ == "__main__":
    raise SystemExit(main())
