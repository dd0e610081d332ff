"""lingrad.stream.full_batch_grad: memmapped .npy files read in chunks give the in-memory
gradients (numpy float64 oracle), with numpy's allocations bounded by the chunk budget."""
import sys
import tracemalloc

import numpy as np
import pytest

from lingrad import stream
from conftest import DTYPES, assert_close


def save(tmp_path, name, a):
    path = tmp_path / f"{name}.npy"
    np.save(path, a)
    return path


def regression_data(rng, N, I, O, dtype, loss):
    x = rng.standard_normal((N, I)).astype(dtype)
    w = (rng.standard_normal((I, O)) / np.sqrt(I)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    if loss == "mse":
        t = rng.standard_normal((N, O)).astype(dtype)
    else:  # 0/1 labels stored as integers: cast to dtype one chunk at a time
        t = (rng.random((N, O)) < 0.5).astype(np.int8)
    return x, t, w, b


def reference_linear(x, t, w, b, loss):
    """numpy float64: loss, dL/dy, dw, db of y = x @ w + b over the whole batch."""
    x, t, w, b = (a.astype(np.float64) for a in (x, t, w, b))
    y = x @ w + b
    if loss == "mse":
        L, dy = np.mean((y - t) ** 2), 2 * (y - t) / y.size
    else:
        L, dy = np.mean(np.logaddexp(0, y) - t * y), (1 / (1 + np.exp(-y)) - t) / y.size
    return L, dy, x.T @ dy, dy.sum(0)


@pytest.mark.parametrize("loss", ["mse", "logistic"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_regression_matches_in_memory(tmp_path, rng, threads, dtype, loss):
    N, I, O, rows = 5003, 37, 3, 600  # 9 chunks, the last one partial
    x, t, w, b = regression_data(rng, N, I, O, dtype, loss)
    xm = np.load(save(tmp_path, "x", x), mmap_mode="r")
    L, grads = stream.full_batch_grad(xm, save(tmp_path, "t", t), [(w, b)], loss=loss,
                                      chunk_rows=rows)
    (dw, db), = grads
    L_ref, dy, dw_ref, db_ref = reference_linear(x, t, w, b, loss)
    # dy carries the rounding of y = x @ w + b (I terms) and of the loss derivative,
    # both at most ~1/N each; the chunks add N/rows more roundings into dw and db.
    ax = np.abs(x.astype(np.float64))
    dy_err = (1 + 2 * (ax @ np.abs(w) + np.abs(b))) / N
    k = I + N // rows + 8
    assert_close(dw, dw_ref, ax.T @ (np.abs(dy) + dy_err), k, dtype)
    assert_close(db, db_ref, (np.abs(dy) + dy_err).sum(0), k, dtype)
    assert L == pytest.approx(L_ref, rel=1e-5 if dtype == np.float32 else 1e-12)


def test_one_dimensional_targets_are_one_output(tmp_path, rng):
    x, t, w, b = regression_data(rng, 300, 5, 1, np.float64, "mse")
    L, [(dw, db)] = stream.full_batch_grad(x, t[:, 0], [(w, b)], chunk_rows=64)
    L_ref, _, dw_ref, db_ref = reference_linear(x, t, w, b, "mse")
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(db, db_ref, rtol=1e-12, atol=1e-15)


def mlp_data(rng, N, I, H, dtype):
    x = rng.standard_normal((N, I)).astype(dtype)
    w1 = (rng.standard_normal((I, H)) * np.sqrt(2 / I)).astype(dtype)
    b1 = (0.1 * rng.standard_normal(H)).astype(dtype)
    w2 = (rng.standard_normal((H, 1)) * np.sqrt(1 / H)).astype(dtype)
    b2 = np.zeros(1, dtype)
    t = rng.standard_normal(N).astype(dtype)
    return x, t, [(w1, b1), (w2, b2)]


def reference_mlp(x, t, w1, b1, w2, b2):
    """The lesson's MLP in numpy: lin1 -> relu -> lin2 -> mse, and its gradients."""
    h = np.maximum(x @ w1 + b1, 0)
    y = (h @ w2 + b2)[:, 0]
    dy = (2 * (y - t) / t.shape[0])[:, None]
    dh = (dy @ w2.T) * (h > 0)
    return np.mean((y - t) ** 2), [(x.T @ dh, dh.sum(0)), (h.T @ dy, dy.sum(0))]


def test_lesson_mlp_matches_in_memory(tmp_path, rng, threads):
    # float64: a ReLU whose input rounds to the other side of 0 would need |h| ~ 1e-16
    x, t, layers = mlp_data(rng, 4099, 784 // 8, 50, np.float64)
    xm = np.load(save(tmp_path, "x", x), mmap_mode="r")
    tm = np.load(save(tmp_path, "t", t), mmap_mode="r")
    L, grads = stream.full_batch_grad(xm, tm, layers, chunk_rows=512)
    L_ref, grads_ref = reference_mlp(x, t, *layers[0], *layers[1])
    assert L == pytest.approx(L_ref, rel=1e-12)
    for (dw, db), (dw_ref, db_ref), (w, b) in zip(grads, grads_ref, layers):
        assert dw.shape == w.shape and db.shape == b.shape and dw.dtype == np.float64
        for got, ref in ((dw, dw_ref), (db, db_ref)):
            assert np.abs(got - ref).max() <= 1e-11 * np.abs(ref).max()


def test_chunk_size_does_not_change_the_result(rng):
    x, t, layers = mlp_data(rng, 1000, 20, 8, np.float64)
    one = stream.full_batch_grad(x, t, layers, chunk_rows=1000)
    many = stream.full_batch_grad(x, t, layers, chunk_rows=7)
    assert many.loss == pytest.approx(one.loss, rel=1e-12)
    for (dw1, db1), (dw7, db7) in zip(one.grads, many.grads):
        np.testing.assert_allclose(dw7, dw1, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(db7, db1, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("x_dtype", [np.float64, np.float32])
def test_memory_is_bounded_by_the_chunk_budget(tmp_path, rng, x_dtype):
    """A dataset 16x (float32 x) to 32x (float64 x) the chunk budget: numpy's peak allocation
    stays near the budget. With float32 x and float64 layers, each chunk of x is cast (a
    numpy allocation); with float64 x the chunk is read straight from the memmap."""
    N, I, budget = 32768, 128, 1 << 20
    path = tmp_path / "x.npy"
    xm = np.lib.format.open_memmap(path, mode="w+", dtype=x_dtype, shape=(N, I))
    for lo in range(0, N, 4096):  # written in pieces: the test never holds x in memory
        xm[lo:lo + 4096] = rng.standard_normal((4096, I))
    xm.flush()
    del xm
    t = np.lib.format.open_memmap(tmp_path / "t.npy", mode="w+", dtype=np.float64, shape=(N,))
    t[:] = 1.0
    t.flush()
    del t
    w, b = np.full((I, 1), 0.01), np.zeros(1)
    x = np.load(path, mmap_mode="r")
    data_bytes = x.nbytes
    assert data_bytes >= 16 * budget
    # JIT warm-up on as many rows as a chunk, so that the measured run compiles nothing
    stream.full_batch_grad(x[:4096], np.ones(4096), [(w, b)], max_bytes=budget)
    tracemalloc.start()
    try:
        L, [(dw, db)] = stream.full_batch_grad(path, tmp_path / "t.npy", [(w, b)], max_bytes=budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= budget, f"peak numpy allocation {peak} B, budget {budget} B"
    # and the answer is still right: dw = x.T @ 2 (x @ w - 1) / N, done here in pieces
    dw_ref = np.zeros((I, 1))
    for lo in range(0, N, 4096):
        xc = x[lo:lo + 4096].astype(np.float64)
        dw_ref += xc.T @ (2 * (xc @ w - 1) / N)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-9, atol=1e-12)


def test_progress_fallback_line(monkeypatch, capsys, rng):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if tqdm were not installed
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    monkeypatch.setattr(stream, "PROGRESS_DELAY", 0.0)
    x, t, w, b = regression_data(rng, 100, 3, 1, np.float64, "mse")
    stream.full_batch_grad(x, t, [(w, b)], chunk_rows=10, progress=True)
    err = capsys.readouterr().err
    assert "100/100 rows (100%)" in err


def test_progress_tqdm(monkeypatch, capsys, rng):
    pytest.importorskip("tqdm")
    monkeypatch.setattr(stream, "PROGRESS_DELAY", 0.0)
    x, t, w, b = regression_data(rng, 100, 3, 1, np.float64, "mse")
    stream.full_batch_grad(x, t, [(w, b)], chunk_rows=10, progress=True)
    assert "100/100" in capsys.readouterr().err


def test_progress_off_when_stderr_is_not_a_terminal(monkeypatch, capsys, rng):
    monkeypatch.setattr(stream, "PROGRESS_DELAY", 0.0)
    x, t, w, b = regression_data(rng, 100, 3, 1, np.float64, "mse")
    stream.full_batch_grad(x, t, [(w, b)], chunk_rows=10)  # progress=None: captured stderr is no tty
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("bad, error, match", [
    (dict(loss="hinge"), ValueError, "loss must be one of"),
    (dict(chunk_rows=0), ValueError, "chunk_rows must be a positive int"),
    (dict(t=np.zeros(10)), ValueError, r"t has shape \(10,\), expected \(20, 2\)"),
    (dict(layers=[(np.zeros((4, 2)), np.zeros(2))]), ValueError, r"w_1 has shape \(4, 2\)"),
    (dict(layers=[(np.zeros((3, 2)), np.zeros(3))]), ValueError, r"b_1 has shape \(3,\)"),
    (dict(layers=[(np.zeros((3, 2)), np.zeros(2, np.float32))]), TypeError, "b_1 has dtype"),
    (dict(layers=[(np.zeros((3, 2), np.int64), None)]), TypeError, "float32 or float64"),
    (dict(layers=[(np.zeros((3, 4)), None), (np.zeros((5, 2)), None)]), ValueError,
     r"w_2 has shape \(5, 2\), expected \(4, O_2\)"),
    (dict(x=np.zeros((0, 3)), t=np.zeros((0, 2))), ValueError, "no rows"),
    (dict(x=[[1.0]]), TypeError, "array or the path"),
])
def test_bad_input(bad, error, match):
    args = dict(x=np.zeros((20, 3)), t=np.zeros((20, 2)), layers=[(np.zeros((3, 2)), np.zeros(2))])
    args.update(bad)
    x, t, layers = args.pop("x"), args.pop("t"), args.pop("layers")
    with pytest.raises(error, match=match):
        stream.full_batch_grad(x, t, layers, **args)


def test_no_bias(rng):
    x, t, w, b = regression_data(rng, 200, 4, 2, np.float64, "mse")
    L, [(dw, db)] = stream.full_batch_grad(x, t, [(w, None)], chunk_rows=33)
    _, dy, dw_ref, _ = reference_linear(x, t, w, np.zeros(2), "mse")
    assert db is None
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-12, atol=1e-15)
