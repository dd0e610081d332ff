"""lingrad.dask: dask arrays chunked along the batch, on a LocalCluster of 2 worker processes,
give the in-memory results (numpy float64 oracle); dw and db are summed in a tree."""
import subprocess
import sys
from functools import lru_cache

import numpy as np
import pytest

from conftest import DTYPES, assert_close

N, I, O, ROWS = 1000, 24, 5, 125  # 8 chunks: a tree of depth 3 at split_every=2


@pytest.fixture(scope="module")
def da():
    return pytest.importorskip("dask.array")


@pytest.fixture(scope="module")
def client(da):
    distributed = pytest.importorskip("distributed")
    import lingrad.dask as ld
    # compile (or load) the kernels here first: the workers then load them from the on-disk cache
    for dtype in DTYPES:
        x, w, b, dy = data(np.random.default_rng(0), dtype)
        X, DY = da.from_array(x, chunks=(ROWS, -1)), da.from_array(dy, chunks=(ROWS, -1))
        y = ld.linear(X, w, b, relu=True)
        for masked in (None, y):
            import dask
            dask.compute(y, *ld.linear_backward(X, w, DY, relu_out=masked), scheduler="sync")
    # one Numba thread per worker: 2 single-threaded processes on this 2-core machine
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, env={"NUMBA_NUM_THREADS": "1"}) as cluster, \
            distributed.Client(cluster) as c:
        import lingrad
        assert set(c.run(lingrad.get_num_threads).values()) == {1}
        yield c
    assert cluster.status.name == "closed"


def data(rng, dtype):
    x = rng.standard_normal((N, I)).astype(dtype)
    w = (rng.standard_normal((I, O)) / np.sqrt(I)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    dy = rng.standard_normal((N, O)).astype(dtype)
    return x, w, b, dy


def f64(*arrays):
    return [a.astype(np.float64) for a in arrays]


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_on_cluster(client, da, rng, dtype, relu):
    import lingrad.dask as ld
    x, w, b, _ = data(rng, dtype)
    y = ld.linear(da.from_array(x, chunks=(ROWS, -1)), w, b, relu=relu)
    assert y.chunks == ((ROWS,) * (N // ROWS), (O,))
    got = y.compute()
    x64, w64, b64 = f64(x, w, b)
    ref = x64 @ w64 + b64
    ref = np.maximum(ref, 0) if relu else ref
    assert_close(got, ref, np.abs(x64) @ np.abs(w64) + np.abs(b64), I + 1, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_backward_on_cluster(client, da, rng, dtype):
    import dask
    import distributed
    import lingrad.dask as ld
    x, w, b, dy = data(rng, dtype)
    X, DY = da.from_array(x, chunks=(ROWS, -1)), da.from_array(dy, chunks=(ROWS, -1))
    with distributed.get_task_stream(client) as tasks:
        dx, dw, db = dask.compute(*ld.linear_backward(X, w, DY))
    assert len({t["worker"] for t in tasks.data}) == 2, "expected both worker processes to work"
    x64, w64, dy64 = f64(x, w, dy)
    # the tree adds log2(8) = 3 more roundings to dw and db
    assert_close(dx, dy64 @ w64.T, np.abs(dy64) @ np.abs(w64.T), O, dtype)
    assert_close(dw, x64.T @ dy64, np.abs(x64.T) @ np.abs(dy64), N // ROWS + ROWS, dtype)
    assert_close(db, dy64.sum(0), np.abs(dy64).sum(0), N // ROWS + ROWS, dtype)


def test_npy_file_on_cluster(client, tmp_path, rng):
    """The same .npy files the streaming API reads, as dask arrays read by the workers."""
    import dask
    import lingrad.dask as ld
    x, w, b, dy = data(rng, np.float64)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "dy.npy", dy)
    X, DY = ld.from_npy(tmp_path / "x.npy", ROWS), ld.from_npy(tmp_path / "dy.npy", 300)
    assert X.chunks == ((ROWS,) * 8, (I,)) and DY.chunks[0] == (300, 300, 300, 100)
    g = ld.linear_backward(X, w, DY, need_dx=False)
    dw, db = dask.compute(g.dw, g.db)
    np.testing.assert_allclose(dw, x.T @ dy, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, dy.sum(0), rtol=1e-12, atol=1e-12)


def test_lesson_mlp_on_cluster(client, da, rng):
    """lin1 -> relu -> lin2 -> mse over a dask batch; float64, so no ReLU flips against numpy."""
    import dask
    import lingrad.dask as ld
    x, w1, b1, _ = data(rng, np.float64)
    w2, b2, t = rng.standard_normal((O, 1)), np.zeros(1), rng.standard_normal((N, 1))
    X, T = da.from_array(x, chunks=(ROWS, -1)), da.from_array(t, chunks=(ROWS, -1))
    h = ld.linear(X, w1, b1, relu=True)
    y = ld.linear(h, w2, b2)
    dy = 2 * (y - T) / N
    g2 = ld.linear_backward(h, w2, dy)
    g1 = ld.linear_backward(X, w1, g2.dx, relu_out=h, need_dx=False)
    dw1, db1, dw2, db2 = dask.compute(g1.dw, g1.db, g2.dw, g2.db)
    h_ref = np.maximum(x @ w1 + b1, 0)
    dy_ref = 2 * (h_ref @ w2 + b2 - t) / N
    dh_ref = (dy_ref @ w2.T) * (h_ref > 0)
    for got, ref in ((dw1, x.T @ dh_ref), (db1, dh_ref.sum(0)), (dw2, h_ref.T @ dy_ref),
                     (db2, dy_ref.sum(0))):
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= 1e-12 * np.abs(ref).max()


def test_need_flags_and_masking(da, rng):
    import dask
    import lingrad.dask as ld
    x, w, b, dy = data(rng, np.float64)
    X, DY = da.from_array(x, chunks=(ROWS, -1)), da.from_array(dy, chunks=(100, -1))  # rechunked
    y = ld.linear(X, w, b, relu=True)
    g = ld.linear_backward(X, w, DY, relu_out=y, need_dx=False, need_db=False)
    assert g.dx is None and g.db is None
    dym = np.where(x @ w + b > 0, dy, 0)
    np.testing.assert_allclose(g.dw.compute(scheduler="sync"), x.T @ dym, rtol=1e-12, atol=1e-12)
    g = ld.linear_backward(None, None, DY, need_dx=False, need_dw=False)
    np.testing.assert_allclose(g.db.compute(scheduler="sync"), dy.sum(0), rtol=1e-12, atol=1e-12)
    dx, = dask.compute(ld.linear_backward(X, w, DY, relu_out=y, need_dw=False, need_db=False).dx,
                       scheduler="sync")
    np.testing.assert_allclose(dx, dym @ w.T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("split_every, fan_in, levels", [(2, 2, 3), (8, 8, 1)])
def test_reduction_is_a_tree(da, rng, split_every, fan_in, levels):
    """8 chunk partials summed with fan-in split_every: 3 levels of pairwise adds, or 1 flat sum."""
    from dask.core import get_dependencies
    import lingrad.dask as ld
    x, w, b, dy = data(rng, np.float64)
    X, DY = da.from_array(x, chunks=(ROWS, -1)), da.from_array(dy, chunks=(ROWS, -1))
    dw = ld.linear_backward(X, w, DY, need_dx=False, split_every=split_every).dw
    graph = dict(dw.__dask_graph__())
    deps = {k: get_dependencies(graph, k) for k in graph}

    @lru_cache(None)
    def depth(k):  # longest path from a source
        return 1 + max((depth(d) for d in deps[k]), default=0)

    assert max(len(d) for d in deps.values()) == fan_in
    # source arrays (1) -> partials (2) -> per-block step (3) -> tree levels -> final slice
    assert max(depth(k) for k in graph) == 3 + levels + 1
    np.testing.assert_allclose(dw.compute(scheduler="sync"), x.T @ dy, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make, error, match", [
    (lambda da, x, w, dy: (x.compute(), w, dy), TypeError, "must be a dask array"),
    (lambda da, x, w, dy: (x, w.astype(np.float32), dy), TypeError, "share one dtype"),
    (lambda da, x, w, dy: (x, w[:-1], dy), ValueError,
     r"expected \(0, 23\).*stand-ins of the dask arrays x \(1000, 24\), dy \(1000, 5\)"),
    (lambda da, x, w, dy: (x, w, dy[:-1]), ValueError, "batch sizes differ"),
    (lambda da, x, w, dy: (x.astype(np.int64), w, dy), TypeError, "float32 or float64"),
])
def test_bad_input(da, rng, make, error, match):
    import lingrad.dask as ld
    x, w, b, dy = data(rng, np.float64)
    X, DY = da.from_array(x, chunks=(ROWS, -1)), da.from_array(dy, chunks=(ROWS, -1))
    with pytest.raises(error, match=match):
        ld.linear_backward(*make(da, X, w, DY))


def test_import_without_dask_says_how_to_install():
    code = ("import sys; sys.modules['dask'] = None; sys.modules['dask.array'] = None\n"
            "import lingrad, lingrad.stream\n"
            "try:\n    import lingrad.dask\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 'pip install "lingrad[dask]"' in out.stdout


def test_lingrad_does_not_import_dask():
    code = "import sys, lingrad, lingrad.stream; print('dask' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
