"""The backward pass allocates its outputs plus per-thread scratch, nothing proportional to N.

Measured in a subprocess started with NUMBA_NRT_STATS=1 (Numba reads it at import):
- numba's NRT allocation counters: every array a kernel allocates is freed before the
  call returns, with a few allocations per call and per thread, none per block of rows;
- tracemalloc for bytes: numpy registers its allocations with tracemalloc, and Numba's
  NRT allocates through PyMem_RawMalloc (numba/core/runtime/nrt.py calls
  memsys_use_cpython_allocator), which tracemalloc also traces, from every thread.

The bound is written from the shapes (see kernels/engine.py and kernels/config.py):

    outputs  dx (N, I), dw (I, O), db (O,)            (not counted when passed in as out=)
    + T * (I*O + O) * 8                               float64 per-thread partials of dw.T, db
    + T * ((MC_DW + MR) * KC_DW + KC_DW * NR) * size  per-thread packed block of d.T and the
                                                      packed edge panel of x (dw; KC_DW * I
                                                      instead of KC_DW * NR where x's rows are a
                                                      multiple of 4 KiB apart, not the case here)
    + ceil(P / NR) * NR * K * size                    w or w.T packed whole (forward, dx)
    + T * (MC_PACKED + MR) * KC * size                per-thread packed block of d (masked dx)
                                                      or of x (forward of a non-C x)
    + N * I * size                                    only for dw of an x not in C order
    + 64 KiB                                          headers, schedules, small arrays

with T = NUMBA_NUM_THREADS and NR = NV * VECTOR_BYTES / size. With N = 2**17 a hidden copy
of dy alone would be N * O * itemsize = 16 MiB, some 250 times the slack: an API that copied
dy's rows (tried once, before the GEMM engine, by patching the API's rows helper of the
time to return a copy) fails test_peak_bytes_within_bound in every case that reads dy.
"""
import json
import os
import subprocess
import sys

import numba
import pytest

from lingrad import kernels as K

N, I, O = 1 << 17, 64, 32
SLACK = 64 * 1024
T = numba.config.NUMBA_NUM_THREADS

# name: (call, dtype, x layout, masked, outputs made: dx dw db y, outs passed in)
CASES = {
    "linear_backward": ("linear_backward", "float32", "C", False, "dx dw db", False),
    "linear_backward relu": ("linear_backward", "float32", "C", True, "dx dw db", False),
    "linear_backward float64": ("linear_backward", "float64", "C", False, "dx dw db", False),
    "linear_backward out= accumulate": ("linear_backward", "float32", "C", True, "dx dw db", True),
    "linear_backward no dx, x F-order": ("linear_backward_nodx", "float32", "F", False, "dw db", False),
    "weight_grad": ("weight_grad", "float32", "C", False, "dw", False),
    "weight_grad relu": ("weight_grad", "float32", "C", True, "dw", False),
    "bias_grad relu": ("bias_grad", "float32", "C", True, "db", False),
    "input_grad relu": ("input_grad", "float32", "C", True, "dx", False),
    "linear relu": ("linear", "float32", "C", True, "y", False),
}


def bound(call, dtype, x_layout, masked, outputs, outs_given):
    """Bytes a call may hold at its peak, from the shapes (see the module docstring)."""
    size = 4 if dtype == "float32" else 8
    nr = K.NV * K.VECTOR_BYTES // size
    made = outputs.split()
    out_bytes = {"dx": N * I, "dw": I * O, "db": O, "y": N * O}
    total = 0 if outs_given else sum(out_bytes[o] for o in made) * size
    if "dw" in made or "db" in made:
        total += T * (I * O + O) * 8 + T * ((K.MC_DW + K.MR) * K.KC_DW + K.KC_DW * nr) * size
    if "dx" in made:
        total += -(-I // nr) * nr * O * size + T * (K.MC_PACKED + K.MR) * O * size
    if "y" in made:
        total += -(-O // nr) * nr * I * size + T * (K.MC_PACKED + K.MR) * I * size
    if x_layout != "C" and "dw" in made:
        total += N * I * size
    return total + SLACK


def measure(cases):
    """Run in the child: each case once to compile and warm up, then once measured."""
    import tracemalloc

    import numpy as np
    from numba.core.runtime import rtsys

    import lingrad

    results = {}
    for name, (call, dtype, x_layout, masked, outputs, outs_given) in cases.items():
        rng = np.random.default_rng(0)
        x = rng.standard_normal((N, I)).astype(dtype)
        x = np.asfortranarray(x) if x_layout == "F" else x
        w = rng.standard_normal((I, O)).astype(dtype)
        dy = rng.standard_normal((N, O)).astype(dtype)
        y = np.maximum(dy, 0) if masked else None
        outs = (np.zeros((N, I), dtype), np.zeros((I, O), dtype), np.zeros(O, dtype))
        run = {
            "linear_backward": lambda: lingrad.linear_backward(
                x, w, dy, relu_out=y, out=outs if outs_given else None, accumulate=outs_given),
            "linear_backward_nodx": lambda: lingrad.linear_backward(x, w, dy, relu_out=y,
                                                                    need_dx=False),
            "weight_grad": lambda: lingrad.weight_grad(x, dy, relu_out=y),
            "bias_grad": lambda: lingrad.bias_grad(dy, relu_out=y),
            "input_grad": lambda: lingrad.input_grad(dy, w, relu_out=y),
            "linear": lambda: lingrad.linear(x, w, dy[0], relu=masked),
        }[call]
        run()
        tracemalloc.start()
        before = rtsys.get_allocation_stats()
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = run()
        current, peak = tracemalloc.get_traced_memory()
        after = rtsys.get_allocation_stats()
        tracemalloc.stop()
        del result
        results[name] = dict(peak=peak - base, kept=current - base,
                             nrt_alloc=after.alloc - before.alloc, nrt_free=after.free - before.free,
                             mi_alloc=after.mi_alloc - before.mi_alloc,
                             mi_free=after.mi_free - before.mi_free,
                             stats_on=numba.config.NRT_STATS)
    return results


@pytest.fixture(scope="module")
def measured():
    env = dict(os.environ, NUMBA_NRT_STATS="1")
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(CASES))
def test_peak_bytes_within_bound(measured, name):
    got, limit = measured[name], bound(*CASES[name])
    assert got["peak"] <= limit, (f"{name}: peak {got['peak']} bytes above the bound {limit} "
                                  f"(outputs + per-thread scratch + {SLACK} slack)")


@pytest.mark.parametrize("name", list(CASES))
def test_nrt_allocations_freed_and_per_block(measured, name):
    got = measured[name]
    assert got["stats_on"], "NUMBA_NRT_STATS=1 did not reach the child"
    assert got["nrt_alloc"] == got["nrt_free"] and got["mi_alloc"] == got["mi_free"], got
    limit = 8 * T + 16  # a few per call and per thread, none per block of rows
    assert got["nrt_alloc"] <= limit, f"{got['nrt_alloc']} NRT allocations, more than {limit}"


if __name__ == "__main__":
    print(json.dumps(measure(CASES)))
