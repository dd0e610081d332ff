"""The lean call path (issue 12): a call is validated and planned once per key, and the
cache never admits what the checks would refuse.

Each test first warms the cache with good calls, then makes a call that matches the
cached key in everything the key holds but is bad in what it cannot hold (an out= that
overlaps an input or is read-only), or differs from it by one wrong dtype or shape. The
call must raise as the checked path does, and leave every out= buffer as it was.
"""
import numba
import numpy as np
import pytest
from unittest import mock

import lingrad
from lingrad import api
from lingrad import plan as P

SENTINEL = -7.0
rng = np.random.default_rng(12)


def arrays(N=6, I=4, O=3, dtype=np.float64):
    f = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    return f(N, I), f(I, O), f(O), f(N, O)


def filled(shape, dtype=np.float64):
    return np.full(shape, SENTINEL, dtype)


def warm(call, times=3):
    """Call until cached, then once more with the checked path disabled: the bad call that
    follows matches a cached key (or differs from it only as the test says)."""
    for _ in range(times):
        call()
    no = AssertionError("the warmed call was not cached")
    with mock.patch.object(api, "_linear_checked", side_effect=no), \
            mock.patch.object(api, "_backward_checked", side_effect=no):
        call()


def untouched(*bufs):
    for b in bufs:
        assert np.all(b == SENTINEL), "a refused call wrote into an out= buffer"


def test_cached_calls_match_checked_calls_bit_for_bit():
    for dtype in (np.float32, np.float64):
        for N, I, O in [(1, 784, 50), (16, 784, 50), (600, 33, 37), (3, 5, 7)]:
            x, w, b, dy = arrays(N, I, O, dtype)
            y = np.maximum(x @ w + b, 0)
            calls = {
                "linear": lambda: [lingrad.linear(x, w, b, relu=True)],
                "linear F": lambda: [lingrad.linear(np.asfortranarray(x), np.asfortranarray(w), b)],
                "backward": lambda: list(lingrad.linear_backward(x, w, dy, relu_out=y)),
                "backward F": lambda: list(lingrad.linear_backward(
                    np.asfortranarray(x), np.asfortranarray(w), np.asfortranarray(dy))),
                "input_grad": lambda: [lingrad.input_grad(dy, w)],
                "weight_grad": lambda: [lingrad.weight_grad(x, dy, relu_out=y)],
                "bias_grad": lambda: [lingrad.bias_grad(dy)],
            }
            for name, call in calls.items():
                api.clear_cache()
                checked = call()
                for _ in range(3):
                    cached = call()
                    for a, c in zip(checked, cached):
                        np.testing.assert_array_equal(a, c, err_msg=name)


def test_cache_is_used():
    x, w, b, _ = arrays()
    y = filled((6, 3))
    lingrad.linear(x, w, b, out=y)
    with mock.patch.object(api, "_linear_checked", side_effect=AssertionError("checked again")):
        lingrad.linear(x, w, b, out=y)
        lingrad.linear(x.copy(), w.copy(), b.copy(), out=filled((6, 3)))  # new arrays, same key


def test_same_shapes_then_a_bad_dtype():
    x, w, b, _ = arrays()
    y = filled((6, 3))
    warm(lambda: lingrad.linear(x, w, b, out=y))
    y32 = filled((6, 3), np.float32)
    with pytest.raises(TypeError, match="y has dtype float32"):
        lingrad.linear(x, w, b, out=y32)
    with pytest.raises(TypeError, match="x float32, w float64"):
        lingrad.linear(x.astype(np.float32), w, b, out=y)
    with pytest.raises(TypeError, match="b float32"):
        lingrad.linear(x, w, b.astype(np.float32), out=y)
    with pytest.raises(TypeError, match="x has dtype int64"):
        lingrad.linear(x.astype(np.int64), w, b, out=y)
    with pytest.raises(TypeError, match=r"x has dtype >f8"):
        lingrad.linear(x.astype(">f8"), w.astype(">f8"), b.astype(">f8"), out=y)
    untouched(y32)


def test_same_shapes_then_a_wrong_shape():
    x, w, b, dy = arrays()
    y = filled((6, 3))
    warm(lambda: lingrad.linear(x, w, b, out=y))
    y[...] = SENTINEL
    with pytest.raises(ValueError, match=r"y has shape \(3, 6\)"):
        lingrad.linear(x, w, b, out=filled((3, 6)))
    with pytest.raises(ValueError, match=r"x.shape\[-1\] \(3\) must equal w.shape\[0\] \(4\)"):
        lingrad.linear(x[:, :3], w, b, out=y)
    with pytest.raises(ValueError, match=r"b.shape\[0\] \(2\)"):
        lingrad.linear(x, w, b[:2], out=y)
    untouched(y)
    dx, dw, db = filled((6, 4)), filled((4, 3)), filled(3)
    warm(lambda: lingrad.linear_backward(x, w, dy, out=(dx, dw, db)))
    for a in (dx, dw, db):
        a[...] = SENTINEL
    with pytest.raises(ValueError, match=r"db has shape \(4,\)"):
        lingrad.linear_backward(x, w, dy, out=(dx, dw, filled(4)))
    with pytest.raises(ValueError, match=r"x has shape \(5, 4\)"):
        lingrad.linear_backward(x[:5], w, dy, out=(dx, dw, db))
    untouched(dx, dw, db)


def test_shape_changed_in_place_is_a_new_key():
    x, w, b, _ = arrays()
    y = filled((6, 3))
    warm(lambda: lingrad.linear(x, w, b, out=y))
    x2 = x.copy()
    x2.shape = (4, 6)  # the same object the key was made from would now be wrong
    with pytest.raises(ValueError, match=r"x.shape\[-1\] \(6\) must equal w.shape\[0\] \(4\)"):
        lingrad.linear(x2, w, b, out=y)
    y2 = y.copy()
    y2.shape = (3, 6)
    with pytest.raises(ValueError, match=r"y has shape \(3, 6\)"):
        lingrad.linear(x, w, b, out=y2)


def test_same_key_then_an_overlapping_out():
    base = filled((7, 3))
    x, w = base[:6], np.eye(3)
    y = filled((6, 3))
    warm(lambda: lingrad.linear(x, w, out=y))
    # same shape, strides and dtype as the cached out=, but inside x's memory
    base[...] = SENTINEL
    with pytest.raises(ValueError, match="y overlaps x"):
        lingrad.linear(x, w, out=base[1:])
    with pytest.raises(ValueError, match="y overlaps x"):
        lingrad.linear(x, w, out=x)
    untouched(base)
    # dx out that is dy; db out inside dy; dw out inside dx's out
    _, w, _, dy = arrays()
    sq = np.ones((4, 4))
    d = filled((6, 4))
    dx = filled((6, 4))
    warm(lambda: lingrad.input_grad(d, sq, out=dx))
    with pytest.raises(ValueError, match="dx overlaps dy"):
        lingrad.input_grad(d, sq, out=d)
    untouched(d)
    db = filled(3)
    warm(lambda: lingrad.bias_grad(dy, out=db))
    with pytest.raises(ValueError, match="db overlaps dy"):
        lingrad.bias_grad(dy, out=dy[0])
    x, w, _, dy = arrays()
    dx, dw, db = filled((6, 4)), filled((4, 3)), filled(3)
    warm(lambda: lingrad.linear_backward(x, w, dy, out=(dx, dw, db)))
    for a in (dx, dw, db):
        a[...] = SENTINEL
    buf = filled(40)
    with pytest.raises(ValueError, match="dw overlaps dx out"):
        lingrad.linear_backward(x, w, dy, out=(buf[:24].reshape(6, 4), buf[12:24].reshape(4, 3), db))
    with pytest.raises(ValueError, match="db overlaps dw out"):
        lingrad.linear_backward(x, w, dy, out=(dx, buf[:12].reshape(4, 3), buf[10:13]))
    with pytest.raises(ValueError, match="dw overlaps w"):
        lingrad.linear_backward(x, w, dy, out=(dx, w, db))
    untouched(dx, dw, db, buf)


def test_same_key_then_a_read_only_out():
    x, w, b, dy = arrays()
    y = filled((6, 3))
    warm(lambda: lingrad.linear(x, w, b, out=y))
    ro = filled((6, 3))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="y is read-only"):
        lingrad.linear(x, w, b, out=ro)
    db = filled(3)
    warm(lambda: lingrad.bias_grad(dy, out=db, accumulate=True))
    ro_db = filled(3)
    ro_db.flags.writeable = False
    with pytest.raises(ValueError, match="db is read-only"):
        lingrad.bias_grad(dy, out=ro_db, accumulate=True)
    dx, dw = filled((6, 4)), filled((4, 3))
    warm(lambda: lingrad.linear_backward(x, w, dy, out=(dx, dw, db)))
    for a in (dx, dw, db):
        a[...] = SENTINEL
    ro_dw = filled((4, 3))
    ro_dw.flags.writeable = False
    with pytest.raises(ValueError, match="dw is read-only"):
        lingrad.linear_backward(x, w, dy, out=(dx, ro_dw, db))
    untouched(ro, ro_db, ro_dw, dx, dw, db)


def test_accumulate_without_out_after_a_cached_accumulate():
    x, _, _, dy = arrays()
    dw = np.zeros((4, 3))
    warm(lambda: lingrad.weight_grad(x, dy, out=dw, accumulate=True))
    np.testing.assert_allclose(dw, 4 * x.T @ dy)  # warm: 3 calls and one more
    with pytest.raises(ValueError, match="accumulate=True needs an existing dw buffer"):
        lingrad.weight_grad(x, dy, accumulate=True)


def test_skipped_gradient_returns_none_from_the_cache():
    x, w, _, dy = arrays()
    dx, dw, db = filled((6, 4)), filled((4, 3)), filled(3)
    for _ in range(3):
        g = lingrad.linear_backward(x, w, dy, need_dx=False, out=(dx, dw, db))
        assert g.dx is None and g.dw is dw and g.db is db
        g = lingrad.linear_backward(x, w, dy, need_db=False, out=(dx, dw, db))
        assert g.db is None and g.dx is dx


def test_unhashable_flag_and_lists_still_work():
    x, w, b, _ = arrays()
    want = np.maximum(x @ w + b, 0)
    for _ in range(2):
        np.testing.assert_allclose(lingrad.linear(x, w, b, relu=[1]), want)
        np.testing.assert_allclose(lingrad.linear(x.tolist(), w, b, relu=True), want)
        np.testing.assert_allclose(lingrad.linear(x, w, b, out=np.zeros((3, 6)).T), x @ w + b)


def test_uncached_layouts_stay_correct():
    x, w, b, dy = arrays(7, 5, 4)
    xs = np.zeros((7, 10))
    xs[:, ::2] = x
    xs = xs[:, ::2]
    for _ in range(3):
        np.testing.assert_allclose(lingrad.linear(xs, w[::-1][::-1], b), x @ w + b)
        g = lingrad.linear_backward(xs, w, dy)
        np.testing.assert_allclose(g.dw, x.T @ dy)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 or more Numba threads")
def test_plans_follow_the_thread_count():
    x, w, b, dy = arrays(600, 64, 48)  # above SERIAL_WORK: the plan depends on the threads
    made = []
    real = P.gemm.__wrapped__

    def rec(*args):
        made.append(real(*args))
        return made[-1]

    with mock.patch.object(P, "gemm", side_effect=rec):
        for n in (1, 2, 1, 2):
            with lingrad.num_threads(n):
                lingrad.linear(x, w, b)
    assert [p.threads for p in made] == [1, 2]  # one plan per count, then both cached


def test_thread_count_read_as_numba_reads_it():
    """api._threads_in_force (Numba's C getter, once the pool is up) answers as
    numba.get_num_threads does: per setting, and per Python thread (a new thread starts
    from Numba's default, whatever the caller set)."""
    import threading
    seen = []
    for n in sorted({1, numba.config.NUMBA_NUM_THREADS}):
        with lingrad.num_threads(n):
            seen.append((api._threads_in_force(), numba.get_num_threads(), n))
            t = threading.Thread(target=lambda: seen.append(
                (api._threads_in_force(), numba.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
            t.start()
            t.join()
    assert len(seen) >= 2 and all(a == b == n for a, b, n in seen), seen


def test_cache_is_bounded():
    api.clear_cache()
    with mock.patch.object(api, "_CACHE_MAX", 5):
        for n in range(1, 12):
            lingrad.bias_grad(np.ones((n, 2)))
        assert len(api._CACHE) <= 5
