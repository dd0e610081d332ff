"""Every kernel against lingrad.reference, across dtype x shape x layout x threads."""
import numba
import numpy as np
import pytest
from conftest import DTYPES, assert_close, layout

import lingrad
from lingrad import reference as ref

# (N, I, O), as lingrad.plan runs them on the engine (kernels/config.py for the constants):
# zero and one sizes; edges of the micro-kernel's MR x NR block (rows not a multiple of
# MR = 6 or 12, columns not a multiple of NR = 8 to 32); a summed axis of 1 or 2 (O for dx,
# N for dw); I or O past KC_MAX = 1024 (2050: the forward's and dx's KC_BLOCK slices);
# batches up to B_IN_PLACE_ROWS = 64 (w read in place) and past it (w packed whole);
# batches up to DW_DIRECT_ROWS = 512 (dw = x.T @ d in place; past KF = 64 in chunks of equal
# length) and past it (600: dw.T in per-thread partials, several KC_DW slices);
# O past MC_DW = 96; I = 1024 (rows of x 4 KiB apart: x packed per block for dw); work
# below and above SERIAL_WORK. LAYOUTS add packed A (x or dy not contiguous along their
# rows) and packing of w from every stride pattern; the wide register block (plan.register_block)
# for the forward and dx of a sum of at least WIDE_MIN_K = 512 (1 x 784 -> 50, 20 x 64 -> 520)
# and the long-batch dw. tests/test_plan.py checks, through the plans the API makes, that
# these shapes reach every path and edge.
SHAPES = [
    (0, 3, 4), (5, 0, 3), (5, 3, 0), (1, 1, 1), (1, 784, 50), (3, 5, 7), (17, 16, 17), (17, 17, 16),
    (33, 65, 3), (257, 33, 37), (600, 33, 37), (600, 50, 1), (300, 1, 40),
    (70, 2050, 9), (70, 5, 2050), (64, 64, 64), (130, 400, 300), (45, 20, 2), (2, 30, 20),
    (40, 301, 19), (520, 1024, 3), (37, 2, 45), (20, 12, 1030), (20, 64, 520),
]
LAYOUTS = ["C", "F", "strided", "reversed"]


def data(rng, N, I, O, dtype):
    f = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    return f(N, I), f(I, O), f(O), f(N, O)


def f64(*arrays):
    return [None if a is None else a.astype(np.float64) for a in arrays]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kind", LAYOUTS)
def test_linear(rng, threads, dtype, shape, kind):
    N, I, O = shape
    x, w, b, _ = data(rng, N, I, O, dtype)
    X, W, B = f64(x, w, b)
    scale = np.abs(X) @ np.abs(W) + np.abs(B)
    for bias in (b, None):
        got = lingrad.linear(layout(x, kind), layout(w, kind), bias)
        want = ref.linear(X, W, None if bias is None else B)
        assert_close(got, want, scale, I, dtype)
    got = lingrad.linear(layout(x, kind), layout(w, kind), b, relu=True)
    assert_close(got, ref.linear(X, W, B, relu=True), scale, I, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("masked", [False, True], ids=["plain", "relu"])
def test_linear_backward(rng, threads, dtype, shape, kind, masked):
    N, I, O = shape
    x, w, b, dy = data(rng, N, I, O, dtype)
    y = lingrad.linear(x, w, b, relu=True) if masked else None
    X, W, DY, Y = f64(x, w, dy, y)
    D = ref.relu_mask(DY, Y)
    g = lingrad.linear_backward(layout(x, kind), layout(w, kind), layout(dy, kind),
                                relu_out=None if y is None else layout(y, kind))
    assert isinstance(g, lingrad.LinearGrads)
    assert_close(g.dx, ref.input_grad(DY, W, Y), np.abs(D) @ np.abs(W).T, O, dtype)
    assert_close(g.dw, ref.weight_grad(X, DY, Y), np.abs(X).T @ np.abs(D), N, dtype)
    assert_close(g.db, ref.bias_grad(DY, Y), np.abs(D).sum(0), N, dtype)
    # the standalone functions agree with the fused call
    mask = None if y is None else layout(y, kind)
    np.testing.assert_array_equal(lingrad.input_grad(layout(dy, kind), layout(w, kind),
                                                     relu_out=mask), g.dx)
    assert_close(lingrad.weight_grad(layout(x, kind), layout(dy, kind), relu_out=mask),
                 ref.weight_grad(X, DY, Y), np.abs(X).T @ np.abs(D), N, dtype)
    assert_close(lingrad.bias_grad(layout(dy, kind), relu_out=mask),
                 ref.bias_grad(DY, Y), np.abs(D).sum(0), N, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 5, 7), (17, 16, 17), (33, 20, 18)], ids=str)
def test_against_naive_loops(rng, dtype, shape):
    """The loops written straight from the formulas, on shapes small enough for Python."""
    N, I, O = shape
    x, w, b, dy = data(rng, N, I, O, dtype)
    X, W, B, DY = f64(x, w, b, dy)
    g = lingrad.linear_backward(x, w, dy)
    assert_close(lingrad.linear(x, w, b), ref.linear_loops(X, W, B),
                 np.abs(X) @ np.abs(W) + np.abs(B), I, dtype)
    assert_close(g.dx, ref.input_grad_loops(DY, W), np.abs(DY) @ np.abs(W).T, O, dtype)
    assert_close(g.dw, ref.weight_grad_loops(X, DY), np.abs(X).T @ np.abs(DY), N, dtype)
    assert_close(g.db, ref.bias_grad_loops(DY), np.abs(DY).sum(0), N, dtype)


def test_reference_loops_match_one_liners(rng):
    x, w, b, dy = data(rng, 6, 4, 5, np.float64)
    np.testing.assert_allclose(ref.linear_loops(x, w, b), ref.linear(x, w, b), rtol=1e-12)
    np.testing.assert_allclose(ref.input_grad_loops(dy, w), ref.input_grad(dy, w), rtol=1e-12)
    np.testing.assert_allclose(ref.weight_grad_loops(x, dy), ref.weight_grad(x, dy), rtol=1e-12)
    np.testing.assert_allclose(ref.bias_grad_loops(dy), ref.bias_grad(dy), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_leading_batch_dims(rng, threads, dtype):
    x = rng.standard_normal((2, 3, 40, 19)).astype(dtype)
    w = rng.standard_normal((19, 23)).astype(dtype)
    b = rng.standard_normal(23).astype(dtype)
    dy = rng.standard_normal((2, 3, 40, 23)).astype(dtype)
    y = lingrad.linear(x, w, b)
    assert y.shape == (2, 3, 40, 23)
    X, W, B, DY = f64(x, w, b, dy)
    assert_close(y, X @ W + B, np.abs(X) @ np.abs(W) + np.abs(B), 19, dtype)
    g = lingrad.linear_backward(x, w, dy)
    assert g.dx.shape == x.shape and g.dw.shape == w.shape and g.db.shape == b.shape
    assert_close(g.dx, DY @ W.T, np.abs(DY) @ np.abs(W).T, 23, dtype)
    X2, DY2 = X.reshape(-1, 19), DY.reshape(-1, 23)
    assert_close(g.dw, X2.T @ DY2, np.abs(X2).T @ np.abs(DY2), 240, dtype)
    assert_close(g.db, DY2.sum(0), np.abs(DY2).sum(0), 240, dtype)
    # a single sample (I,) -> (O,), as torch.nn.functional.linear
    assert_close(lingrad.linear(x[0, 0, 0], w), X[0, 0, 0] @ W, np.abs(X[0, 0, 0]) @ np.abs(W),
                 19, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["C", "F"])
def test_out_buffers(rng, threads, dtype, kind):
    N, I, O = 300, 40, 30
    x, w, b, dy = data(rng, N, I, O, dtype)
    y = layout(np.full((N, O), np.nan, dtype), kind)
    r = lingrad.linear(x, w, b, out=y)
    assert r is y
    np.testing.assert_allclose(y, x.astype(np.float64) @ w + b, rtol=1e-4, atol=1e-4)
    bufs = tuple(layout(np.full(s, np.nan, dtype), kind) for s in [(N, I), (I, O), (O,)])
    g = lingrad.linear_backward(x, w, dy, out=bufs)
    assert all(a is b for a, b in zip(g, bufs))
    ref_g = lingrad.linear_backward(x, w, dy)
    for a, e in zip(g, ref_g):
        np.testing.assert_array_equal(a, e)
    assert lingrad.input_grad(dy, w, out=bufs[0]) is bufs[0]
    assert lingrad.weight_grad(x, dy, out=bufs[1]) is bufs[1]
    assert lingrad.bias_grad(dy, out=bufs[2]) is bufs[2]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["C", "F"])
@pytest.mark.parametrize("I, O, step", [(37, 21, 300), (301, 19, 48), (30, 20, 2)], ids=str)
def test_accumulate_matches_full_batch(rng, threads, dtype, kind, I, O, step):
    """Micro-batches accumulated with accumulate=True give the full-batch gradient:
    engine.merge adds each micro-batch's float64 sums to the buffer and rounds once.
    Micro-batches of 300 rows (dw over two KC_DW slices of the batch), of 48 (one slice,
    shorter than KF) and of 2 (a summed axis of 2)."""
    N = 1000
    x, w, _, dy = data(rng, N, I, O, dtype)
    dw = layout(np.zeros((I, O), dtype), kind)
    db = np.zeros(O, dtype)
    for n0 in range(0, N, step):
        g = lingrad.linear_backward(x[n0:n0 + step], w, dy[n0:n0 + step], need_dx=False,
                                    out=(None, dw, db), accumulate=True)
        assert g.dx is None and g.dw is dw and g.db is db
    X, DY = f64(x, dy)
    # each micro-batch result is rounded once more when added
    assert_close(dw, X.T @ DY, np.abs(X).T @ np.abs(DY), N + 8, dtype)
    assert_close(db, DY.sum(0), np.abs(DY).sum(0), N + 8, dtype)
    w2 = lingrad.weight_grad(x, dy, out=dw.copy(), accumulate=True)
    assert_close(w2, 2 * (X.T @ DY), 2 * np.abs(X).T @ np.abs(DY), N + 8, dtype)
    b2 = lingrad.bias_grad(dy, out=db.copy(), accumulate=True)
    assert_close(b2, 2 * DY.sum(0), 2 * np.abs(DY).sum(0), N + 8, dtype)


def test_skip_flags(rng):
    x, w, _, dy = data(rng, 50, 8, 6, np.float64)
    for need in [(True, False, False), (False, True, False), (False, False, True),
                 (False, True, True), (True, True, True)]:
        g = lingrad.linear_backward(x, w, dy, need_dx=need[0], need_dw=need[1], need_db=need[2])
        for got, wanted in zip(g, need):
            assert (got is not None) == wanted


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf_propagate_like_numpy(rng, threads, dtype):
    N, I, O = 300, 40, 30
    x, w, b, dy = data(rng, N, I, O, dtype)
    x[3, 5] = np.nan
    x[7, 1] = np.inf
    dy[11, 2] = -np.inf
    with np.errstate(all="ignore"):
        want_y = x @ w + b
        want = (dy @ w.T, x.T @ dy, dy.sum(0))
    y = lingrad.linear(x, w, b)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want_y))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(want_y))
    for got, e in zip(lingrad.linear_backward(x, w, dy), want):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(e))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(e))
    r = lingrad.linear(x, w, b, relu=True)  # ReLU keeps NaN, as np.maximum does
    np.testing.assert_array_equal(np.isnan(r), np.isnan(np.maximum(want_y, 0)))


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2,
                    reason="needs 2 or more Numba threads (NUMBA_NUM_THREADS)")
@pytest.mark.parametrize("dtype", DTYPES)
def test_one_thread_and_all_threads_agree(rng, dtype):
    """Chunking the batch differently only changes rounding, within the sums' error bound:
    the serial kernels at 1 thread against the parallel ones at all (>= 2) threads."""
    N, I, O = 2000, 70, 45
    x, w, b, dy = data(rng, N, I, O, dtype)
    X, W, B, DY = f64(x, w, b, dy)
    scales = [(np.abs(X) @ np.abs(W) + np.abs(B), I), (np.abs(DY) @ np.abs(W).T, O),
              (np.abs(X).T @ np.abs(DY), N), (np.abs(DY).sum(0), N)]
    results = []
    for n in (1, numba.config.NUMBA_NUM_THREADS):
        with lingrad.num_threads(n):
            assert lingrad.get_num_threads() == n
            results.append([lingrad.linear(x, w, b), *lingrad.linear_backward(x, w, dy)])
    one, every = results
    for a, e, (scale, k) in zip(one, every, scales):
        assert_close(a, e.astype(np.float64), 2 * scale, k, dtype)


def test_threads_api():
    import numba
    old = lingrad.get_num_threads()
    with lingrad.num_threads(1):
        assert lingrad.get_num_threads() == 1
    assert lingrad.get_num_threads() == old
    with pytest.raises(ValueError, match="NUMBA_NUM_THREADS"):
        lingrad.set_num_threads(numba.config.NUMBA_NUM_THREADS + 1)
    with pytest.raises(ValueError):
        lingrad.set_num_threads(0)


def test_python_threads_at_once(rng):
    """Several Python threads calling at once get the serial results."""
    from concurrent.futures import ThreadPoolExecutor
    x, w, b, dy = data(rng, 3000, 64, 33, np.float32)
    want = [lingrad.linear(x, w, b), *lingrad.linear_backward(x, w, dy)]

    def call(_):
        return [lingrad.linear(x, w, b), *lingrad.linear_backward(x, w, dy)]

    with ThreadPoolExecutor(8) as pool:
        for got in pool.map(call, range(32)):
            for a, e in zip(got, want):
                np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6)
