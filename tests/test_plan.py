"""test_kernels.SHAPES reach every path of the plan and every edge of the micro-kernel.

The API is run on each shape (both dtypes, masked and not, C and Fortran order, 1 thread
and all) with lingrad.plan.gemm wrapped, so the plans checked are the ones the calls made.
A path no shape reaches fails here, naming it: add a shape to test_kernels.SHAPES.
"""
from unittest import mock

import numba
import numpy as np
import pytest
from test_kernels import SHAPES

import lingrad
from lingrad import kernels as K
from lingrad import plan as P

E = K.engine


def plans_made():
    """Every Plan the API makes on SHAPES, with the dtype it was made for."""
    made = []
    real = P.gemm.__wrapped__

    def record(*args):
        plan = real(*args)
        made.append((plan, args[4]))
        return plan

    rng = np.random.default_rng(0)
    counts = sorted({1, numba.config.NUMBA_NUM_THREADS})
    with mock.patch.object(P, "gemm", side_effect=record):
        for threads in counts:
            with lingrad.num_threads(threads):
                for dtype in (np.float32, np.float64):
                    for N, I, O in SHAPES:
                        x, w, dy = (rng.standard_normal(s).astype(dtype) for s in
                                    ((N, I), (I, O), (N, O)))
                        for order in (np.ascontiguousarray, np.asfortranarray):
                            y = lingrad.linear(order(x), order(w), relu=True)
                            lingrad.linear_backward(order(x), order(w), order(dy), relu_out=y)
                            lingrad.linear_backward(x, w, dy)
                            lingrad.weight_grad(x, dy)  # dw without db or mask
    return made


@pytest.fixture(scope="module")
def made():
    return plans_made()


def features(plan, itemsize):
    mc, kc, kf, block = plan.blocks
    MR, nv = K.BLOCKS[block]
    nr = nv * K.VECTOR_BYTES // itemsize
    names = {E.WHOLE: 'WHOLE', E.IN_PLACE: 'IN_PLACE', E.BLOCK: 'BLOCK', E.DOT: 'DOT', E.AXPY: 'AXPY'}
    f = {f"{plan.op} b_mode={names[plan.b_mode]}",
         f"{plan.op} pack_a={plan.pack_a}", f"{plan.op} masked={plan.masked}",
         f"{plan.op} threads={'many' if plan.threads > 1 else 1}"}
    if plan.op == "dw":
        f.add(f"dw swap={plan.swap} pack_a={plan.pack_a}")
        f.add(f"dw swap={plan.swap} b_mode={plan.b_mode}")
    if plan.b_mode == E.AXPY:  # no tiles: rows of C, k = 0, 1 or 2
        f.add(f"{plan.op} axpy K={plan.K}")
        if plan.masked:
            f.add(f"{plan.op} axpy masked K={plan.K}")
        return f
    if plan.b_mode == E.DOT:  # the dot kernel's edges instead of the micro-kernel's
        f.add(f"{plan.op} dot threads={'many' if plan.threads > 1 else 1}")
        if plan.masked:
            f.add(f"{plan.op} dot masked")
        if plan.N % K.DOT_COLS:
            f.add(f"{plan.op} dot: a last group narrower than DOT_COLS")
        if plan.M % K.DOT_ACC:
            f.add(f"{plan.op} dot: rows past the last whole block of DOT_ACC")
        if plan.N >= K.DOT_COLS:
            f.add(f"{plan.op} dot: a whole group of DOT_COLS")
        if plan.M == 1 and plan.N >= K.DOT_ACC:
            f.add(f"{plan.op} dot: a single row, DOT_ACC columns at a time")
        return f
    f.add(f"{plan.op} {('MR x NV', 'wide', 'tall')[block]} block")
    if plan.M and plan.M % MR:
        f.add(f"{plan.op} rows past the last whole micro-tile")
    if plan.M % MR == 1 and plan.threads == 1:  # engine.gemm_block's one-row micro-kernel
        f.add(f"{plan.op} a one-row tile")
    if plan.N and plan.N % nr:
        f.add(f"{plan.op} an edge tile (n < NR)")
    if plan.K > kc:
        f.add(f"{plan.op} several KC blocks")
    if plan.K > kf and kf < kc:
        f.add(f"{plan.op} swap={plan.swap} KF chunks within a block")
    if kf >= kc and min(mc, plan.M // max(plan.threads, 1)) >= 2 * MR:
        # engine.gemm_block runs a column of whole tiles in one micro-kernel call
        f.add(f"{plan.op} a column of tiles per call")
    return f


REQUIRED = (
    ["forward b_mode=BLOCK", "forward b_mode=IN_PLACE", "forward pack_a=True", "forward pack_a=False",
     "forward several KC blocks", "dx b_mode=BLOCK", "dx b_mode=IN_PLACE", "dx pack_a=True",
     "dx pack_a=False", "dx masked=1", "dx several KC blocks",
     "dw b_mode=IN_PLACE", "dw b_mode=BLOCK", f"dw swap=True b_mode={E.BLOCK}",
     f"dw swap=True b_mode={E.IN_PLACE}", f"dw swap=False b_mode={E.BLOCK}",
     f"dw swap=False b_mode={E.IN_PLACE}", "dw masked=1", "dw masked=2", "dw several KC blocks",
     "dw swap=True KF chunks within a block", "dw swap=False KF chunks within a block", "forward b_mode=DOT", "dx b_mode=DOT",
     "dw swap=True pack_a=True", "dw swap=True pack_a=False", "forward a one-row tile",
     "dx a one-row tile", "dw a one-row tile", "dx dot masked",
     "forward a column of tiles per call", "dx a column of tiles per call",
     "dw a column of tiles per call"]
    + [f"{op} axpy K={k}" for op in ("forward", "dx", "dw") for k in (1, 2)] + ["forward axpy K=0"]
    + [f"dx axpy masked K={k}" for k in (1, 2)]
    + [f"{op} dot: {edge}" for op in ("forward", "dx")
       for edge in ("a last group narrower than DOT_COLS", "rows past the last whole block of DOT_ACC")]
    + ["forward dot: a whole group of DOT_COLS", "dx dot: a single row, DOT_ACC columns at a time"]
    + [f"{op} {edge}" for op in ("forward", "dx", "dw")
       for edge in ("rows past the last whole micro-tile", "an edge tile (n < NR)", "MR x NV block")
       + (("wide block",) if K.NV_WIDE != K.NV else ()) + ("tall block",)])


def test_shapes_reach_every_path(made):
    seen = set().union(*(features(plan, itemsize) for plan, itemsize in made))
    missing = [r for r in REQUIRED if r not in seen]
    assert not missing, f"no shape in test_kernels.SHAPES reaches: {missing}"


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 or more threads")
def test_shapes_reach_every_parallel_path(made):
    seen = set().union(*(features(plan, itemsize) for plan, itemsize in made))
    # B packed whole once per call is a parallel call's (one thread packs per KC block)
    missing = [f for f in [f"{op} threads=many" for op in ("forward", "dx", "dw")]
               + ["forward b_mode=WHOLE", "dx b_mode=WHOLE"] if f not in seen]
    assert not missing, f"no shape in test_kernels.SHAPES runs in parallel for: {missing}"


def test_explain_names_the_plan(made):
    for plan, _ in made[:50]:
        text = P.explain(plan)
        assert text.startswith(plan.op) and f"KC = {plan.blocks[1]}" in text
        assert ("serial" in text) == (plan.threads == 1)
