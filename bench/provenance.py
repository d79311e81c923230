"""What a job's result depends on besides its settings: the feature files read and the suite's code.

Both are cheap to compute (file names and sizes from `stat` plus a fixed 32 KiB sample of each feature
file's bytes, the width the store checked, a `git diff`), so every job checks them, and a changed input
reruns the job instead of reusing a stale run.

The suite version names the code that computes results (`bench/`, `models/`, `pyproject.toml`, less
`NOT_RESULT_CODE`: the report, the benchmarks, bench.predict, the drivers of the default and of the validity
study, and this module) by content:
`<version>+code.<hash of their committed file ids>`. A commit that changes only docs, tests, the report or
`results/` keeps it, so it never reruns a finished sweep; the commit itself is the `git_commit` tag.
Dirty-tree rule: uncommitted changes to that code add `.dirty.<hash of the diff>`. Such runs are reused
only by a rerun from the very same uncommitted code (so an interrupted sweep still resumes); any further
edit gives another version and reruns the jobs.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bench.data import FeatureStore

REPO = Path(__file__).resolve().parents[1]
RESULT_CODE = ("bench", "models", "pyproject.toml")  # what computes results; tests and docs do not
# ... less what computes no result: the report (reads finished runs), the benchmarks, bench.predict, the
# embedded default's driver (calls the sweep and the report), the validity study's driver and statistics (call
# the job function, read finished runs) and this module (names inputs, changes none)
NOT_RESULT_CODE = ("bench/report", "bench/perf", "bench/predict.py", "bench/reproduce.py",
                   "bench/validate.py", "bench/validity.py", "bench/provenance.py")
_PATHSPEC = (*RESULT_CODE, *(f":(exclude){p}" for p in NOT_RESULT_CODE))


# The content sample of each feature file: blocks evenly spaced from its first byte to its last. Two encoders of
# one width over the same patches write files of one size, so names and sizes cannot tell them apart; any block
# inside the feature matrix can. A file no larger than the sample is read whole.
SAMPLE_BLOCKS = 8
SAMPLE_BLOCK_BYTES = 4096


def content_sample(path: Path, size: int) -> str:
    """sha256 of `SAMPLE_BLOCKS` blocks of `SAMPLE_BLOCK_BYTES` at fixed offsets of the file (all of it when small)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= SAMPLE_BLOCKS * SAMPLE_BLOCK_BYTES:
            digest.update(f.read())
        else:
            step = (size - SAMPLE_BLOCK_BYTES) / (SAMPLE_BLOCKS - 1)
            for i in range(SAMPLE_BLOCKS):
                f.seek(round(i * step))
                digest.update(f.read(SAMPLE_BLOCK_BYTES))
    return digest.hexdigest()


def features_fingerprint(store: FeatureStore, slides: Iterable[str]) -> dict[str, str]:
    """Folder, feature width and a hash of the names, sizes and content samples of the files these slides read.

    A sample, not every byte: hashing hundreds of GB would cost minutes per sweep start, while 32 KiB per file
    (`content_sample`) tells two encoders apart for about what reading the file's header costs (1.6 ms a file
    read cold, measured on real-size float16 files). The width is the store's, which
    `FeatureStore.index` took from the headers and checked on every file before this is called.
    """
    paths = sorted({p for p in (store.slide_path(s) for s in slides) if p is not None})
    digest = hashlib.sha256()
    for p in paths:
        size = p.stat().st_size
        digest.update(f"{p.relative_to(store.folder).as_posix()}\t{size}\t{content_sample(p, size)}\n".encode())
    return {"features_dir": str(store.folder.resolve()), "features_width": str(store.dim),
            "features_files": str(len(paths)), "features_hash": digest.hexdigest()[:16]}


@functools.lru_cache(maxsize=1)
def suite_version() -> str:
    """Package version plus a hash of the result code's committed files, `.dirty.<diff hash>` when it is uncommitted.

    Computed once per process (the code it imported); the driver's value travels in `SweepSettings`, so
    worker processes and Ray retries record the sweep's version even if the checkout changes meanwhile.
    """
    try:
        base = version("ghanet-bench")
    except PackageNotFoundError:
        base = "unknown"
    listing = _git("ls-tree", "-r", "HEAD", "--", *RESULT_CODE)  # "<mode> blob <id>\t<path>" per committed file
    files = "".join(line for line in listing.splitlines(keepends=True) if not _excluded(line.split("\t", 1)[1]))
    if not files:  # not a git checkout (an installed package): the version alone
        return base
    code = f"{base}+code.{hashlib.sha256(files.encode()).hexdigest()[:12]}"
    diff = _git("diff", "HEAD", "--", *_PATHSPEC)
    untracked = _git("ls-files", "--others", "--exclude-standard", "--", *_PATHSPEC).split()
    if not diff and not untracked:
        return code
    digest = hashlib.sha256(diff.encode())
    for name in sorted(untracked):
        path = REPO / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b""))
    return f"{code}.dirty.{digest.hexdigest()[:12]}"


def _excluded(path: str) -> bool:
    return any(path.strip() == p or path.startswith(p + "/") for p in NOT_RESULT_CODE)


def git_commit() -> str:
    """The full commit of this checkout, or `unknown` outside git."""
    return _git("rev-parse", "HEAD").strip() or "unknown"


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=REPO)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout if out.returncode == 0 else ""
