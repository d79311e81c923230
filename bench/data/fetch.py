"""Download the public TCGA tables, signature list, MCAT splits and MCAT's per-fold results, each pinned by checksum.

Every file comes from a fixed upstream commit (`sources.json`) at
`https://raw.githubusercontent.com/<owner>/<repo>/<commit>/<path>`, or, with `--mirror BASE`, from
`BASE/<owner>/<repo>/<commit>/<path>` (BASE an http(s) URL, a file:// URL or a plain folder).
A file is written to a temporary name beside its destination, verified, then renamed into place,
so a file under its final name has always passed its checksum. Reruns re-hash what is present and
download only what is missing or wrong. Only urllib is used.

Checksums: sha256 for the tables and `signatures.csv` (from SOURCES.md), sha256 for the 25 split
files read from the repository's `splits/MANIFEST.sha256`, and the git blob id where only that is
known (the BRCA and GBMLGG `sig` tables, whose sha256 was never observed). MCAT's released per-fold
val C-indices (`bench.data.published`) are pinned by sha256 and git blob id and land in
`<root>/published/mcat/<experiment>/summary_latest_tcga_<cohort>.csv`, for the report's paired comparisons.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import bench
from bench.data import published
from bench.data.layout import COHORTS, N_FOLDS, TABLE_VARIANTS, DataRoot, parse_cohorts
from bench.errors import BenchError, cli_main

RAW_BASE = "https://raw.githubusercontent.com"
SOURCES = Path(__file__).with_name("sources.json")
SPLIT_MANIFEST = Path(bench.__file__).resolve().parents[1] / "splits" / "MANIFEST.sha256"
CHUNK = 1 << 20
DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Remote:
    """One pinned upstream file and where it goes under the data root."""

    dest: Path
    repo: str  # owner/name
    commit: str
    path: str
    digests: dict[str, str] = field(hash=False)  # "sha256" / "git_blob" -> expected hex digest
    size: int | None = None

    def url(self, base: str) -> str:
        return f"{base.rstrip('/')}/{self.repo}/{self.commit}/{self.path}"


@dataclass(frozen=True)
class FetchResult:
    """Outcome for one file: `downloaded`, `verified` (already present and intact) or `failed`."""

    dest: Path
    url: str
    status: str
    nbytes: int = 0
    error: str | None = None


class FetchError(BenchError):
    """Some files failed; `results` holds every file's outcome (the verified ones stay on disk)."""

    def __init__(self, message: str, results: list[FetchResult]):
        super().__init__(message)
        self.results = results


class _Unreachable(BenchError):
    """The server could not be reached at all: every further file would fail the same way."""


def parse_variants(text: str | None) -> list[str]:
    """`sig,mutsig` -> ['sig', 'mutsig']; empty means both; unknown names are an error."""
    names = [t.strip().lower() for t in (text or "").split(",") if t.strip()] or list(TABLE_VARIANTS)
    for name in names:
        if name not in TABLE_VARIANTS:
            known = ", ".join(TABLE_VARIANTS)
            raise BenchError(f"unknown table variant {name!r}. Known variants: {known} (comma-separated).")
    return names


def read_split_manifest(path: Path) -> dict[str, str]:
    """`splits/MANIFEST.sha256` as {relative path: sha256}; it ships only with a source checkout."""
    if not path.is_file():
        raise BenchError(
            f"cannot verify the MCAT split files: the checksum list {path} is missing. It is part of the "
            "ghanet-bench source tree (splits/MANIFEST.sha256) and is not installed with a wheel; run the "
            "fetch from a git checkout installed with `pip install -e .`."
        )
    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, name = line.split(maxsplit=1)
            pins[name.strip()] = digest.lower()
    return pins


def plan(out: Path, cohorts: Iterable[str], variants: Iterable[str] = TABLE_VARIANTS) -> list[Remote]:
    """The files to fetch for these cohorts and table variants, with their expected checksums.

    MCAT's per-fold results come for every cohort whatever the variants: they are small and table-free.
    """
    cohorts, variants = list(cohorts), list(variants)
    src = json.loads(SOURCES.read_text())
    repos = src["repos"]
    root = DataRoot(Path(out))

    def remote(dest: Path, spec: dict, path: str, pins: dict) -> Remote:
        repo = repos[spec["repo"]]
        digests = {k: pins[k].lower() for k in ("sha256", "git_blob") if k in pins}
        return Remote(dest, repo["repo"], repo["commit"], path, digests, pins.get("bytes"))

    sig = src["signatures"]
    remotes = [remote(root.signatures, sig, sig["path"], sig)]

    splits = src["splits"]
    split_pins = read_split_manifest(SPLIT_MANIFEST)
    for c in cohorts:
        for k in range(N_FOLDS):
            key = root.split_key(c, k)
            name = splits["manifest_prefix"] + key
            if name not in split_pins:
                raise BenchError(f"{SPLIT_MANIFEST} has no checksum for {name}; restore it from git.")
            path = splits["path"].format(key=key)
            remotes.append(remote(root.split(c, k), splits, path, {"sha256": split_pins[name]}))

    for v in variants:
        table = src["tables"][v]
        for c in cohorts:
            remotes.append(remote(root.table(c, v), table, table["path"].format(cohort=c), table["files"][c]))

    results = src["published"]
    for experiment in published.MODELS.values():
        for c in cohorts:
            path = results["path"].format(experiment=experiment, cohort=c)
            dest = published.summary_path(root.root / published.SUBDIR, experiment, c)
            remotes.append(remote(dest, results, path, results["files"][experiment][c]))
    return remotes


def file_digests(path: Path) -> dict[str, str]:
    """sha256 and git blob id (`sha1(b"blob <len>\\0" + content)`) of a file, in one pass."""
    sha256 = hashlib.sha256()
    blob = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            sha256.update(chunk)
            blob.update(chunk)
    return {"sha256": sha256.hexdigest(), "git_blob": blob.hexdigest()}


def mismatch(path: Path, remote: Remote) -> str | None:
    """None when `path` matches every pinned checksum, else a sentence naming expected and actual."""
    actual = file_digests(path)
    for algo, expected in remote.digests.items():
        if actual[algo] != expected:
            size = path.stat().st_size
            want = f", expected {remote.size:,} bytes" if remote.size is not None else ""
            return f"{algo} mismatch: expected {expected}, got {actual[algo]} ({size:,} bytes{want})"
    return None


def _unreachable_message(url: str, reason: object) -> str:
    host = urllib.parse.urlsplit(url).netloc
    return (
        f"cannot reach {host} ({reason}) while fetching {url}. This machine may be offline or the host blocked: "
        "pass --mirror BASE, a folder or http server holding the files as BASE/<owner>/<repo>/<commit>/<path> "
        "(for example a copy of shared/data arranged that way)."
    )


def _open(url: str, timeout: float):
    """urlopen with every failure turned into a BenchError that names the URL."""
    scheme = urllib.parse.urlsplit(url).scheme
    try:
        return urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 404:
            raise BenchError(f"not found (HTTP 404): {url}. The server has no file at this path; a mirror must hold "
                             "it as BASE/<owner>/<repo>/<commit>/<path>.") from None
        raise BenchError(f"HTTP {err.code} {err.reason} for {url}.") from None
    except urllib.error.URLError as err:
        if scheme == "file":
            detail = "" if isinstance(err.reason, FileNotFoundError) else f" ({err.reason})"
            raise BenchError(f"not in the local mirror: {url}{detail}. The mirror folder must hold the file "
                             "as BASE/<owner>/<repo>/<commit>/<path>.") from None
        raise _Unreachable(_unreachable_message(url, err.reason)) from None
    except (TimeoutError, OSError) as err:
        raise _Unreachable(_unreachable_message(url, err)) from None


def download(remote: Remote, url: str, timeout: float = DEFAULT_TIMEOUT) -> int:
    """Fetch `url` into `remote.dest` atomically; return its size. Nothing is left behind on failure."""
    remote.dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=remote.dest.parent, prefix=f".{remote.dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            with _open(url, timeout) as resp:
                declared = resp.headers.get("Content-Length")
                got = 0
                try:
                    while chunk := resp.read(CHUNK):
                        fh.write(chunk)
                        got += len(chunk)
                except (OSError, EOFError) as err:  # IncompleteRead, reset, timeout mid-transfer
                    raise BenchError(f"download of {url} broke off after {got:,} bytes ({err!r}); nothing was "
                                     "kept, rerun to retry.") from None
            if declared is not None and got != int(declared):
                raise BenchError(f"truncated download of {url}: got {got:,} of {int(declared):,} bytes announced "
                                 "by the server; nothing was kept, rerun to retry.")
            fh.flush()
            os.fsync(fh.fileno())
        bad = mismatch(tmp, remote)
        if bad:
            raise BenchError(f"checksum check failed for {remote.dest.name} from {url}: {bad}. The download was "
                             "deleted; the source (or mirror) does not hold the pinned upstream file.")
        os.replace(tmp, remote.dest)
        return got
    finally:
        tmp.unlink(missing_ok=True)


def fetch(out: Path | str, cohorts: Sequence[str] = COHORTS, mirror: str | None = None,
          variants: Sequence[str] = TABLE_VARIANTS, log: Callable[[str], None] = print,
          timeout: float = DEFAULT_TIMEOUT) -> list[FetchResult]:
    """Fetch and verify every file for `cohorts` x `variants` into `out`; raise FetchError if any failed.

    Files already present are re-hashed and kept when intact; a present file that fails its check is
    deleted and downloaded again. One progress line per file goes to `log`.
    """
    out = Path(out)
    base = _mirror_base(mirror)
    remotes = plan(out, cohorts, variants)
    results: list[FetchResult] = []
    unreachable = None
    for remote in remotes:
        rel = remote.dest.relative_to(out).as_posix()
        url = remote.url(base)
        if remote.dest.is_file():
            bad = mismatch(remote.dest, remote)
            if bad is None:
                size = remote.dest.stat().st_size
                log(f"already verified  {rel}  {size:,} bytes")
                results.append(FetchResult(remote.dest, url, "verified", size))
                continue
            log(f"re-downloading    {rel}  (file on disk fails its check: {bad})")
            remote.dest.unlink()
        try:
            size = download(remote, url, timeout)
        except BenchError as err:
            log(f"failed            {rel}  {' '.join(str(err).split())}")
            results.append(FetchResult(remote.dest, url, "failed", 0, str(err)))
            if isinstance(err, _Unreachable):
                unreachable = err
                break
            continue
        log(f"downloaded        {rel}  {size:,} bytes")
        results.append(FetchResult(remote.dest, url, "downloaded", size))

    failed = [r for r in results if r.status == "failed"]
    if unreachable is not None:
        skipped = len(remotes) - len(results)
        raise FetchError(f"{unreachable} ({skipped} further file(s) not attempted; files already verified in {out} "
                         "are kept.)", results)
    if failed:
        reasons = " ".join(f"[{r.dest.relative_to(out).as_posix()}] {r.error}" for r in failed)
        kept = len(remotes) - len(failed)
        raise FetchError(f"{len(failed)} of {len(remotes)} files failed; the {kept} that verified are kept in {out} "
                         f"and a rerun fetches only the rest. {reasons}", results)
    return results


def _mirror_base(mirror: str | None) -> str:
    """The URL prefix to fetch from: GitHub's raw host, an http(s)/file URL, or a local folder as a file URL."""
    if mirror is None:
        return RAW_BASE
    scheme = urllib.parse.urlsplit(mirror).scheme
    if scheme in ("http", "https", "file"):
        return mirror
    if "://" in mirror:
        raise BenchError(f"--mirror {mirror}: unsupported scheme {scheme!r}; use http://, https://, file:// or a "
                         "folder path.")
    folder = Path(mirror).expanduser()
    if not folder.is_dir():
        raise BenchError(f"--mirror {mirror}: no such folder. Give a folder holding <owner>/<repo>/<commit>/<path>, "
                         "or an http(s) URL.")
    return folder.resolve().as_uri()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `python -m bench.data fetch`."""
    parser.add_argument("--out", required=True, type=Path, help="data root to fill (created if missing)")
    parser.add_argument("--cohorts", default=None, help=f"comma list of {','.join(COHORTS)} (default: all)")
    parser.add_argument("--mirror", default=None, metavar="BASE",
                        help="fetch BASE/<owner>/<repo>/<commit>/<path> instead of raw.githubusercontent.com; "
                             "BASE is an http(s) or file URL or a local folder")
    parser.add_argument("--variants", default=",".join(TABLE_VARIANTS),
                        help="comma list of table variants: sig (MCAT/G-HANet), mutsig (PORPOISE) (default: both)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="network timeout per request, seconds")


def run(args: argparse.Namespace) -> int:
    """Fetch as the parsed options say; 0 when every file verified (failures raise BenchError)."""
    results = fetch(args.out, parse_cohorts(args.cohorts), mirror=args.mirror,
                    variants=parse_variants(args.variants), timeout=args.timeout)
    new = sum(r.status == "downloaded" for r in results)
    print(f"{len(results)} files verified in {args.out} ({new} downloaded, {len(results) - new} already present).")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.data.fetch", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli_main(main)())
