"""Property-based tests (hypothesis): any shape, dtype, layout and option matches numpy.

Drawn per example: float32 or float64; batch shape with 0 to 2 leading dimensions
(sizes from 0, and N up to 600, past KC_DW = 256, so that dw runs in several slices of
the batch); I and O
from 0; for every array a layout
(C, Fortran, a strided slice, negative strides, negative strides of a strided slice);
with or without bias, ReLU, accumulate into a prefilled out=, out= in any layout;
1 or all Numba threads. Results must be within the rigorous bound of conftest.assert_close:
(k + 2) * eps * sum|terms| for a k-term sum.

Profiles, chosen by LINGRAD_HYPOTHESIS_PROFILE:
    ci    (default) 50 examples per test, a few seconds;
    soak  2000 examples per test, for a local run:
          LINGRAD_HYPOTHESIS_PROFILE=soak python -m pytest -q tests/test_properties.py
They are applied to these tests only (not loaded globally), so other test modules keep
their own hypothesis settings.
"""
import os

import numba
import numpy as np
import pytest
from conftest import assert_close

import lingrad
from lingrad import reference as ref

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

settings.register_profile("lingrad-ci", max_examples=50, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("lingrad-soak", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = settings.get_profile("lingrad-" + os.environ.get("LINGRAD_HYPOTHESIS_PROFILE", "ci"))

LAYOUTS = ["C", "F", "strided", "reversed", "reversed-strided"]


def layout(a, kind):
    """The same values as ``a`` in another memory layout (any number of dimensions)."""
    if kind == "C" or a.ndim == 0:
        return np.ascontiguousarray(a)
    if kind == "F":
        return np.asfortranarray(a)
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    if kind == "strided":              # every other element of the last axis
        wide[..., ::2] = a
        return wide[..., ::2]
    if kind == "reversed":             # negative strides along the first axis
        return np.ascontiguousarray(a[::-1])[::-1]
    if kind == "reversed-strided":     # negative, non-unit strides along the last axis
        wide[..., ::-2] = a
        return wide[..., ::-2]
    raise ValueError(kind)


@st.composite
def problems(draw):
    """(dtype, batch shape, I, O, seed): the batch shape has 0 to 2 leading dims."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    lead = draw(st.sampled_from([0, 1, 2]))
    if lead == 0:
        batch = ()
    elif lead == 1:
        batch = (draw(st.one_of(st.integers(0, 8), st.integers(250, 600))),)
    else:
        batch = (draw(st.integers(0, 5)), draw(st.integers(0, 70)))
    I = draw(st.one_of(st.integers(0, 5), st.integers(14, 40)))
    O = draw(st.one_of(st.integers(0, 5), st.integers(14, 40)))
    return dtype, batch, I, O, draw(st.integers(0, 2**32 - 1))


def arrays(dtype, batch, I, O, seed):
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    x, w, b, dy = f(*batch, I), f(I, O), f(O), f(*batch, O)
    return x, w, b, dy


def as64(*arrays):
    return [None if a is None else a.astype(np.float64) for a in arrays]


def flat(a):
    """(..., k) -> (rows, k), with the row count explicit so that k = 0 works."""
    return a.reshape(int(np.prod(a.shape[:-1])), a.shape[-1])


thread_counts = st.sampled_from([1, numba.config.NUMBA_NUM_THREADS])
kinds = st.sampled_from(LAYOUTS)


@PROFILE
@given(problems(), kinds, kinds, st.booleans(), st.booleans(), st.booleans(), thread_counts)
def test_linear_matches_numpy(problem, kx, kw, with_bias, relu, with_out, n_threads):
    dtype, batch, I, O, seed = problem
    x, w, b, _ = arrays(*problem)
    X, W, B = as64(x, w, b)
    bias = b if with_bias else None
    out = layout(np.full(batch + (O,), np.nan, dtype), kx) if with_out else None
    with lingrad.num_threads(n_threads):
        y = lingrad.linear(layout(x, kx), layout(w, kw), bias, relu=relu, out=out)
    if with_out:
        assert y is out
    want = ref.linear(X, W, B if with_bias else None, relu=relu)
    scale = np.abs(X) @ np.abs(W) + (np.abs(B) if with_bias else 0)
    assert_close(y, want, scale, I, dtype)


@PROFILE
@given(problems(), kinds, kinds, st.booleans(), st.booleans(), st.booleans(),
       st.tuples(st.booleans(), st.booleans(), st.booleans()), thread_counts)
def test_linear_backward_matches_numpy(problem, kx, kd, relu, accumulate, with_out, need,
                                       n_threads):
    dtype, batch, I, O, seed = problem
    x, w, b, dy = arrays(*problem)
    need_dx, need_dw, need_db = need
    y = lingrad.linear(x, w, b, relu=True) if relu else None
    X, W, DY, Y = as64(x, w, dy, y)
    D = ref.relu_mask(DY, Y)
    rng = np.random.default_rng(seed + 1)
    prior = (rng.standard_normal((I, O)).astype(dtype), rng.standard_normal(O).astype(dtype))
    P0, P1 = as64(*prior) if accumulate and (need_dw or need_db) else (0.0, 0.0)
    outs = None
    if with_out or accumulate:
        outs = (layout(np.full(batch + (I,), np.nan, dtype), kx) if need_dx else None,
                layout(prior[0].copy(), kd) if need_dw else None,
                prior[1].copy() if need_db else None)
    accumulate = accumulate and (need_dw or need_db)
    with lingrad.num_threads(n_threads):
        g = lingrad.linear_backward(layout(x, kx), layout(w, kd), layout(dy, kd),
                                    relu_out=None if y is None else layout(y, kx),
                                    need_dx=need_dx, need_dw=need_dw, need_db=need_db,
                                    out=outs, accumulate=accumulate)
    N = flat(D).shape[0]
    for got, wanted, want, scale, k in [
        (g.dx, need_dx, ref.input_grad(DY, W, Y), np.abs(D) @ np.abs(W).T, O),
        (g.dw, need_dw, P0 + ref.weight_grad(X, DY, Y),
         np.abs(P0) + np.abs(flat(X)).T @ np.abs(flat(D)), N + 1),
        (g.db, need_db, P1 + ref.bias_grad(DY, Y), np.abs(P1) + np.abs(flat(D)).sum(0), N + 1),
    ]:
        if not wanted:
            assert got is None
            continue
        assert_close(got, want, scale, k, dtype)
    if outs is not None:
        for got, given_out in zip(g, outs):
            assert given_out is None or got is given_out


@PROFILE
@given(problems(), kinds, st.booleans(), st.booleans(), thread_counts)
def test_standalone_grads_match_numpy(problem, kind, relu, accumulate, n_threads):
    dtype, batch, I, O, seed = problem
    x, w, b, dy = arrays(*problem)
    y = lingrad.linear(x, w, b, relu=True) if relu else None
    X, W, DY, Y = as64(x, w, dy, y)
    D = ref.relu_mask(DY, Y)
    mask = None if y is None else layout(y, kind)
    N = flat(D).shape[0]
    dw0 = np.ones((I, O), dtype) if accumulate else None
    db0 = np.ones(O, dtype) if accumulate else None
    with lingrad.num_threads(n_threads):
        dx = lingrad.input_grad(layout(dy, kind), layout(w, kind), relu_out=mask)
        dw = lingrad.weight_grad(layout(x, kind), layout(dy, kind), relu_out=mask, out=dw0,
                                 accumulate=accumulate)
        db = lingrad.bias_grad(layout(dy, kind), relu_out=mask, out=db0, accumulate=accumulate)
    add = 1.0 if accumulate else 0.0
    assert_close(dx, ref.input_grad(DY, W, Y), np.abs(D) @ np.abs(W).T, O, dtype)
    assert_close(dw, add + ref.weight_grad(X, DY, Y), add + np.abs(flat(X)).T @ np.abs(flat(D)),
                 N + 1, dtype)
    assert_close(db, add + ref.bias_grad(DY, Y), add + np.abs(flat(D)).sum(0), N + 1, dtype)


ALL_THREADS = numba.config.NUMBA_NUM_THREADS


@st.composite
def parallel_problems(draw):
    """(dtype, batch shape, I, O, seed) with enough work for the parallel kernels
    (N * I * O >= SERIAL_WORK) and at least 2 * MR rows, so that the forward and dx split
    rows between threads; dw splits the batch only from 2 * DW_SPLIT_ROWS rows, which the larger
    draws reach."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    I, O = draw(st.integers(16, 48)), draw(st.integers(16, 48))
    least = max(2 * lingrad.kernels.MR, -(-lingrad.kernels.SERIAL_WORK // (I * O)))
    N = draw(st.integers(least, least + 500))
    batch = draw(st.sampled_from([(N,), (2, -(-N // 2))]))
    return dtype, batch, I, O, draw(st.integers(0, 2**32 - 1))


@pytest.mark.skipif(ALL_THREADS < 2, reason="needs 2 or more Numba threads (NUMBA_NUM_THREADS)")
@PROFILE
@given(parallel_problems(), st.integers(2, max(2, ALL_THREADS)))
def test_one_and_several_threads_agree(problem, n_threads):
    """The same calls at 1 thread (the serial kernels) and at n >= 2 threads (the parallel
    kernels) agree to rounding: each within twice the bound of a k-term sum of the other."""
    assert n_threads >= 2
    dtype, batch, I, O, seed = problem
    x, w, b, dy = arrays(*problem)
    runs = []
    for n in (1, n_threads):
        with lingrad.num_threads(n):
            assert lingrad.get_num_threads() == n
            runs.append((lingrad.linear(x, w, b), *lingrad.linear_backward(x, w, dy)))
    one, many = runs
    X, W, B, DY = as64(x, w, b, dy)
    N = flat(DY).shape[0]
    scales = [(np.abs(X) @ np.abs(W) + np.abs(B), I), (np.abs(DY) @ np.abs(W).T, O),
              (np.abs(flat(X)).T @ np.abs(flat(DY)), N), (np.abs(flat(DY)).sum(0), N)]
    for a, c, (scale, k) in zip(one, many, scales):
        assert_close(c, a.astype(np.float64), 2 * scale, k, dtype)
