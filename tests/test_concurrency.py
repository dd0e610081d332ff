"""Calls from many Python threads at once, and lingrad in a forked child process.

Threads: 8 Python threads call every public function at the same time, repeatedly, with
work large enough to take the parallel kernels (above SERIAL_WORK; bias_grad alone, 600 x 48
additions, stays serial), half of them at one
Numba thread and half at all of them (numba's thread count is per Python thread). Each
result must equal, bit for bit, the result of the same call made serially beforehand at
the same thread count: the batch is cut into the same chunks and the float64 partials
are merged in the same order, whoever runs them.

Fork: Numba's 'omp' threading layer (GNU OpenMP) cannot be used again in a child made
by fork() once the parent has started its thread pool; Numba then terminates the child
with SIGTERM and the message "fork() called from a process already using GNU OpenMP".
lingrad avoids that: under 'omp' a forked child runs the serial kernels (api._launch).
The tests check what happens here, in a subprocess with a timeout so a hang fails
instead of blocking CI, and that the ways around it in docs/guarantees.md work.
"""
import json
import os
import signal
import subprocess
import sys
import threading

import numba
import numpy as np
import pytest

import lingrad

N, I, O = 600, 64, 48          # N * I * O = 1.8M multiply-adds: the parallel path
N_THREADS = 8
REPEATS = 6


def data(dtype):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((N, I)).astype(dtype)
    w = rng.standard_normal((I, O)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    dy = rng.standard_normal((N, O)).astype(dtype)
    return x, w, b, dy


def calls(x, w, b, dy):
    """Every public function, each as a zero-argument call returning a tuple of arrays."""
    y = lingrad.linear(x, w, b, relu=True)

    def accumulate_twice():
        dw, db = np.zeros((I, O), x.dtype), np.zeros(O, x.dtype)
        for _ in range(2):
            lingrad.linear_backward(x, w, dy, need_dx=False, out=(None, dw, db), accumulate=True)
        return dw, db

    return {
        "linear": lambda: (lingrad.linear(x, w, b),),
        "linear relu": lambda: (lingrad.linear(x, w, b, relu=True),),
        "linear_backward": lambda: tuple(lingrad.linear_backward(x, w, dy)),
        "linear_backward relu": lambda: tuple(lingrad.linear_backward(x, w, dy, relu_out=y)),
        "linear_backward accumulate": accumulate_twice,
        "input_grad": lambda: (lingrad.input_grad(dy, w),),
        "weight_grad": lambda: (lingrad.weight_grad(x, dy),),
        "bias_grad": lambda: (lingrad.bias_grad(dy, relu_out=y),),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eight_threads_match_serial_calls(dtype):
    fns = calls(*data(dtype))
    counts = [1, numba.config.NUMBA_NUM_THREADS]
    expected = {}
    for n in counts:
        with lingrad.num_threads(n):
            expected.update({(name, n): fn() for name, fn in fns.items()})

    start = threading.Barrier(N_THREADS)
    mismatches, errors = [], []

    def worker(k):
        n = counts[k % 2]
        try:
            with lingrad.num_threads(n):
                start.wait()
                for r in range(REPEATS):
                    for name, fn in fns.items():
                        for got, want in zip(fn(), expected[(name, n)]):
                            if not np.array_equal(got, want):
                                mismatches.append((k, r, name, n))
        except Exception as e:  # reported below, with the thread that raised it
            errors.append((k, repr(e)))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    assert not errors, errors
    assert not mismatches, mismatches[:10]


def test_thread_count_is_per_python_thread():
    """A Python thread's lingrad.num_threads(1) does not change another thread's count."""
    seen = {}
    inside = threading.Event()
    release = threading.Event()

    def one_thread():
        with lingrad.num_threads(1):
            inside.set()
            release.wait(10)
            seen["inside"] = lingrad.get_num_threads()

    t = threading.Thread(target=one_thread)
    t.start()
    inside.wait(10)
    seen["main"] = lingrad.get_num_threads()
    release.set()
    t.join(10)
    assert seen == {"inside": 1, "main": numba.config.NUMBA_NUM_THREADS}


# ---- fork ---------------------------------------------------------------------------
FORK_SCENARIOS = ["fork, all threads", "fork, set_num_threads(1)", "fork, small work", "spawn"]


def child(scenario, code_ok):
    """In the child process: one call, checked against numpy; exit 0 if right, 3 if wrong."""
    x, w, b, _ = data(np.float64)
    if scenario == "fork, small work":   # below SERIAL_WORK: runs on the calling thread
        x = x[:4]
    if scenario == "fork, set_num_threads(1)":
        lingrad.set_num_threads(1)
    y = lingrad.linear(x, w, b)
    os._exit(code_ok if np.allclose(y, x @ w + b, rtol=1e-10, atol=1e-10) else 3)


def fork_report():
    """Run in a subprocess: use lingrad's thread pool, then start a child per scenario."""
    import multiprocessing as mp

    x, w, b, _ = data(np.float64)
    lingrad.linear(x, w, b)                       # the parent starts Numba's thread pool
    report = {"layer": numba.threading_layer(), "threads": numba.get_num_threads()}
    for scenario in FORK_SCENARIOS:
        ctx = mp.get_context("spawn" if scenario == "spawn" else "fork")
        p = ctx.Process(target=child, args=(scenario, 0))
        p.start()
        p.join(60)
        if p.is_alive():
            p.kill()
            report[scenario] = "hung"
        else:
            report[scenario] = p.exitcode
    return report


@pytest.fixture(scope="module")
def forked():
    proc = subprocess.run([sys.executable, __file__, "fork"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_fork_after_parallel_use_works_or_is_terminated_cleanly(forked):
    """What docs/guarantees.md says: with the 'omp' layer the child runs lingrad's serial
    kernels and gets the right result (a SIGTERM with Numba's message is accepted too, never
    a hang or a wrong result); with 'tbb' it works."""
    report, stderr = forked
    outcome = report["fork, all threads"]
    if report["threads"] < 2:
        pytest.skip("needs more than one Numba thread to start the pool")
    if report["layer"] == "omp":
        assert outcome in (0, -signal.SIGTERM), report
        if outcome == -signal.SIGTERM:
            assert "fork() called from a process already using GNU OpenMP" in stderr
    else:
        assert outcome == 0, report


@pytest.mark.parametrize("scenario", FORK_SCENARIOS[1:])
def test_documented_ways_around_fork_work(forked, scenario):
    report, _ = forked
    assert report[scenario] == 0, report


if __name__ == "__main__" and sys.argv[1:] == ["fork"]:
    print(json.dumps(fork_report()))
