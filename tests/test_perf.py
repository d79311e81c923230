"""bench.perf's FLOP counting and table code on tiny sizes (no timing assertions)."""

import re

import pytest
import torch

from bench.perf import cli, sweep, transmil
from bench.perf import io as perf_io
from bench.perf import models as perf_models


def test_flop_count_of_abmil_matches_its_layer_shapes():
    """Forward + backward: 2x forward for the first Linear (its input needs no grad), 3x elsewhere."""
    model = perf_models.build_model("abmil")
    n = 16
    fc = 2 * n * 1024 * 512
    attention = 2 * (2 * n * 512 * 256) + 2 * n * 256  # tanh and sigmoid branches, score
    pool = 2 * n * 512  # weights [1, N] @ h [N, 512]
    head = 2 * 512 * 256 + 2 * 256 * 4  # rho, classifier
    assert perf_models.count_flops(model, perf_models.make_bag(model, n)) == 2 * fc + 3 * (attention + pool + head)


def test_benchmark_and_table_on_a_tiny_size():
    rows = perf_models.benchmark(["abmil", "snn"], [8], bags=lambda n: 2)
    assert [(r.model, r.patches, r.bags) for r in rows] == [("abmil", 8, 2), ("snn", 8, 2)]
    assert rows[0].params == 920_069
    assert all(r.sec_per_bag > 0 and r.flops_per_bag > 0 for r in rows)
    assert rows[0].flops_per_bag > rows[1].flops_per_bag  # 8 patches through 1024->512 beat one SNN input
    table = perf_models.format_table(rows, peak_gflops=perf_models.matmul_peak_gflops(n=64, reps=1))
    lines = table.splitlines()
    assert "GFLOP/s" in lines[0] and "% peak" in lines[0]
    assert lines[2].startswith("abmil") and "920,069" in lines[2]
    assert lines[3].startswith("snn")
    assert "matmul peak" in lines[-1]


def test_models_prints_a_roofline_row_per_size_on_the_threads_asked_and_restores_them(capsys):
    threads = torch.get_num_threads()
    assert cli.run(["models", "--models", "abmil", "--sizes", "4,9", "--threads", "1"]) == 0
    assert torch.get_num_threads() == threads
    out = capsys.readouterr().out
    rows = re.findall(r"^abmil +920,069 +(\d+) +32 +([0-9.]+) +([0-9.]+) +([0-9.]+) +([0-9.]+)% +(aten::\S+) (\d+)%, (\d+)%$",
                      out, re.M)
    assert [r[0] for r in rows] == ["4", "9"], out
    assert all(0 < int(r[6]) + int(r[7]) <= 100 for r in rows)  # top op and between ops: shares of one pass
    assert re.search(r"fp32 matmul peak \(\[512, 1024\] @ \[1024, 1024\].*on 1 thread\(s\)", out)


def test_a_thread_count_below_one_is_refused(capsys):
    assert cli.run(["models", "--models", "snn", "--threads", "0"]) == 2
    assert "--threads 0" in capsys.readouterr().err


def test_fewer_bags_are_timed_for_costly_bags():
    assert perf_models.bags_to_time(10**6) == perf_models.ACCUM_BAGS
    assert perf_models.bags_to_time(int(perf_models.FLOP_BUDGET / 10)) == 10
    assert perf_models.bags_to_time(10**13) == 2


@pytest.mark.parametrize("argv, phrase", [
    (["models", "--sizes", "256,lots"], "--sizes"),
    (["models", "--models", "abmil,nope"], "nope"),
])
def test_bad_arguments_exit_2_with_one_paragraph(argv, phrase, capsys):
    assert cli.run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and phrase in err and "Traceback" not in err


def test_projection_schedules_the_longest_jobs_first():
    """Seconds per patient from the slice, times each cohort's patients, folds jobs each, on `workers` processes."""
    measured = {"a": [(10.0, 20)], "b": [(2.0, 20), (4.0, 40)]}  # a: 0.5 s/patient, b: 0.1
    patients = {"x": 20, "y": 40}
    p = sweep.project(measured, patients, workers=2, folds=2)
    assert p.seconds_per_patient == pytest.approx({"a": 0.5, "b": 0.1})
    assert p.job_seconds == pytest.approx({"a": 60.0, "b": 12.0})  # jobs a: 20 20 10 10, b: 4 4 2 2
    assert p.wall_seconds == pytest.approx(36.0)  # 20+10+4+2 on each worker
    assert sweep.project(measured, patients, workers=1, folds=2).wall_seconds == pytest.approx(72.0)
    assert sweep.project(measured, patients, workers=100, folds=2).wall_seconds == pytest.approx(20.0)  # the longest job
    assert sweep.project(measured, patients, workers=3, folds=2).wall_seconds == pytest.approx(24.0)  # 20+4, 20+4, 10+10+2+2


def test_sweep_times_a_tiny_slice_and_prints_the_projection(tmp_path, capsys):
    from bench.data.synth import synthesize

    synthesize(tmp_path, ["blca"], scale=0.05, min_test_events=0, log=lambda _: None)  # 20 patients: a cheap slice
    threads = torch.get_num_threads()
    assert cli.run(["sweep", "--models", "snn", "--data-root", str(tmp_path), "--workers", "2"]) == 0
    assert torch.get_num_threads() == threads
    out = capsys.readouterr().out
    job = re.search(r"snn +blca +fold 0 +20 patients +([0-9.]+) job-s", out)
    assert job, out
    row = re.search(r"^snn +([0-9.]+) +([0-9,]+) +100%$", out, re.M)
    assert row and float(row.group(1)) == pytest.approx(float(job.group(1)) / 20, abs=3e-3)  # both printed rounded
    assert "(1 models x 5 cohorts x 5 folds = 25 jobs; 318 patients in the 5 cohorts)" in out
    assert re.search(r"wall [0-9.]+ min on 2 worker process", out)


@pytest.mark.parametrize("argv, phrase", [
    (["sweep", "--folds", "7"], "--folds"),
    (["sweep", "--models", "snn,nope"], "nope"),
    (["sweep", "--cohorts", "kirc"], "kirc"),
    (["transmil", "--threads", "0"], "--threads 0"),
    (["models", "--threads", "0"], "--threads 0"),
])
def test_bad_arguments_exit_2_before_any_work(argv, phrase, capsys):
    assert cli.run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and phrase in err and "Traceback" not in err


def test_transmil_paths_prints_both_paths_and_their_difference():
    """A 5-patch bag (10 tokens) takes the short path; its logits and gradients agree with the library's."""
    text = transmil.transmil_paths([5], reps=1)
    row = text.splitlines()[1].split()
    assert row[:3] == ["5", "10", "short"]
    assert float(row[3]) > 0 and float(row[4]) > 0 and row[5].endswith("x")
    assert float(row[6]) < 1e-5


def test_transmil_paths_run_on_the_threads_asked_and_restore_them(capsys):
    threads = torch.get_num_threads()
    assert cli.run(["transmil", "--sizes", "5", "--threads", "1"]) == 0
    assert "1 threads" in capsys.readouterr().out
    assert torch.get_num_threads() == threads


def test_io_reads_a_tiny_float16_root_cold_and_warm_and_its_cache_keeps_every_bag(tmp_path, capsys):
    """Row per pass; the cached process's warm passes find every bag in its cache, the uncached one none."""
    from bench.data.synth import synthesize

    synthesize(tmp_path, ["ucec"], scale=0.001, min_test_events=0, patches_per_slide=(20, 30), dtype="float16",
               log=lambda _: None)
    assert cli.run(["io", "--data-root", str(tmp_path), "--cohort", "ucec", "--cache-gb", "0.01"]) == 0
    out = capsys.readouterr().out
    rows = {line[:46].strip(): line[46:].split() for line in out.splitlines()[2:10]}
    assert list(rows) == ["disk: raw files, sequential, cold", "h5py features datasets, cold", "bags, no cache, cold",
                          "bags, no cache, warm (shuffled)", "bags, no cache, warm again (reshuffled)",
                          "bags, cache 0.01 GB, cold", "bags, cache 0.01 GB, warm (shuffled)",
                          "bags, cache 0.01 GB, warm again (reshuffled)"]
    assert rows["disk: raw files, sequential, cold"][3] == "100%"
    assert rows["bags, no cache, warm again (reshuffled)"][4] == "0/20" and rows["bags, cache 0.01 GB, cold"][4] == "0/20"
    assert rows["bags, cache 0.01 GB, warm (shuffled)"][4] == "20/20"
    assert rows["bags, cache 0.01 GB, warm again (reshuffled)"][4] == "20/20"
    assert all(float(r[2]) > 0 for r in rows.values())  # bags/s
    assert re.search(r"20 bags in \d+ h5 files, [0-9.]+ GB of float16 \[N, 1024\]", out)
    assert "POSIX_FADV_DONTNEED" in out
    assert re.search(r"The 0.01 GB cache is 100% of the cohort's [0-9.]+ GB as float32; its second warm epoch hit 100% "
                     r"of the bags\.", out)


def test_io_with_a_cache_of_half_the_cohort_hits_about_half_of_a_second_warm_epoch(tmp_path, capsys):
    """Keeping what fits: the second shuffled epoch hits the cache's share of the cohort (bags differ in size)."""
    from bench.data.synth import synthesize

    synthesize(tmp_path, ["ucec"], scale=0.001, min_test_events=0, patches_per_slide=(20, 30), dtype="float16",
               log=lambda _: None)
    source = perf_io.io_source(tmp_path, "ucec")
    budget = source.patches * source.dim * 2  # half the cohort as float32
    text = perf_io.io_table(source, [budget])
    share = re.search(r"cache is (\d+)% of the cohort's .* its second warm epoch hit (\d+)% of the bags", text)
    assert share and share.group(1) == "50", text
    assert 35 <= int(share.group(2)) <= 65


def test_sequential_read_counts_every_byte_after_the_page_cache_drop(tmp_path):
    paths = [tmp_path / "a", tmp_path / "b"]
    paths[0].write_bytes(b"x" * 1000)
    paths[1].write_bytes(b"y" * 3)
    perf_io.drop_page_cache(paths)
    secs, nbytes = perf_io.sequential_read(paths, block=64)
    assert nbytes == 1003 and secs > 0


@pytest.mark.parametrize("argv, phrase", [
    (["io", "--data-root", "ROOT", "--cohort", "blca,ucec"], "one cohort"),
    (["io", "--data-root", "ROOT", "--cohort", "ucec", "--cache-gb", "-1"], "negative"),
    (["io", "--data-root", "ROOT", "--cohort", "ucec", "--cache-gb", "0.0000001"], "holds no bag"),
])
def test_bad_io_arguments_exit_2_with_one_paragraph(argv, phrase, tmp_path, capsys):
    from bench.data.synth import synthesize

    synthesize(tmp_path, ["ucec"], scale=0.001, min_test_events=0, log=lambda _: None)
    assert cli.run([str(tmp_path) if a == "ROOT" else a for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and phrase in err and "Traceback" not in err
