"""bench.perf's FLOP counting and table code on tiny sizes (no timing assertions)."""

import pytest

from bench import perf


def test_flop_count_of_abmil_matches_its_layer_shapes():
    """Forward + backward: 2x forward for the first Linear (its input needs no grad), 3x elsewhere."""
    model = perf.build_model("abmil")
    n = 16
    fc = 2 * n * 1024 * 512
    attention = 2 * (2 * n * 512 * 256) + 2 * n * 256  # tanh and sigmoid branches, score
    pool = 2 * n * 512  # weights [1, N] @ h [N, 512]
    head = 2 * 512 * 256 + 2 * 256 * 4  # rho, classifier
    assert perf.count_flops(model, perf.make_bag(model, n)) == 2 * fc + 3 * (attention + pool + head)


def test_benchmark_and_table_on_a_tiny_size():
    rows = perf.benchmark(["abmil", "snn"], [8], bags=lambda n: 2)
    assert [(r.model, r.patches, r.bags) for r in rows] == [("abmil", 8, 2), ("snn", 8, 2)]
    assert rows[0].params == 920_069
    assert all(r.sec_per_bag > 0 and r.flops_per_bag > 0 for r in rows)
    assert rows[0].flops_per_bag > rows[1].flops_per_bag  # 8 patches through 1024->512 beat one SNN input
    table = perf.format_table(rows, peak_gflops=perf.matmul_peak_gflops(n=64, reps=1))
    lines = table.splitlines()
    assert "GFLOP/s" in lines[0] and "% peak" in lines[0]
    assert lines[2].startswith("abmil") and "920,069" in lines[2]
    assert lines[3].startswith("snn")
    assert "matmul peak" in lines[-1]


def test_fewer_bags_are_timed_for_costly_bags():
    assert perf.bags_to_time(10**6) == perf.ACCUM_BAGS
    assert perf.bags_to_time(int(perf.FLOP_BUDGET / 10)) == 10
    assert perf.bags_to_time(10**13) == 2


@pytest.mark.parametrize("argv, phrase", [
    (["models", "--sizes", "256,lots"], "--sizes"),
    (["models", "--models", "abmil,nope"], "nope"),
])
def test_bad_arguments_exit_2_with_one_paragraph(argv, phrase, capsys):
    assert perf.run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and phrase in err and "Traceback" not in err
