"""Bad input gets a TypeError or ValueError naming the problem, and writes nothing."""
import numpy as np
import pytest

import lingrad

f32, f64 = np.float32, np.float64


def arrays(dtype=f64):
    r = np.random.default_rng(0)
    return (r.standard_normal((6, 4)).astype(dtype), r.standard_normal((4, 3)).astype(dtype),
            r.standard_normal(3).astype(dtype), r.standard_normal((6, 3)).astype(dtype))


x, w, b, dy = arrays()

BAD_DTYPE = [
    ("int x", lambda: lingrad.linear(x.astype(np.int64), w, b), "int64"),
    ("bool w", lambda: lingrad.linear(x, w.astype(bool), b), "bool"),
    ("complex b", lambda: lingrad.linear(x, w, b.astype(complex)), "complex128"),
    ("object x", lambda: lingrad.linear(x.astype(object), w), "object"),
    ("float16 x", lambda: lingrad.linear(x.astype(np.float16), w.astype(np.float16)), "float16"),
    ("mixed f32/f64", lambda: lingrad.linear(x.astype(f32), w, b), "share one dtype"),
    ("mixed in backward", lambda: lingrad.linear_backward(x, w.astype(f32), dy), "share one dtype"),
    ("int dy", lambda: lingrad.bias_grad(dy.astype(np.int32)), "int32"),
    ("out dtype", lambda: lingrad.linear(x, w, out=np.empty((6, 3), f32)), "dtype float32"),
    ("out not an array", lambda: lingrad.linear(x, w, out=[0.0] * 18), "numpy array"),
]

BAD_SHAPE = [
    ("0-d x", lambda: lingrad.linear(np.float64(1.0), w), "0-d"),
    ("1-d w", lambda: lingrad.linear(x, w[:, 0]), "2-D"),
    ("3-d w", lambda: lingrad.linear(x, w[None]), "2-D"),
    ("I mismatch", lambda: lingrad.linear(x[:, :3], w), r"x.shape\[-1\] \(3\) must equal w.shape\[0\] \(4\)"),
    ("b length", lambda: lingrad.linear(x, w, b[:2]), r"b.shape\[0\] \(2\)"),
    ("2-d b", lambda: lingrad.linear(x, w, b[None]), "1-D"),
    ("out shape", lambda: lingrad.linear(x, w, out=np.empty((6, 4))), r"shape \(6, 4\)"),
    ("dy O mismatch", lambda: lingrad.linear_backward(x, w, dy[:, :2]), r"dy.shape\[-1\]"),
    ("dy N mismatch", lambda: lingrad.linear_backward(x, w, dy[:5]), "leading"),
    ("weight_grad N", lambda: lingrad.weight_grad(x, dy[:5]), "leading"),
    ("relu_out shape", lambda: lingrad.linear_backward(x, w, dy, relu_out=dy[:, :2]), "relu_out"),
    ("out tuple length", lambda: lingrad.linear_backward(x, w, dy, out=(None, None)), "tuple"),
    ("accumulate without buffer", lambda: lingrad.weight_grad(x, dy, accumulate=True), "accumulate"),
    ("0-d dy", lambda: lingrad.bias_grad(np.float64(2.0)), "0-d"),
]


@pytest.mark.parametrize("name,call,match", BAD_DTYPE, ids=[c[0] for c in BAD_DTYPE])
def test_bad_dtype_is_type_error(name, call, match):
    with pytest.raises(TypeError, match=match):
        call()


@pytest.mark.parametrize("name,call,match", BAD_SHAPE, ids=[c[0] for c in BAD_SHAPE])
def test_bad_shape_is_value_error(name, call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_dtype_error_says_how_to_fix():
    with pytest.raises(TypeError, match=r"astype\(np.float32\)"):
        lingrad.linear(x.astype(np.int64), w)


def test_readonly_out_rejected_untouched():
    out = np.full((6, 3), 7.0)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        lingrad.linear(x, w, b, out=out)
    assert np.all(out == 7.0)


@pytest.mark.parametrize("which", ["x", "w", "dy"])
def test_out_overlapping_an_input_rejected_untouched(which):
    xx, ww, _, dd = (a.copy() for a in arrays())
    big = {"x": xx, "w": ww, "dy": dd}[which]
    before = big.copy()
    with pytest.raises(ValueError, match="overlaps"):
        lingrad.linear_backward(xx, ww, dd, need_dx=False, need_db=False, out=(None, big[:4, :3] if which != "w" else ww, None))
    np.testing.assert_array_equal(big, before)


def test_outputs_overlapping_each_other_rejected():
    buf = np.zeros(100)
    dw = buf[:12].reshape(4, 3)
    db = buf[10:13]
    with pytest.raises(ValueError, match="overlaps"):
        lingrad.linear_backward(x, w, dy, need_dx=False, out=(None, dw, db))
    assert np.all(buf == 0)


def test_failed_backward_writes_no_out():
    """A bad db buffer is found before dx or dw are written."""
    dx = np.full((6, 4), 5.0)
    dw = np.full((4, 3), 5.0)
    with pytest.raises(ValueError):
        lingrad.linear_backward(x, w, dy, out=(dx, dw, np.empty(4)))
    assert np.all(dx == 5.0) and np.all(dw == 5.0)


def test_lists_are_accepted_like_numpy():
    y = lingrad.linear(x.tolist(), w.tolist(), b.tolist())
    np.testing.assert_allclose(y, x @ w + b, rtol=1e-12)


def test_ragged_list_is_type_error():
    with pytest.raises(TypeError, match="np.asarray"):
        lingrad.linear([[1.0, 2.0], [3.0]], w)
