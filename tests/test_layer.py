"""lingrad.Linear against numpy float64 references: forward, backward, SGD step,
buffer reuse across batches and batch-shape changes, and its errors.

The inputs are dyadic (multiples of 1/8 in [-1, 1]): every product and partial
sum is exact in float32 too, so the ReLU mask is the same in every dtype and
summation order, and the float64 reference is the exact answer.
"""
import numpy as np
import pytest

import lingrad
from lingrad import Linear

from conftest import DTYPES, assert_close

I, O = 37, 11  # odd sizes: edges of the micro-kernel's block both ways


def dyadic(rng, shape, dtype):
    return (rng.integers(-8, 9, shape) / 8).astype(dtype)


def make(rng, dtype, bias=True, i=I, o=O):
    w = dyadic(rng, (i, o), dtype)
    b = dyadic(rng, (o,), dtype) if bias else None
    return w, b


def forward_ref(x, w, b, relu):
    y = x.astype(np.float64) @ w.astype(np.float64)
    if b is not None:
        y = y + b
    return np.maximum(y, 0) if relu else y


def backward_ref(x, w, b, dy, relu):
    """(dx, dw, db) in float64, the ReLU mask from the float64 pre-activation."""
    x64, w64, d = (a.astype(np.float64) for a in (x, w, dy))
    if relu:
        d = d * (forward_ref(x, w, b, False) > 0)
    d2, x2 = d.reshape(-1, w.shape[1]), x64.reshape(-1, w.shape[0])
    return d @ w64.T, x2.T @ d2, d2.sum(0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("batch", [(1,), (16,), (65,), (3, 7)], ids=str)
def test_forward_backward_step_match_numpy(rng, threads, dtype, relu, bias, batch):
    w, b = make(rng, dtype, bias)
    w0, b0 = w.copy(), (None if b is None else b.copy())
    x, dy = dyadic(rng, batch + (I,), dtype), dyadic(rng, batch + (O,), dtype)
    layer = Linear(w, b)

    y = layer(x, relu=relu)
    assert_close(y, forward_ref(x, w, b, relu), scale=I + 1, k=I + 1, dtype=dtype)
    if relu:
        assert (y == 0).any() and (y > 0).any()  # both sides of the mask are exercised

    dx = layer.backward(dy)
    dx_ref, dw_ref, db_ref = backward_ref(x, w, b, dy, relu)
    n = int(np.prod(batch))
    assert_close(dx, dx_ref, scale=O, k=O, dtype=dtype)
    assert_close(layer.dw, dw_ref, scale=n, k=n, dtype=dtype)
    if bias:
        assert_close(layer.db, db_ref, scale=n, k=n, dtype=dtype)
    else:
        assert layer.db is None

    lr = 0.25  # a power of two: w0 - lr * dw is exact
    layer.step(lr)
    assert layer.w is w  # updated in place, as given
    assert_close(layer.w, w0 - lr * dw_ref, scale=n, k=n, dtype=dtype)
    if bias:
        assert layer.b is b
        assert_close(layer.b, b0 - lr * db_ref, scale=n, k=n, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_need_dx_false_returns_none_and_fills_grads(rng, dtype):
    w, b = make(rng, dtype)
    x, dy = dyadic(rng, (20, I), dtype), dyadic(rng, (20, O), dtype)
    layer = Linear(w, b)
    layer(x, relu=True)
    assert layer.backward(dy, need_dx=False) is None
    _, dw_ref, db_ref = backward_ref(x, w, b, dy, True)
    assert_close(layer.dw, dw_ref, scale=20, k=20, dtype=dtype)
    assert_close(layer.db, db_ref, scale=20, k=20, dtype=dtype)


def test_buffers_are_reused_for_the_same_batch_shape(rng):
    dtype = np.float32
    w, b = make(rng, dtype)
    layer = Linear(w, b)
    dw, db = layer.dw, layer.db
    xs = [dyadic(rng, (8, I), dtype) for _ in range(3)]
    dys = [dyadic(rng, (8, O), dtype) for _ in range(3)]
    ys, dxs = [], []
    for x, dy in zip(xs, dys):
        y = layer(x, relu=True)
        assert_close(y, forward_ref(x, w, b, True), scale=I + 1, k=I + 1, dtype=dtype)
        dx = layer.backward(dy)
        assert_close(dx, backward_ref(x, w, b, dy, True)[0], scale=O, k=O, dtype=dtype)
        ys.append(y)
        dxs.append(dx)
    assert all(y is ys[0] for y in ys) and all(dx is dxs[0] for dx in dxs)
    assert layer.dw is dw and layer.db is db  # the gradient buffers never change


def test_batch_shape_change_reallocates_and_stays_correct(rng):
    dtype = np.float64
    w, b = make(rng, dtype)
    layer = Linear(w, b)
    seen = []
    for batch in [(5,), (9,), (9,), (2, 3), (5,)]:
        x, dy = dyadic(rng, batch + (I,), dtype), dyadic(rng, batch + (O,), dtype)
        y = layer(x)
        dx = layer.backward(dy)
        assert y.shape == batch + (O,) and dx.shape == batch + (I,)
        assert_close(y, forward_ref(x, w, b, False), scale=I + 1, k=I + 1, dtype=dtype)
        dx_ref, dw_ref, db_ref = backward_ref(x, w, b, dy, False)
        n = int(np.prod(batch))
        assert_close(dx, dx_ref, scale=O, k=O, dtype=dtype)
        assert_close(layer.dw, dw_ref, scale=n, k=n, dtype=dtype)
        assert_close(layer.db, db_ref, scale=n, k=n, dtype=dtype)
        seen.append(y)
    assert seen[2] is seen[1]  # same shape as before: the same buffer
    assert seen[1] is not seen[0] and seen[3] is not seen[2] and seen[4] is not seen[3]


def test_output_fed_back_in(rng):
    """layer(layer(x)) with a square w: the second call gets a fresh buffer, not its own input."""
    dtype = np.float64
    w, b = make(rng, dtype, o=I)
    x = dyadic(rng, (6, I), dtype)
    layer = Linear(w, b)
    y1 = layer(x)
    y2 = layer(y1)
    assert not np.shares_memory(y1, y2)
    ref = forward_ref(forward_ref(x, w, b, False), w, b, False)
    assert_close(y2, ref, scale=float(np.abs(ref).max()) + 1, k=2 * (I + 1), dtype=dtype)


def test_dx_fed_back_in(rng):
    """backward(dy) where dy is the layer's own dx buffer (square w): a fresh dx buffer."""
    dtype = np.float64
    w, b = make(rng, dtype, o=I)
    x, dy = dyadic(rng, (6, I), dtype), dyadic(rng, (6, I), dtype)
    layer = Linear(w, b)
    layer(x)
    dx1 = layer.backward(dy)
    dx1_copy = dx1.copy()
    dx2 = layer.backward(dx1)
    assert not np.shares_memory(dx1, dx2)
    assert np.array_equal(dx1, dx1_copy)  # the input was not overwritten
    ref = backward_ref(x, w, b, dx1_copy, False)
    assert_close(dx2, ref[0], scale=float(np.abs(dx1_copy).sum(1).max()) * I + 1, k=I, dtype=dtype)
    assert_close(layer.dw, ref[1], scale=float(np.abs(dx1_copy).max()) * 6 + 1, k=6, dtype=dtype)


def test_two_layer_step_matches_numpy(rng, threads):
    """An MLP step through two Linear layers (as train.py runs it) against a numpy float64 step."""
    dtype = np.float32
    H = 13
    w1, b1 = make(rng, dtype, i=I, o=H)
    w2, b2 = make(rng, dtype, i=H, o=O)
    ref = [a.astype(np.float64) for a in (w1, b1, w2, b2)]
    x, dz = dyadic(rng, (30, I), dtype), dyadic(rng, (30, O), dtype)
    l1, l2 = Linear(w1, b1), Linear(w2, b2)
    h = l1(x, relu=True)
    l2(h)
    assert l1.backward(l2.backward(dz), need_dx=False) is None
    l1.step(0.5)
    l2.step(0.5)

    W1, B1, W2, B2 = ref
    a = x @ W1 + B1
    hh = np.maximum(a, 0)
    dh = (dz @ W2.T) * (a > 0)
    expected = [W1 - 0.5 * (x.T @ dh), B1 - 0.5 * dh.sum(0), W2 - 0.5 * (hh.T @ dz), B2 - 0.5 * dz.sum(0)]
    scale = 30 * (I + 1) * O
    for got, e in zip((l1.w, l1.b, l2.w, l2.b), expected):
        assert_close(got, e, scale=scale, k=30 * H, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["kernel", "kernel nobias", "fortran w", "w replaced",
                                  "dw replaced", "readonly w"])
def test_step_kernel_and_numpy_paths(rng, dtype, case, monkeypatch):
    """step() runs kernels/engine.py sgd for contiguous buffers of the layer's own shapes and
    numpy for anything else; both give w - lr * dw, and a bad buffer raises as numpy does."""
    calls = []
    sgd = lingrad.kernels.engine.sgd
    monkeypatch.setattr(lingrad.kernels.engine, "sgd", lambda *a: calls.append(1) or sgd(*a))
    w, b = make(rng, dtype, bias=case != "kernel nobias")
    if case == "fortran w":
        w = np.asfortranarray(w)
    layer = Linear(w, b)
    layer.dw[...] = dyadic(rng, w.shape, dtype)
    if b is not None:
        layer.db[...] = dyadic(rng, b.shape, dtype)
    if case == "w replaced":
        layer.w = dyadic(rng, (I, O), dtype)[:, ::-1]  # a strided view: numpy's path
    if case == "dw replaced":
        layer.dw = dyadic(rng, (I + 1, O), dtype)  # the wrong shape: numpy raises
        with pytest.raises(ValueError):
            layer.step(0.25)
        return
    if case == "readonly w":
        layer.w.flags.writeable = False
        with pytest.raises(ValueError, match="read-only"):
            layer.step(0.25)
        return
    w0, b0 = layer.w.copy(), None if b is None else layer.b.copy()
    layer.step(0.25)  # a power of two: exact
    assert len(calls) == case.startswith("kernel")
    assert np.array_equal(layer.w, w0 - dtype(0.25) * layer.dw)
    if b is not None:
        assert np.array_equal(layer.b, b0 - dtype(0.25) * layer.db)


def test_repr_and_sizes(rng):
    w, b = make(rng, np.float32)
    layer = Linear(w, b)
    assert (layer.in_features, layer.out_features) == (I, O)
    assert repr(layer) == f"Linear({I} -> {O}, float32, bias)"
    assert repr(Linear(w)) == f"Linear({I} -> {O}, float32, no bias)"


# --- errors ---

def test_backward_before_forward():
    layer = Linear(np.zeros((3, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="backward\\(\\) before forward"):
        layer.backward(np.zeros((4, 2)))


@pytest.mark.parametrize("dy_shape", [(4, 3), (5, 2), (4,), (2, 2, 2)])
def test_wrong_dy_shape(dy_shape):
    layer = Linear(np.zeros((3, 2)), np.zeros(2))
    layer(np.zeros((4, 3)), relu=True)
    with pytest.raises(ValueError, match=r"dy has shape .* expected \(4, 2\)"):
        layer.backward(np.zeros(dy_shape))


def test_wrong_dy_dtype_is_the_apis_type_error():
    layer = Linear(np.zeros((3, 2)), np.zeros(2))
    layer(np.zeros((4, 3)))
    with pytest.raises(TypeError, match="share one dtype"):
        layer.backward(np.zeros((4, 2), np.float32))


def test_wrong_x_leaves_the_last_forward_in_place(rng):
    """A failed forward (the API's error) does not replace what backward uses."""
    w, b = make(rng, np.float64)
    layer = Linear(w, b)
    x, dy = dyadic(rng, (4, I), np.float64), dyadic(rng, (4, O), np.float64)
    layer(x)
    with pytest.raises(ValueError, match=r"x.shape\[-1\]"):
        layer(np.zeros((4, I + 1)))
    with pytest.raises(TypeError, match="share one dtype"):
        layer(x.astype(np.float32))
    layer.backward(dy)
    assert_close(layer.dw, backward_ref(x, w, b, dy, False)[1], scale=4, k=4, dtype=np.float64)


@pytest.mark.parametrize("w, b, error, match", [
    (np.zeros((3, 2), np.int64), None, TypeError, "float32 or float64"),
    ([[1.0, 2.0]], None, TypeError, "float32 or float64 numpy array"),
    (np.zeros(3), None, ValueError, "2-D"),
    (np.zeros((3, 2)), np.zeros(3), ValueError, r"b has shape \(3,\), expected"),
    (np.zeros((3, 2)), np.zeros(2, np.float32), TypeError, "w's dtype"),
    (np.zeros((3, 2)), [0.0, 0.0], TypeError, "w's dtype"),
], ids=["int-w", "list-w", "1d-w", "b-shape", "b-dtype", "list-b"])
def test_constructor_errors(w, b, error, match):
    with pytest.raises(error, match=match):
        Linear(w, b)


def test_exported():
    assert lingrad.Linear is Linear and "Linear" in lingrad.__all__
