"""`python -m bench.perf io`: one cohort's bags read cold and warm beside the disk's own sequential read (see `io_table`).

    python -m bench.perf io --data-root DIR --cohort blca [--cache-gb X]
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError


IO_BLOCK = 8 << 20  # bytes per read() of the raw sequential read


def drop_page_cache(paths: Sequence[Path]) -> None:
    """Evict the files from the page cache, so the next read comes from the disk (no root needed, unlike
    /proc/sys/vm/drop_caches): fdatasync first, since POSIX_FADV_DONTNEED drops clean pages only."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def sequential_read(paths: Sequence[Path], block: int = IO_BLOCK) -> tuple[float, int]:
    """Seconds and bytes of plain buffered reads of whole files, one after another: the disk's own rate."""
    buf = bytearray(block)
    nbytes = 0
    start = time.perf_counter()
    for path in paths:
        with open(path, "rb") as f:
            while n := f.readinto(buf):
                nbytes += n
    return time.perf_counter() - start, nbytes


def h5_read(paths: Sequence[Path]) -> float:
    """Seconds to read every file's `features` dataset with h5py alone (no conversion or checks)."""
    import h5py

    start = time.perf_counter()
    for path in paths:
        with h5py.File(path, "r") as f:
            f["features"][:]
    return time.perf_counter() - start


def peak_rss() -> int:
    """This process's peak resident memory in bytes (Linux reports ru_maxrss in KiB, macOS in bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@dataclass(frozen=True)
class IoSource:
    """One cohort's bags and feature files, in table order, found from the file headers."""

    folder: Path
    patients: dict[str, list[str]]  # case id -> slide ids
    files: list[Path]
    largest_bag: int  # patches
    patches: int  # in all bags
    dim: int
    dtype: str  # as stored


def io_source(root: Path, cohort: str, features_dir: Path | None = None) -> IoSource:
    from bench.data import DataRoot, FeatureStore, open_cohort

    import h5py

    data = DataRoot(root, features_dir)
    co = open_cohort(data, cohort, data.resolve_variant(cohort))
    store = FeatureStore(data.features(cohort))
    patients = {c: list(s) for c, s in co.patients["slides"].items()}
    sizes = store.index(patients)  # headers only: every file's width and dtype checked, missing files named
    files = [store.slide_path(s) for slides in patients.values() for s in slides]
    if any(f.suffix != ".h5" for f in files):
        raise BenchError(f"{data.features(cohort)} holds pt files; `bench.perf io` times the h5 read path (CLAM's "
                         "h5_files/). Convert them, or time a cohort stored as h5.")
    with h5py.File(files[0], "r") as f:
        dtype = str(f["features"].dtype)
    return IoSource(data.features(cohort), patients, files, max(sizes.values()), sum(sizes.values()), store.dim, dtype)


def _io_child(source: IoSource, cache_bytes: int, cache_dtype: str, seed: int = 0) -> dict:
    """One process's view (run in a fresh one): its peak RSS after start-up, then a cold pass over the bags in
    table order and two warm passes, each in a new shuffled order as an epoch draws them, through the suite's
    FeatureStore. The second warm pass is the steady state of a cache: what every later epoch hits."""
    import numpy as np

    from bench.data.features import FeatureStore, process_cache

    store = FeatureStore(source.folder, dim=source.dim, cache=process_cache(cache_bytes), dtype=cache_dtype)
    cases = list(source.patients)
    rng = np.random.default_rng(seed)
    out = {"base_rss": peak_rss()}
    drop_page_cache(source.files)
    for name, order in (("cold", cases), ("warm", [cases[i] for i in rng.permutation(len(cases))]),
                        ("warm again", [cases[i] for i in rng.permutation(len(cases))])):
        hits = 0
        start = time.perf_counter()
        for case in order:
            hits += store.cache is not None and store.cache.get((str(store.folder), case)) is not None
            store.bag(case, source.patients[case])
        out[name] = (time.perf_counter() - start, hits)
    out["peak_rss"] = peak_rss()
    return out


def in_child(fn, *args):
    """`fn(*args)` in a freshly spawned process, so its peak RSS is its own."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def io_table(source: IoSource, caches: Sequence[int], cache_dtype: str = "float32") -> str:
    """Read a cohort cold and warm and set it against the disk's sequential read of the same files, in one run.

    Cold = each file fsynced and evicted with POSIX_FADV_DONTNEED before the pass. Rows: the raw files read
    sequentially (the disk's rate, 100%), h5py's read of the `features` datasets, then per cache budget a fresh
    process's cold pass over the bags through FeatureStore (table order) and two warm passes (each shuffled anew,
    page cache and bag cache as they stand) with their cache hits and the process's peak RSS. GB = 1e9 bytes of
    feature files.
    """
    nbytes = sum(f.stat().st_size for f in source.files)
    n_bags = len(source.patients)
    drop_page_cache(source.files)
    t_disk, read = sequential_read(source.files)
    drop_page_cache(source.files)
    t_h5 = h5_read(source.files)
    header = f"{'pass':<46}{'s':>8}{'GB/s':>8}{'bags/s':>9}{'% disk':>8}{'cache hits':>12}{'peak RSS GB':>13}"
    lines = [header, "-" * len(header)]
    shares = []  # per cache: its share of the cohort and its second warm epoch's hit rate

    def row(name, secs, hits="", rss=""):
        # a space before every figure: a tiny warm pass can outgrow a column (bags/s in the 100,000s)
        lines.append(f"{name:<46}{secs:>7.3f} {nbytes / secs / 1e9:>7.3f} {n_bags / secs:>8.1f} "
                     f"{100 * t_disk / secs:>6.0f}% {hits:>11} {rss:>12}")

    row("disk: raw files, sequential, cold", t_disk)
    row("h5py features datasets, cold", t_h5)
    for budget in caches:
        r = in_child(_io_child, source, budget, cache_dtype)
        label = f"cache {budget / 1e9:.3g} GB" if budget else "no cache"
        rss = f"{r['peak_rss'] / 1e9:.2f} (+{(r['peak_rss'] - r['base_rss']) / 1e9:.2f})"
        row(f"bags, {label}, cold", r["cold"][0], f"{r['cold'][1]}/{n_bags}", rss)
        row(f"bags, {label}, warm (shuffled)", r["warm"][0], f"{r['warm'][1]}/{n_bags}")
        row(f"bags, {label}, warm again (reshuffled)", r["warm again"][0], f"{r['warm again'][1]}/{n_bags}")
        if budget:
            held = source.patches * source.dim * (2 if cache_dtype == "float16" else 4)
            shares.append(f"the {budget / 1e9:.3g} GB cache is {100 * min(budget / held, 1):.0f}% of the cohort's "
                          f"{held / 1e9:.3g} GB as {cache_dtype}; its second warm epoch hit "
                          f"{100 * r['warm again'][1] / n_bags:.0f}% of the bags")
    lines.append(f"{n_bags} bags in {len(source.files)} h5 files, {nbytes / 1e9:.3f} GB of {source.dtype} [N, {source.dim}] "
                 f"(largest bag {source.largest_bag:,} patches) under {source.folder}; read {read / 1e9:.3f} GB raw. Cold: "
                 "each file fsynced and evicted (posix_fadvise POSIX_FADV_DONTNEED) before the pass. Bags are held as "
                 f"{cache_dtype}; peak RSS of the reading process (+ above its start-up). "
                 + "".join(f"{s[0].upper()}{s[1:]}. " for s in shares) + f"Load average at the end {os.getloadavg()[0]:.2f}.")
    return "\n".join(lines)


def add_parser(sub) -> None:
    p_io = sub.add_parser("io", help="read one cohort's bags cold and warm beside the disk's sequential read of its files")
    p_io.add_argument("--data-root", type=Path, required=True)
    p_io.add_argument("--cohort", required=True, help="one cohort (short name, e.g. blca)")
    p_io.add_argument("--features-dir", type=Path, default=None, help="MCAT-style feature folder, as bench.data check")
    p_io.add_argument("--cache-gb", type=float, default=None,
                      help="bag cache budget of the second reading process in GB (default as bench.run: "
                           "25%% of MemAvailable); the first reads without a cache. 0: only the uncached process")
    p_io.add_argument("--cache-dtype", choices=["float32", "float16"], default="float32", help="as bench.run")
    p_io.set_defaults(func=main)


def main(args) -> int:
    from bench.data import parse_cohorts
    from bench.data.features import default_cache_bytes

    cohorts = parse_cohorts(args.cohort)
    if len(cohorts) != 1:
        raise BenchError(f"--cohort {args.cohort!r}: `bench.perf io` reads one cohort at a time, such as --cohort blca.")
    if args.cache_gb is not None and args.cache_gb < 0:
        raise BenchError(f"--cache-gb {args.cache_gb}: a cache budget cannot be negative (0 times only the uncached read).")
    budget = default_cache_bytes() if args.cache_gb is None else int(args.cache_gb * 1e9)
    source = io_source(args.data_root, cohorts[0], args.features_dir)
    bag = source.largest_bag * source.dim * (2 if args.cache_dtype == "float16" else 4)
    if 0 < budget < bag:
        raise BenchError(f"--cache-gb {budget / 1e9:.3g} holds no bag of {cohorts[0]}'s largest patient: "
                         f"{source.largest_bag:,} patches x {source.dim} = {bag / 1e9:.3g} GB in {args.cache_dtype}. "
                         "Give at least that, --cache-dtype float16 to halve every bag, or 0 for no cache.")
    print(io_table(source, [0] + ([budget] if budget else []), args.cache_dtype))
    return 0
