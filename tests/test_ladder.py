"""Every rung of the optimisation ladder (lingrad.kernels.ladder) equals numpy.

Shapes are odd on purpose: no size is a multiple of the 4x4 register block, of
the micro-kernel's MR x NR tile or of the cache blocks, and the block sizes
themselves are odd too, so every edge loop runs (SHAPES' 50 and 33 cross one
NR panel for float32 and float64). The oracle is numpy in float64 on the same inputs; the bound is the
rounding bound of conftest.assert_close. Outputs are pre-filled with NaN to
prove each rung overwrites its output and never reads it.
"""
import numpy as np
import pytest
from conftest import DTYPES, assert_close

from lingrad.kernels import ladder as L

# (N, I, O): N = 1 and tiny sizes, sizes one off the 4x4 block, N past several blocks.
SHAPES = [(1, 1, 1), (1, 7, 3), (2, 3, 5), (5, 4, 4), (9, 13, 6), (37, 19, 11), (130, 33, 50)]
# (mc, kc, wide): rows of C per block and values of the summed axis per block (rungs 4-8 of dw
# step over the batch in kc rows), odd and tiny ones, one under the micro-kernel's MR, included;
# and the register block, MR x NV or the wide MR_WIDE x NV_WIDE (rungs 4-8).
BLOCKS = [(1, 1, False), (5, 3, True), (7, 6, False), (13, 64, True), (96, 256, False), (96, 256, True)]


def data(rng, N, I, O, dtype):
    f = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    return f(N, I), f(I, O), f(O), f(N, O)


def nan(shape, dtype):
    return np.full(shape, np.nan, dtype)


def f64(*arrays):
    return [a.astype(np.float64) for a in arrays]


def serial_dw(mc, kc, wide):
    return [L.dw_naive, L.dw_rows, L.dw_register, lambda x, dy, dw: L.dw_micro(x, dy, dw, kc, wide),
            lambda x, dy, dw: L.dw_packed(x, dy, dw, kc, wide),
            lambda x, dy, dw: L.dw_blocked(x, dy, dw, mc, kc, wide)]


def serial_y(mc, kc, wide):
    return [L.y_naive, L.y_rows, L.y_register, lambda x, w, y: L.y_micro(x, w, y, wide),
            lambda x, w, y: L.y_packed(x, w, y, wide), lambda x, w, y: L.y_blocked(x, w, y, mc, kc, wide)]


def serial_dx(mc, kc, wide):
    return [L.dx_naive, L.dx_rows, L.dx_register, lambda dy, w, dx: L.dx_micro(dy, w, dx, wide),
            lambda dy, w, dx: L.dx_packed(dy, w, dx, wide),
            lambda dy, w, dx: L.dx_blocked(dy, w, dx, mc, kc, wide)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("blocks", BLOCKS, ids=str)
def test_weight_grad_rungs(rng, threads, dtype, shape, blocks):
    N, I, O = shape
    mc, kc, wide = blocks
    x, _, _, dy = data(rng, N, I, O, dtype)
    X, DY = f64(x, dy)
    want, scale = X.T @ DY, np.abs(X).T @ np.abs(DY)
    rungs = serial_dw(mc, kc, wide) + [lambda x, dy, dw: L.dw_parallel(x, dy, dw, mc, kc, threads, wide)]
    for rung in rungs:
        dw = nan((I, O), dtype)
        rung(x, dy, dw)
        assert_close(dw, want, scale, N, dtype)
    dw, db = nan((I, O), dtype), nan(O, dtype)
    L.dw_db_fused(x, dy, dw, db, mc, kc, threads, wide)
    assert_close(dw, want, scale, N, dtype)
    assert_close(db, DY.sum(0), np.abs(DY).sum(0), N, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("blocks", BLOCKS, ids=str)
def test_forward_rungs(rng, threads, dtype, shape, blocks):
    N, I, O = shape
    mc, kc, wide = blocks
    x, w, b, _ = data(rng, N, I, O, dtype)
    X, W, B = f64(x, w, b)
    want, scale = X @ W, np.abs(X) @ np.abs(W)
    rungs = serial_y(mc, kc, wide) + [lambda x, w, y: L.y_parallel(x, w, y, mc, kc, threads, wide)]
    for rung in rungs:
        y = nan((N, O), dtype)
        rung(x, w, y)
        assert_close(y, want, scale, I, dtype)
    y = nan((N, O), dtype)
    L.y_fused(x, w, b, y, mc, kc, threads, wide)
    assert_close(y, np.maximum(want + B, 0), scale + np.abs(B), I, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("blocks", BLOCKS, ids=str)
def test_input_grad_rungs(rng, threads, dtype, shape, blocks):
    N, I, O = shape
    mc, kc, wide = blocks
    _, w, _, dy = data(rng, N, I, O, dtype)
    DY, W = f64(dy, w)
    want, scale = DY @ W.T, np.abs(DY) @ np.abs(W).T
    rungs = serial_dx(mc, kc, wide) + [lambda dy, w, dx: L.dx_parallel(dy, w, dx, mc, kc, threads, wide)]
    for rung in rungs:
        dx = nan((N, I), dtype)
        rung(dy, w, dx)
        assert_close(dx, want, scale, O, dtype)
    y = rng.standard_normal((N, O)).astype(dtype)  # a ReLU output's sign pattern, zeros included
    y[y < 0] = 0
    DM = np.where(y > 0, DY, 0)
    dx = nan((N, I), dtype)
    L.dx_fused(dy, w, y, dx, mc, kc, threads, wide)
    assert_close(dx, DM @ W.T, np.abs(DM) @ np.abs(W).T, O, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N", [0, 1, 3, 50])
def test_unfused_second_passes(rng, threads, dtype, N):
    """db_parallel, bias_relu and relu_mask: the passes rung 8 fuses away, timed by the CLI as '7+'."""
    x, w, b, dy = data(rng, N, 6, 7, dtype)
    db = nan(7, dtype)
    L.db_parallel(dy, db, threads)
    assert_close(db, dy.astype(np.float64).sum(0), np.abs(dy.astype(np.float64)).sum(0), N, dtype)
    y = x @ w
    d = nan((N, 7), dtype)
    L.relu_mask(dy, y, d)
    np.testing.assert_array_equal(d, np.where(y > 0, dy, 0))
    want = np.maximum(y.astype(np.float64) + b, 0)
    L.bias_relu(y, b)
    assert_close(y, want, np.abs(y).astype(np.float64) + np.abs(b), 1, dtype)


def test_relu_epilogue_propagates_nan_and_zeroes_negatives():
    """As np.maximum(v, 0): NaN stays NaN, negatives become 0, positives pass."""
    x = np.array([[1.0], [-1.0], [np.nan]])
    w = np.array([[2.0, -3.0]])
    b = np.array([0.5, 0.0])
    y = nan((3, 2), np.float64)
    L.y_fused(x, w, b, y, 2, 1, 1, False)
    np.testing.assert_array_equal(y, np.maximum(x @ w + b, 0))
    assert np.isnan(y[2]).all() and y[0, 1] == 0 and y[1, 0] == 0


def test_empty_batch_gives_zero_gradients(threads):
    """N = 0: dw and db are sums over no rows, so exactly zero (and written, not left as NaN)."""
    x, dy = np.zeros((0, 5)), np.zeros((0, 3))
    for rung in serial_dw(4, 4, False) + [lambda x, dy, dw: L.dw_parallel(x, dy, dw, 4, 4, threads, False)]:
        dw = nan((5, 3), np.float64)
        rung(x, dy, dw)
        np.testing.assert_array_equal(dw, 0)
    dw, db = nan((5, 3), np.float64), nan(3, np.float64)
    L.dw_db_fused(x, dy, dw, db, 4, 4, threads, False)
    np.testing.assert_array_equal(dw, 0)
    np.testing.assert_array_equal(db, 0)


def test_empty_sum_gives_zero_outputs(threads):
    """I = 0 (forward) and O = 0 (dx): sums over nothing, so y = b after the ReLU and dx = 0."""
    x, w, b = np.zeros((5, 0)), np.zeros((0, 3)), np.array([1.0, -1.0, 2.0])
    for rung in serial_y(4, 4, False) + [lambda x, w, y: L.y_parallel(x, w, y, 4, 4, threads, False)]:
        y = nan((5, 3), np.float64)
        rung(x, w, y)
        np.testing.assert_array_equal(y, 0)
    y = nan((5, 3), np.float64)
    L.y_fused(x, w, b, y, 4, 4, threads, False)
    np.testing.assert_array_equal(y, np.maximum(np.zeros((5, 3)) + b, 0))
    dy, w = np.zeros((5, 0)), np.zeros((4, 0))
    for rung in serial_dx(4, 4, False) + [lambda dy, w, dx: L.dx_parallel(dy, w, dx, 4, 4, threads, False)]:
        dx = nan((5, 4), np.float64)
        rung(dy, w, dx)
        np.testing.assert_array_equal(dx, 0)


def test_cli_checks_every_rung_and_prints_the_table(capsys):
    """python -m lingrad ladder on a small batch: every rung passes its numpy check, all rows printed."""
    from lingrad import ladder

    assert ladder.main(["--n", "150", "--i", "21", "--o", "9", "--repeats", "1", "--naive-n", "40",
                        "--no-showcase"]) == 0
    out = capsys.readouterr().out
    assert "every result checked against numpy float64: ok" in out
    for op in ["dw", "y", "dx"]:
        for rung in ["naive", "rows", "register", "micro", "packed", "blocked", "parallel"]:
            assert f"{op}_{rung}" in out, f"{op}_{rung}"
    for name in ["dw_db_fused", "y_fused", "dx_fused", "lingrad.weight_grad", "lingrad.linear",
                 "lingrad.input_grad", "numpy: x.T @ dy", "numpy: x @ w", "numpy: dy @ w.T"]:
        assert name in out, name
    assert out.count("the speed of lingrad.") == 3
    assert "timed on the first 40 rows" in out


def test_showcase_checks_and_times_each_step_on_its_own_shape(capsys):
    """The ladder's steps that tie on the lesson's shape, timed on shapes of their own: both
    rungs of each step pass their numpy check there, and one line per step is printed."""
    from lingrad import ladder

    assert set(ladder.SHOWCASE) == {"dw", "forward", "dx"}
    labels = ["1", "2", "3", "4", "5", "6", "7", "7+", "8"]
    for steps in ladder.SHOWCASE.values():
        for before, after, shape, why in steps:
            assert labels.index(before) < labels.index(after) and len(shape) == 3 and why
    steps = (("4", "5", (70, 33, 45), "small"), ("7+", "8", (50, 9, 40), "small"))
    for product in ladder.SHOWCASE:
        assert ladder.showcase(product, steps, np.float32, 2, 1)
    out = capsys.readouterr().out
    assert out.count("rung 4 -> 5 on 70x33->45: ") == 3
    assert out.count("rung 7+ -> 8 on 50x9->40: ") == 3
    assert "MISMATCH" not in out
