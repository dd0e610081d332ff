"""python -m lingrad bench: --shape, the peers' columns (numpy, PyTorch, JAX), the
speedup over the fastest peer, --json rows, one pinned process per thread count."""
import argparse
import json
import os

import numba
import pytest

from lingrad import bench

PEERS = ["numpy", "torch", "jax"]


@pytest.fixture
def no_limits(monkeypatch):
    """Skip the machine-limit measurement (a 2048^2 GEMM and a 256 MB sum) in-process:
    it only feeds the %peak column, which these tests do not check."""
    monkeypatch.setattr(bench, "machine_limits", lambda threads, dtype: (1.0, 1.0))


def run_bench(tmp_path, *argv):
    path = tmp_path / "rows.json"
    assert bench.main([*argv, "--json", str(path)]) == 0
    with open(path) as f:
        return json.load(f)


def check_row(row):
    times = {p: row[f"{p}_s"] for p in PEERS if row[f"{p}_s"] is not None}
    assert "numpy" in times and row["lingrad_s"] > 0
    assert row["peer"] == min(times, key=times.get)
    assert row["speedup"] == pytest.approx(min(times.values()) / row["lingrad_s"])


@pytest.mark.parametrize("text, dims", [("64x784x50", (64, 784, 50)), ("1X2X3", (1, 2, 3))])
def test_parse_shape(text, dims):
    assert bench.parse_shape(text) == dims


@pytest.mark.parametrize("text", ["64x784", "64x784x50x2", "0x3x4", "ax3x4", "-1x3x4", ""])
def test_parse_shape_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError, match="NxIxO"):
        bench.parse_shape(text)


def test_shape_option_rows_and_json(tmp_path, capsys, no_limits):
    rows = run_bench(tmp_path, "--shape", "9x5x3", "--shape", "4x6x2", "--ops", "forward", "db",
                     "--dtypes", "float64", "--threads", "1", "--repeats", "1")
    assert [(r["shape"], r["N"], r["I"], r["O"], r["op"]) for r in rows] == [
        ("9x5x3", 9, 5, 3, "forward"), ("9x5x3", 9, 5, 3, "db"),
        ("4x6x2", 4, 6, 2, "forward"), ("4x6x2", 4, 6, 2, "db")]
    for r in rows:
        check_row(r)
        assert (r["jax_s"] is not None) == (bench.peer("jax") is not None)
        assert (r["torch_s"] is not None) == (bench.peer("torch") is not None)
        if len(os.sched_getaffinity(0)) > 1:
            assert len(r["cores"]) == 1  # the 1-thread run was pinned to one core
    assert "9x5x3" in capsys.readouterr().out


def test_named_and_own_shapes_together(tmp_path, no_limits):
    rows = run_bench(tmp_path, "--shapes", "batch-1", "--shape", "3x4x5", "--ops", "dw", "--dtypes", "float32",
                     "--threads", "1", "--repeats", "1", "--no-torch", "--no-jax")
    assert [r["shape"] for r in rows] == ["batch-1", "3x4x5"]
    for r in rows:
        check_row(r)
        assert r["torch_s"] is None and r["jax_s"] is None and r["peer"] == "numpy"


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 threads")
def test_each_thread_count_in_its_own_process(tmp_path):
    rows = run_bench(tmp_path, "--shape", "8x4x3", "--ops", "forward", "--dtypes", "float32",
                     "--threads", "1", "2", "--repeats", "1", "--no-torch", "--no-jax")
    assert [r["threads"] for r in rows] == [1, 2]
    for r in rows:
        check_row(r)
    assert len(rows[0]["cores"]) == 1  # pinned; the 2-thread run is not pinned (test_timing.py)


def test_bad_shape_is_a_usage_error():
    with pytest.raises(SystemExit) as e:
        bench.main(["--shape", "3x4"])
    assert e.value.code == 2


def test_table_marks_a_row_short_of_cores():
    row = dict(shape="batch-1", N=1, I=784, O=50, dtype="float32", threads=2, op="forward", cores=[1],
               cores_after=[0, 1], lingrad_s=1e-5, numpy_s=2e-5, torch_s=None, jax_s=None, lingrad_gflops=7.8,
               speedup=2.0, peer="numpy", pct_peak=5.0)
    assert bench.short_of_cores(row)
    assert "!" in bench.table([row]).splitlines()[2]
    assert "!" not in bench.table([dict(row, cores=[0, 1])])
