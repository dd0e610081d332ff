"""Every rung of the optimisation ladder (lingrad.kernels.ladder) equals numpy.

Shapes are odd on purpose: no size is a multiple of the 4x4 register block or
of the cache blocks, and the block sizes themselves are odd too, so every edge
loop runs. The oracle is numpy in float64 on the same inputs; the bound is the
rounding bound of conftest.assert_close. Outputs are pre-filled with NaN to
prove each rung overwrites its output and never reads it.
"""
import numpy as np
import pytest
from conftest import DTYPES, assert_close

from lingrad.kernels import ladder as L

# (N, I, O): N = 1 and tiny sizes, sizes one off the 4x4 block, N past several blocks.
SHAPES = [(1, 1, 1), (1, 7, 3), (2, 3, 5), (5, 4, 4), (9, 13, 6), (37, 19, 11), (130, 33, 50)]
# (nb, kb): rows of the batch per block, slice of i per block; odd and tiny ones included.
BLOCKS = [(1, 1), (5, 3), (7, 6), (64, 64)]


def data(rng, N, I, O, dtype):
    f = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    return f(N, I), f(I, O), f(O), f(N, O)


def nan(shape, dtype):
    return np.full(shape, np.nan, dtype)


def f64(*arrays):
    return [a.astype(np.float64) for a in arrays]


def serial_dw(nb):
    return [L.dw_naive, L.dw_rows, L.dw_register, lambda x, dy, dw: L.dw_cache(x, dy, dw, nb)]


def serial_y(nb, kb):
    return [L.y_naive, L.y_rows, L.y_register, lambda x, w, y: L.y_cache(x, w, y, nb, kb)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("blocks", BLOCKS, ids=str)
def test_weight_grad_rungs(rng, threads, dtype, shape, blocks):
    N, I, O = shape
    nb, _ = blocks
    x, _, _, dy = data(rng, N, I, O, dtype)
    X, DY = f64(x, dy)
    want, scale = X.T @ DY, np.abs(X).T @ np.abs(DY)
    rungs = serial_dw(nb) + [lambda x, dy, dw: L.dw_parallel(x, dy, dw, nb, threads)]
    for rung in rungs:
        dw = nan((I, O), dtype)
        rung(x, dy, dw)
        assert_close(dw, want, scale, N, dtype)
    dw, db = nan((I, O), dtype), nan(O, dtype)
    L.dw_db_fused(x, dy, dw, db, nb, threads)
    assert_close(dw, want, scale, N, dtype)
    assert_close(db, DY.sum(0), np.abs(DY).sum(0), N, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("blocks", BLOCKS, ids=str)
def test_forward_rungs(rng, threads, dtype, shape, blocks):
    N, I, O = shape
    nb, kb = blocks
    x, w, b, _ = data(rng, N, I, O, dtype)
    X, W, B = f64(x, w, b)
    want, scale = X @ W, np.abs(X) @ np.abs(W)
    rungs = serial_y(nb, kb) + [lambda x, w, y: L.y_parallel(x, w, y, nb, kb)]
    for rung in rungs:
        y = nan((N, O), dtype)
        rung(x, w, y)
        assert_close(y, want, scale, I, dtype)
    y = nan((N, O), dtype)
    L.y_fused(x, w, b, y, nb, kb)
    assert_close(y, np.maximum(want + B, 0), scale + np.abs(B), I, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N", [0, 1, 3, 50])
def test_unfused_second_passes(rng, threads, dtype, N):
    """db_parallel and bias_relu: the passes rung 6 fuses away, timed by the CLI as '5+'."""
    x, w, b, dy = data(rng, N, 6, 7, dtype)
    db = nan(7, dtype)
    L.db_parallel(dy, db, threads)
    assert_close(db, dy.astype(np.float64).sum(0), np.abs(dy.astype(np.float64)).sum(0), N, dtype)
    y = x @ w
    want = np.maximum(y.astype(np.float64) + b, 0)
    L.bias_relu(y, b)
    assert_close(y, want, np.abs(y).astype(np.float64) + np.abs(b), 1, dtype)


def test_relu_epilogue_propagates_nan_and_zeroes_negatives():
    """As np.maximum(v, 0): NaN stays NaN, negatives become 0, positives pass."""
    x = np.array([[1.0], [-1.0], [np.nan]])
    w = np.array([[2.0, -3.0]])
    b = np.array([0.5, 0.0])
    y = nan((3, 2), np.float64)
    L.y_fused(x, w, b, y, 2, 1)
    np.testing.assert_array_equal(y, np.maximum(x @ w + b, 0))
    assert np.isnan(y[2]).all() and y[0, 1] == 0 and y[1, 0] == 0


def test_empty_batch_gives_zero_gradients(threads):
    """N = 0: dw and db are sums over no rows, so exactly zero (and written, not left as NaN)."""
    x, dy = np.zeros((0, 5)), np.zeros((0, 3))
    for rung in serial_dw(4) + [lambda x, dy, dw: L.dw_parallel(x, dy, dw, 4, threads)]:
        dw = nan((5, 3), np.float64)
        rung(x, dy, dw)
        np.testing.assert_array_equal(dw, 0)
    dw, db = nan((5, 3), np.float64), nan(3, np.float64)
    L.dw_db_fused(x, dy, dw, db, 4, threads)
    np.testing.assert_array_equal(dw, 0)
    np.testing.assert_array_equal(db, 0)


def test_cli_checks_every_rung_and_prints_the_table(capsys):
    """python -m lingrad ladder on a small batch: every rung passes its numpy check, all rows printed."""
    from lingrad import ladder

    assert ladder.main(["--n", "150", "--i", "21", "--o", "9", "--repeats", "1", "--naive-n", "40"]) == 0
    out = capsys.readouterr().out
    assert "every result checked against numpy float64: ok" in out
    for name in ["dw_naive", "dw_rows", "dw_register", "dw_cache", "dw_parallel", "dw_db_fused",
                 "y_naive", "y_rows", "y_register", "y_cache", "y_parallel", "y_fused",
                 "lingrad.weight_grad", "lingrad.linear", "numpy: x.T @ dy", "numpy: x @ w"]:
        assert name in out, name
    assert "timed on the first 40 rows" in out
