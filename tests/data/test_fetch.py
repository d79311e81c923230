"""`bench.data.fetch` against a local mirror of ../shared/data: pins, atomic writes, reruns, clear failures.

The mirror is laid out like raw.githubusercontent.com (`<owner>/<repo>/<commit>/<path>`) from the
upstream paths in SOURCES.md, independently of `sources.json`, and served over 127.0.0.1 only.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest

from bench.data import fetch as fetch_mod
from bench.data.fetch import FetchError, fetch, plan
from bench.data.layout import COHORTS, TABLE_VARIANTS
from bench.errors import BenchError, cli_main

MCAT = "mahmoodlab/MCAT/b9cca63be83c67de7f95308d54a58f80b78b0da1"
PORPOISE = "mahmoodlab/PORPOISE/3390dc40e15995ba852d7a561faf0e996cf20501"
REPO = Path(__file__).resolve().parents[2]
RESULTS = "reference_results/mcat_iccv2021"  # SOURCES.md: results/ICCV/<e>/tcga_<c>_<e>_s1/summary_latest.csv, renamed
EXPERIMENTS = ("MCATsm_nll_surv_a0.0_5foldcv_gc32_concat", "AMILsm_nll_surv_a0.0_5foldcv_gc32_sig",
               "AMILsm_nll_surv_a0.0_5foldcv_gc32_sig_concat", "SNNsm_nll_surv_a0.0_reg1e-04_5foldcv_gc32_sig")
PER_COHORT = 5 + 2 + len(EXPERIMENTS)  # splits, the two table variants, the published per-fold files


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def git_blob(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def shared_file(shared: Path, rel: str) -> Path:
    """Where a data-root file (`tables/<v>/tcga_<c>_...`, `splits/...`, `published/mcat/<e>/...`,
    `signatures.csv`) lies in ../shared/data."""
    parts = rel.split("/")
    if parts[0] == "tables":
        cohort = parts[2].split("_")[1]
        return shared / "tcga" / cohort / parts[1] / parts[2]
    if parts[0] == "published":
        return shared / RESULTS / parts[2] / parts[3]
    return shared / rel


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def mirror(tmp_path, shared_data) -> Path:
    """A GitHub-raw-shaped folder of symlinks into ../shared/data (BRCA/GBMLGG `sig` absent, as upstream here),
    with MCAT's per-fold results under their upstream names."""
    root = tmp_path / "mirror"
    mcat, porpoise = root / MCAT, root / PORPOISE
    (mcat / "datasets_csv_sig").mkdir(parents=True)
    (porpoise / "datasets_csv_mutsig").mkdir(parents=True)
    (mcat / "datasets_csv_sig" / "signatures.csv").symlink_to(shared_data / "signatures.csv")
    (mcat / "splits").symlink_to(shared_data / "splits", target_is_directory=True)
    for table in (shared_data / "tcga").glob("*/sig/*.zip"):
        (mcat / "datasets_csv_sig" / table.name).symlink_to(table)
    for table in (shared_data / "tcga").glob("*/mutsig/*.zip"):
        (porpoise / "datasets_csv_mutsig" / table.name).symlink_to(table)
    for experiment in EXPERIMENTS:
        for summary in (shared_data / RESULTS / experiment).glob("summary_latest_tcga_*.csv"):
            study = summary.stem.removeprefix("summary_latest_")
            run = mcat / "results" / "ICCV" / experiment / f"{study}_{experiment}_s1"
            run.mkdir(parents=True)
            (run / "summary_latest.csv").symlink_to(summary)
    return root


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files; records every request and cuts paths in `server.truncate` off halfway."""

    def do_GET(self):
        self.server.requests.append(self.path)
        rel = urllib.parse.unquote(self.path.lstrip("/"))
        if rel in self.server.truncate:
            data = (Path(self.directory) / rel).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(mirror):
    """The mirror over http://127.0.0.1:<free port>; `.base`, `.requests`, `.truncate`."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(mirror)))
    srv.requests, srv.truncate = [], set()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


def test_fetch_three_cohorts_over_http_matches_shared_files(tmp_path, server, shared_data):
    out, lines = tmp_path / "data", []
    results = fetch(out, ["blca", "luad", "ucec"], mirror=server.base, log=lines.append)
    assert len(results) == 1 + 3 * PER_COHORT
    assert {r.status for r in results} == {"downloaded"}
    assert len(server.requests) == len(results)
    for r in results:
        rel = r.dest.relative_to(out).as_posix()
        assert sha256(r.dest) == sha256(shared_file(shared_data, rel)), rel
        assert r.nbytes == r.dest.stat().st_size
    assert (out / "tables" / "sig" / "tcga_luad_all_clean.csv.zip").is_file()
    assert (out / "tables" / "mutsig" / "tcga_blca_all_clean.csv.zip").is_file()
    assert (out / "splits" / "5foldcv" / "tcga_ucec" / "splits_4.csv").is_file()
    assert (out / "published" / "mcat" / EXPERIMENTS[0] / "summary_latest_tcga_blca.csv").is_file()
    assert files_under(out) == sorted(r.dest for r in results)  # no temp files left
    assert len(lines) == len(results) and all(line.startswith("downloaded") for line in lines)
    assert "2,964,172 bytes" in "\n".join(lines)  # BLCA sig size on its progress line


def test_rerun_downloads_nothing_and_replaces_only_what_is_missing_or_bad(tmp_path, server):
    out = tmp_path / "data"
    first = fetch(out, ["ucec"], mirror=server.base, log=lambda _: None)
    assert len(server.requests) == len(first) == 1 + PER_COHORT

    lines = []
    again = fetch(out, ["ucec"], mirror=server.base, log=lines.append)
    assert len(server.requests) == 1 + PER_COHORT
    assert {r.status for r in again} == {"verified"}
    assert all(line.startswith("already verified") for line in lines)

    (out / "splits" / "5foldcv" / "tcga_ucec" / "splits_2.csv").unlink()
    good = (out / "signatures.csv").read_bytes()
    (out / "signatures.csv").write_bytes(good[:-1] + b"!")
    summary = out / "published" / "mcat" / EXPERIMENTS[3] / "summary_latest_tcga_ucec.csv"
    released = summary.read_bytes()
    summary.write_bytes(released.replace(b"0.", b"1.", 1))  # a per-fold C edited by hand
    lines.clear()
    third = fetch(out, ["ucec"], mirror=server.base, log=lines.append)
    assert len(server.requests) == 1 + PER_COHORT + 3
    assert sorted(r.dest.name for r in third if r.status == "downloaded") == [
        "signatures.csv", "splits_2.csv", "summary_latest_tcga_ucec.csv"]
    assert (out / "signatures.csv").read_bytes() == good and summary.read_bytes() == released
    assert any(line.startswith("re-downloading") and "signatures.csv" in line for line in lines)
    assert any(line.startswith("re-downloading") and EXPERIMENTS[3] in line for line in lines)


def test_tampered_file_is_rejected_named_and_not_kept(tmp_path, server, mirror):
    link = mirror / PORPOISE / "datasets_csv_mutsig" / "tcga_ucec_all_clean.csv.zip"
    data = bytearray(link.read_bytes())
    data[1000] ^= 0xFF
    link.unlink()
    link.write_bytes(bytes(data))
    out = tmp_path / "data"
    with pytest.raises(FetchError) as info:
        fetch(out, ["ucec"], mirror=server.base, variants=["mutsig"], log=lambda _: None)
    msg = str(info.value)
    assert "tcga_ucec_all_clean.csv.zip" in msg
    assert "e5f672279115dcd7bcad0ee560730fcde37aaed683a08660bc845c790e424c44" in msg  # expected (SOURCES.md)
    assert hashlib.sha256(bytes(data)).hexdigest() in msg  # actual
    dest_dir = out / "tables" / "mutsig"
    assert files_under(dest_dir) == []
    statuses = {r.dest.relative_to(out).as_posix(): r.status for r in info.value.results}
    assert statuses.pop("tables/mutsig/tcga_ucec_all_clean.csv.zip") == "failed"
    assert set(statuses.values()) == {"downloaded"} and len(statuses) == 10  # the verified files are kept
    assert all(r.dest.is_file() for r in info.value.results if r.status == "downloaded")


def test_truncated_transfer_is_rejected_and_leaves_nothing(tmp_path, server):
    rel = f"{MCAT}/datasets_csv_sig/tcga_ucec_all_clean.csv.zip"
    server.truncate.add(rel)
    out = tmp_path / "data"
    with pytest.raises(FetchError, match="truncated") as info:
        fetch(out, ["ucec"], mirror=server.base, variants=["sig"], log=lambda _: None)
    assert f"{server.base}/{rel}" in " ".join(str(info.value).split())
    assert "16,250 of 32,500 bytes" in str(info.value)
    assert files_under(out / "tables") == []


def test_missing_file_is_a_404_naming_the_url(tmp_path, server):
    out = tmp_path / "data"
    with pytest.raises(FetchError, match="HTTP 404") as info:
        fetch(out, ["brca"], mirror=server.base, variants=["sig"], log=lambda _: None)
    url = f"{server.base}/{MCAT}/datasets_csv_sig/tcga_brca_all_clean.csv.zip"
    assert url in str(info.value)
    assert not (out / "tables" / "sig" / "tcga_brca_all_clean.csv.zip").exists()
    assert len(files_under(out)) == 10  # signatures, 5 BRCA splits and 4 per-fold results verified and kept


def test_offline_without_mirror_says_to_use_mirror(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fetch_mod, "RAW_BASE", "http://127.0.0.1:9")  # nothing listens; never the real network
    out = tmp_path / "data"
    with pytest.raises(FetchError) as info:
        fetch(out, ["ucec"], log=lambda _: None, timeout=5)
    assert "--mirror" in str(info.value) and "127.0.0.1:9" in str(info.value)
    assert [r.status for r in info.value.results] == ["failed"]  # gives up at once instead of 8 timeouts
    assert files_under(out) == []

    code = cli_main(fetch_mod.main)(["--out", str(out), "--cohorts", "ucec", "--timeout", "5"])
    err = capsys.readouterr().err
    assert code == 2 and "--mirror" in err and "Traceback" not in err


@pytest.mark.parametrize("as_uri", [False, True], ids=["folder", "file-url"])
def test_local_folder_mirror(tmp_path, mirror, shared_data, as_uri):
    base = mirror.as_uri() if as_uri else str(mirror)
    results = fetch(tmp_path / "data", ["ucec"], mirror=base, log=lambda _: None)
    assert [r.status for r in results] == ["downloaded"] * (1 + PER_COHORT)
    table = tmp_path / "data" / "tables" / "sig" / "tcga_ucec_all_clean.csv.zip"
    assert sha256(table) == sha256(shared_data / "tcga" / "ucec" / "sig" / table.name)

    with pytest.raises(FetchError, match="not in the local mirror") as info:
        fetch(tmp_path / "data", ["gbmlgg"], mirror=base, variants=["sig"], log=lambda _: None)
    assert "datasets_csv_sig/tcga_gbmlgg_all_clean.csv.zip" in str(info.value)


def test_module_cli_fetches_from_a_folder_mirror(tmp_path, mirror):
    out = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.data.fetch", "--out", str(out), "--mirror", str(mirror),
         "--cohorts", "ucec", "--variants", "mutsig"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("downloaded  ") == 11
    assert "11 files verified" in proc.stdout
    assert (out / "tables" / "mutsig" / "tcga_ucec_all_clean.csv.zip").is_file()
    assert not (out / "tables" / "sig").exists()


def test_missing_split_manifest_is_a_clear_error_before_any_download(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch_mod, "SPLIT_MANIFEST", tmp_path / "splits" / "MANIFEST.sha256")
    with pytest.raises(BenchError, match="MANIFEST.sha256"):
        fetch(tmp_path / "data", ["ucec"], mirror=str(tmp_path), log=lambda _: None)
    assert files_under(tmp_path / "data") == []


def test_bad_options_are_clear_errors(tmp_path):
    with pytest.raises(BenchError, match="unknown table variant 'rna'"):
        fetch_mod.parse_variants("sig,rna")
    with pytest.raises(BenchError, match="no such folder"):
        fetch(tmp_path / "data", ["ucec"], mirror=str(tmp_path / "absent"))
    with pytest.raises(BenchError, match="unsupported scheme 'ftp'"):
        fetch(tmp_path / "data", ["ucec"], mirror="ftp://example.org/x")


def test_manifest_matches_shared_files_and_sources_md(tmp_path, shared_data):
    remotes = plan(tmp_path, COHORTS, TABLE_VARIANTS)
    assert len(remotes) == 1 + 5 * PER_COHORT
    sources_md = (shared_data / "SOURCES.md").read_text()
    checked = 0
    for r in remotes:
        rel = r.dest.relative_to(tmp_path).as_posix()
        local = shared_file(shared_data, rel)
        if not local.is_file():  # only the BRCA/GBMLGG sig tables, pinned by their git blob alone
            assert set(r.digests) == {"git_blob"} and rel.startswith("tables/sig/"), rel
            assert any(r.digests["git_blob"] in line and rel.split("/")[-1] in line for line in sources_md.splitlines())
            continue
        assert r.digests["sha256"] == sha256(local), rel
        if rel.startswith("published/"):  # SOURCES.md lists no checksums for these; the shared copies pin them
            experiment, study = rel.split("/")[2], local.stem.removeprefix("summary_latest_")
            upstream = f"results/ICCV/{experiment}/{study}_{experiment}_s1/summary_latest.csv"
            assert r.url("BASE") == f"BASE/{MCAT}/{upstream}", rel
            assert r.digests["git_blob"] == git_blob(local) and r.size == local.stat().st_size, rel
        elif "git_blob" in r.digests:
            assert r.digests["git_blob"] == git_blob(local), rel
            pinned = (r.digests["git_blob"], r.digests["sha256"])
            assert any(all(d in line for d in pinned) for line in sources_md.splitlines()), rel
        checked += 1
    assert checked == 34 + 5 * len(EXPERIMENTS)

    prefixes = dict(re.findall(r"^\s*- (blca|brca|gbmlgg|luad|ucec): ((?:[0-9a-f]{8} ?){5})$", sources_md, re.M))
    assert sorted(prefixes) == sorted(COHORTS)
    for cohort, listed in prefixes.items():
        folder = shared_data / "splits" / "5foldcv" / f"tcga_{cohort}"
        blobs = [git_blob(folder / f"splits_{k}.csv")[:8] for k in range(5)]
        assert blobs == listed.split()


@pytest.mark.slow
def test_semisynthetic_sweep_on_fetched_tables(tmp_path, mirror):
    """The real-data path end to end without slide features: fetched UCEC table and verified splits, simulated bags."""
    from mlflow.tracking import MlflowClient

    from bench.run import main as run_main

    out = tmp_path / "data"
    fetch(out, ["ucec"], mirror=str(mirror), variants=["sig"], log=lambda _: None)
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    argv = ["--data", "semisynthetic", "--data-root", str(out), "--models", "abmil,snn", "--cohorts", "ucec",
            "--folds", "0", "--trials", "1", "--epochs", "1", "--tracking-uri", uri, "--workers", "1"]
    assert run_main(argv) == 0
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("semisynthetic-nested")
    runs = client.search_runs([exp.experiment_id], "tags.run_kind = 'fold' and attributes.status = 'FINISHED'")
    assert sorted(r.data.tags["model"] for r in runs) == ["abmil", "snn"]
    assert {(r.data.tags["data"], r.data.tags["table_variant"]) for r in runs} == {("semisynthetic", "sig")}
    assert all("oracle_c_index" not in r.data.metrics and 0 <= r.data.metrics["c_index"] <= 1 for r in runs)
    # the MCAT split of the real cohort, verified against the manifest, and bags simulated for its slides
    assert {r.data.tags["split_sha256"] for r in runs} == {sha256(out / "splits" / "5foldcv" / "tcga_ucec" / "splits_0.csv")}
    assert len(list((out / "semisynthetic" / "tcga_ucec" / "h5_files").glob("*.h5"))) > 400
