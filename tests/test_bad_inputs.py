"""Malformed calls, one table: each ends in a TypeError or ValueError whose message names
the problem, or gives the right result. None crashes, and a failed call leaves every
``out`` it was given exactly as it was (each is pre-filled with a sentinel and checked).

A row is (name, call, expect): ``call(s)`` makes the call, creating any out= buffers
with ``s(shape, dtype)`` so they are sentinel-filled and checked after a failure;
``expect`` is ``Raises(TypeError, "regex")`` or ``Gives(reference)``, where the
reference is numpy in float64 on the same data.
"""
import numpy as np
import pytest

import lingrad

f32, f64 = np.float32, np.float64
SENTINEL = -12345.0

rng = np.random.default_rng(6)
x = rng.standard_normal((6, 4))
w = rng.standard_normal((4, 3))
b = rng.standard_normal(3)
dy = rng.standard_normal((6, 3))
y = np.maximum(x @ w + b, 0)


class Sentinels:
    """out= buffers for one call, filled with SENTINEL; checks that none was written."""

    def __init__(self):
        self.made = []

    def __call__(self, shape, dtype=f64, writeable=True):
        a = np.full(shape, SENTINEL, dtype)
        a.flags.writeable = writeable
        self.made.append(a)
        return a

    def assert_untouched(self):
        for a in self.made:
            assert np.all(a == SENTINEL), "a failed call wrote into an out= buffer"


class Raises:
    def __init__(self, kind, match):
        self.kind, self.match = kind, match


class Gives:
    """The call returns this (a float64 numpy result, or a tuple of them), within rounding."""

    def __init__(self, *want, rtol=1e-12):
        self.want, self.rtol = want, rtol


def nan_at(a, *index):
    a = a.copy()
    a[index] = np.nan
    return a


def inf_at(a, *index, sign=1.0):
    a = a.copy()
    a[index] = sign * np.inf
    return a


def masked(d, r):
    return np.where(r > 0, d, 0.0)


x_nan, w_inf, dy_inf = nan_at(x, 2, 1), inf_at(w, 1, 2), inf_at(dy, 0, 1)
dy_pm_inf = inf_at(inf_at(dy, 0, 1), 3, 1, sign=-1.0)
y_nan = nan_at(y, 1, 0)
dy_nan_off = nan_at(dy, *np.argwhere(y == 0)[0])   # NaN where the ReLU was off: masked to 0
with np.errstate(invalid="ignore"):   # inf - inf and 0 * inf in the numpy references
    want_dy_inf = (dy_inf @ w.T, x.T @ dy_inf, dy_inf.sum(0))
    want_pm_inf = dy_pm_inf.sum(0)

# Shapes whose N * I * O overflows int32 (2**31 = 2147483648 < 2048 * 1024 * 1025).
BIG_N, BIG_I, BIG_O = 2048, 1024, 1025
big = np.random.default_rng(1)
x_big = big.random((BIG_N, BIG_I), dtype=f32)
w_big = big.random((BIG_I, BIG_O), dtype=f32)
dy_big = big.random((BIG_N, BIG_O), dtype=f32)

ROWS = [
    # ---- lists, scalars, 0-d arrays, None ----
    ("lists for x, w, b", lambda s: lingrad.linear(x.tolist(), w.tolist(), b.tolist()),
     Gives(x @ w + b)),
    ("list dy", lambda s: lingrad.bias_grad(dy.tolist()), Gives(dy.sum(0))),
    ("ragged list x", lambda s: lingrad.linear([[1.0, 2.0], [3.0]], w), Raises(TypeError, "x.*np.asarray")),
    ("list of strings x", lambda s: lingrad.linear([["a"] * 4] * 6, w), Raises(TypeError, "x has dtype <U1")),
    ("python float x", lambda s: lingrad.linear(1.0, w), Raises(ValueError, "x must have at least 1 dimension")),
    ("0-d array x", lambda s: lingrad.linear(np.array(1.0), w), Raises(ValueError, "x .*0-d")),
    ("scalar w", lambda s: lingrad.linear(x, 2.0), Raises(ValueError, r"w must be 2-D .*shape \(\)")),
    ("0-d dy", lambda s: lingrad.bias_grad(np.array(2.0)), Raises(ValueError, "dy .*0-d")),
    ("scalar b", lambda s: lingrad.linear(x, w, 1.0), Raises(ValueError, "b must be 1-D")),
    ("1-D x is one row", lambda s: lingrad.linear(x[0], w, b), Gives(x[0] @ w + b)),
    ("None x", lambda s: lingrad.linear(None, w), Raises(TypeError, "x is required")),
    ("None w", lambda s: lingrad.linear(x, None), Raises(TypeError, "w is required")),
    ("None dy", lambda s: lingrad.bias_grad(None), Raises(TypeError, "dy is required")),
    ("None x for dw", lambda s: lingrad.linear_backward(None, w, dy),
     Raises(TypeError, "x is required")),
    ("None w for dx", lambda s: lingrad.input_grad(dy, None), Raises(TypeError, "w is required")),
    # ---- shapes ----
    ("3-D w", lambda s: lingrad.linear(x, w[None]), Raises(ValueError, r"w must be 2-D .*\(1, 4, 3\)")),
    ("3-D w in backward", lambda s: lingrad.linear_backward(x, np.stack([w, w]), dy),
     Raises(ValueError, "w must be 2-D")),
    ("1-D w", lambda s: lingrad.linear(x, w[:, 0]), Raises(ValueError, "w must be 2-D")),
    ("x I != w I", lambda s: lingrad.linear(x[:, :3], w),
     Raises(ValueError, r"x.shape\[-1\] \(3\) must equal w.shape\[0\] \(4\)")),
    ("b length", lambda s: lingrad.linear(x, w, b[:2]), Raises(ValueError, r"b.shape\[0\] \(2\) must equal")),
    ("2-D b", lambda s: lingrad.linear(x, w, b[None]), Raises(ValueError, "b must be 1-D")),
    ("dy O != w O", lambda s: lingrad.linear_backward(x, w, dy[:, :2]), Raises(ValueError, r"w.shape\[1\] \(3\)")),
    ("dy N != x N", lambda s: lingrad.linear_backward(x, w, dy[:5]), Raises(ValueError, r"x has shape \(6, 4\)")),
    ("weight_grad N", lambda s: lingrad.weight_grad(x, dy[:5]), Raises(ValueError, "leading")),
    ("N-D leading dims differ", lambda s: lingrad.weight_grad(x.reshape(2, 3, 4), dy.reshape(3, 2, 3)),
     Raises(ValueError, r"x \(2, 3, 4\) and dy \(3, 2, 3\)")),
    ("input_grad w O", lambda s: lingrad.input_grad(dy, w[:, :2]), Raises(ValueError, r"w.shape\[1\] \(2\)")),
    ("w shape vs x, dy (no dx)", lambda s: lingrad.linear_backward(x, w[:3], dy, need_dx=False),
     Raises(ValueError, r"w has shape \(3, 3\)")),
    ("relu_out shape", lambda s: lingrad.bias_grad(dy, relu_out=y[:, :2]), Raises(ValueError, "relu_out has shape")),
    ("N-D leading dims", lambda s: lingrad.linear_backward(x.reshape(2, 3, 4), w, dy.reshape(2, 3, 3)),
     Gives((dy @ w.T).reshape(2, 3, 4), x.T @ dy, dy.sum(0))),
    ("N = 0", lambda s: lingrad.linear_backward(x[:0], w, dy[:0]),
     Gives(np.zeros((0, 4)), np.zeros((4, 3)), np.zeros(3))),
    ("I = 0", lambda s: lingrad.linear(x[:, :0], w[:0]), Gives(np.zeros((6, 3)))),
    ("I = 0 backward", lambda s: lingrad.linear_backward(x[:, :0], w[:0], dy),
     Gives(np.zeros((6, 0)), np.zeros((0, 3)), dy.sum(0))),
    ("O = 0", lambda s: lingrad.linear_backward(x, w[:, :0], dy[:, :0]),
     Gives(np.zeros((6, 4)), np.zeros((4, 0)), np.zeros(0))),
    # ---- dtypes ----
    ("int x", lambda s: lingrad.linear(x.astype(np.int64), w),
     Raises(TypeError, r"x has dtype int64.*astype\(np.float32\)")),
    ("int32 dy", lambda s: lingrad.bias_grad(dy.astype(np.int32)), Raises(TypeError, "dy has dtype int32")),
    ("uint8 w", lambda s: lingrad.input_grad(dy, w.astype(np.uint8)), Raises(TypeError, "w has dtype uint8")),
    ("bool w", lambda s: lingrad.linear(x, w > 0), Raises(TypeError, "w has dtype bool")),
    ("complex b", lambda s: lingrad.linear(x, w, b.astype(complex)), Raises(TypeError, "b has dtype complex128")),
    ("complex dy", lambda s: lingrad.weight_grad(x, dy.astype(np.complex64)), Raises(TypeError, "dy has dtype complex64")),
    ("object x", lambda s: lingrad.linear(x.astype(object), w), Raises(TypeError, "x has dtype object")),
    ("float16 x and w", lambda s: lingrad.linear(x.astype(np.float16), w.astype(np.float16)),
     Raises(TypeError, "x has dtype float16")),
    ("big-endian float64", lambda s: lingrad.linear(x.astype(">f8"), w.astype(">f8")),
     Raises(TypeError, r"x has dtype >f8.*astype\(np.float64\)")),
    ("mixed f32 x, f64 w", lambda s: lingrad.linear(x.astype(f32), w), Raises(TypeError, "x float32, w float64")),
    ("mixed in backward", lambda s: lingrad.linear_backward(x, w, dy.astype(f32)), Raises(TypeError, "share one dtype")),
    ("relu_out dtype", lambda s: lingrad.bias_grad(dy, relu_out=y.astype(f32)), Raises(TypeError, "relu_out float32")),
    ("float32 all through", lambda s: lingrad.linear(x.astype(f32), w.astype(f32), b.astype(f32)),
     Gives(x.astype(f32).astype(f64) @ w.astype(f32).astype(f64) + b.astype(f32), rtol=1e-5)),
    # ---- out= ----
    ("read-only out", lambda s: lingrad.linear(x, w, b, out=s((6, 3), writeable=False)), Raises(ValueError, "y is read-only")),
    ("read-only db, accumulate", lambda s: lingrad.bias_grad(dy, out=s(3, writeable=False), accumulate=True),
     Raises(ValueError, "db is read-only")),
    ("out aliasing x", lambda s: lingrad.linear(xs := s((6, 4)), np.eye(4), out=xs), Raises(ValueError, "overlaps x")),
    ("dx out aliasing dy", lambda s: lingrad.input_grad(d := s((6, 4)), np.ones((4, 4)), out=d),
     Raises(ValueError, "dx overlaps dy")),
    ("dw out is a view of x", lambda s: lingrad.weight_grad(xs := s((6, 4)), s((6, 3)), out=xs[:4, :3]),
     Raises(ValueError, "dw overlaps x")),
    ("dw out is a view of dy", lambda s: lingrad.weight_grad(s((6, 4)), d := s((6, 3)), out=d[:4]),
     Raises(ValueError, "dw overlaps dy")),
    ("dw out is w", lambda s: lingrad.linear_backward(
        s((6, 4)), ws := s((4, 3)), s((6, 3)), need_dx=False, need_db=False, out=(None, ws, None)),
     Raises(ValueError, "dw overlaps w")),
    ("db out overlaps dw out", lambda s: lingrad.linear_backward(
        x, w, dy, need_dx=False, out=(None, (buf := s(20))[:12].reshape(4, 3), buf[10:13])),
     Raises(ValueError, "db overlaps dw out")),
    ("out of the wrong dtype", lambda s: lingrad.linear(x, w, out=s((6, 3), f32)), Raises(TypeError, "y has dtype float32")),
    ("out of the wrong shape", lambda s: lingrad.linear(x, w, out=s((3, 6))), Raises(ValueError, r"y has shape \(3, 6\)")),
    ("db of the wrong shape after good dx, dw", lambda s: lingrad.linear_backward(
        x, w, dy, out=(s((6, 4)), s((4, 3)), s(4))), Raises(ValueError, r"db has shape \(4,\)")),
    ("dw of the wrong dtype after good dx", lambda s: lingrad.linear_backward(
        x, w, dy, out=(s((6, 4)), s((4, 3), f32), None)), Raises(TypeError, "dw has dtype float32")),
    ("out a list", lambda s: lingrad.linear(x, w, out=[0.0] * 18), Raises(TypeError, "must be a numpy array, got list")),
    ("out tuple of 2", lambda s: lingrad.linear_backward(x, w, dy, out=(None, None)), Raises(ValueError, r"\(dx, dw, db\) tuple")),
    ("out an int", lambda s: lingrad.linear_backward(x, w, dy, out=5),
     Raises(TypeError, r"out must be a \(dx, dw, db\) tuple, got int")),
    ("accumulate without out", lambda s: lingrad.weight_grad(x, dy, accumulate=True),
     Raises(ValueError, "accumulate=True needs an existing dw buffer")),
    ("non-contiguous out is filled", lambda s: lingrad.linear(x, w, b, out=np.zeros((3, 6)).T),
     Gives(x @ w + b)),
    # ---- NaN and Inf ----
    ("NaN in x", lambda s: lingrad.linear(x_nan, w, b), Gives(x_nan @ w + b)),
    ("NaN in x, relu", lambda s: lingrad.linear(x_nan, w, b, relu=True), Gives(np.maximum(x_nan @ w + b, 0))),
    ("Inf in w", lambda s: lingrad.linear(x, w_inf, b), Gives(x @ w_inf + b)),
    ("Inf in dy", lambda s: lingrad.linear_backward(x, w, dy_inf),
     Gives(*want_dy_inf)),
    ("+Inf and -Inf in one column", lambda s: lingrad.bias_grad(dy_pm_inf), Gives(want_pm_inf)),
    ("NaN in dy where ReLU is off", lambda s: lingrad.linear_backward(x, w, dy_nan_off, relu_out=y),
     Gives(masked(dy_nan_off, y) @ w.T, x.T @ masked(dy_nan_off, y), masked(dy_nan_off, y).sum(0))),
    ("NaN in relu_out", lambda s: lingrad.bias_grad(dy, relu_out=y_nan), Gives(masked(dy, y_nan).sum(0))),
    # ---- N * I * O past int32 ----
    ("linear, N*I*O > 2**31", lambda s: lingrad.linear(x_big, w_big),
     Gives(x_big.astype(f64) @ w_big.astype(f64), rtol=BIG_I * 6e-8)),
    ("weight_grad, N*I*O > 2**31", lambda s: lingrad.weight_grad(x_big, dy_big),
     Gives(x_big.T.astype(f64) @ dy_big.astype(f64), rtol=BIG_N * 6e-8)),
]


def row_id(row):
    return row.values[0] if hasattr(row, "values") else row[0]


@pytest.mark.parametrize("name,call,expect", ROWS, ids=[row_id(r) for r in ROWS])
def test_malformed_call(name, call, expect):
    s = Sentinels()
    if isinstance(expect, Raises):
        with pytest.raises(expect.kind, match=expect.match):
            call(s)
        s.assert_untouched()
        return
    got = call(s)
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(expect.want)
    for g, want in zip(got, expect.want):
        assert g.shape == want.shape, (g.shape, want.shape)
        np.testing.assert_allclose(g, want, rtol=expect.rtol, atol=expect.rtol, equal_nan=True)
