"""The lesson's MLP (lin1 -> relu -> lin2 -> mse), trained by full-batch gradient descent
on a dask cluster: the batch stays on the workers, only the weights and gradients travel.

    python examples/dask_lesson.py [--n 200000] [--rows 20000] [--workers 2] [--steps 5] [--check]
    python examples/dask_lesson.py --scheduler tcp://host:8786     # an existing cluster

Each step: per chunk of rows, lingrad's kernels run the forward and backward; dw1, db1,
dw2, db2 are tree-summed (lingrad.dask.linear_backward) and brought to this process, which
updates the weights. With --check the first gradients are compared with numpy on the whole
batch (float64). Needs ``pip install "lingrad[dask]"``.
"""
import argparse
import contextlib

import numpy as np


def step(X, T, w1, b1, w2, b2):
    """One full-batch forward + backward on dask arrays: loss and dw1, db1, dw2, db2 (lazy)."""
    import lingrad.dask as ld
    n = X.shape[0]
    h = ld.linear(X, w1, b1, relu=True)
    y = ld.linear(h, w2, b2)
    loss = ((y - T) ** 2).mean()
    dy = 2 * (y - T) / n
    g2 = ld.linear_backward(h, w2, dy)
    g1 = ld.linear_backward(X, w1, g2.dx, relu_out=h, need_dx=False)
    return loss, g1.dw, g1.db, g2.dw, g2.db


def numpy_grads(x, t, w1, b1, w2, b2):
    h = np.maximum(x @ w1 + b1, 0)
    dy = 2 * (h @ w2 + b2 - t) / x.shape[0]
    dh = (dy @ w2.T) * (h > 0)
    return x.T @ dh, dh.sum(0), h.T @ dy, dy.sum(0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--rows", type=int, default=20_000, help="rows per chunk")
    p.add_argument("--workers", type=int, default=2, help="local worker processes")
    p.add_argument("--scheduler", default=None, help="address of an existing dask scheduler")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--check", action="store_true")
    a = p.parse_args(argv)
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster

    with contextlib.ExitStack() as stack:
        if a.scheduler:
            client = stack.enter_context(Client(a.scheduler))
        else:
            cluster = stack.enter_context(LocalCluster(
                n_workers=a.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                env={"NUMBA_NUM_THREADS": "1"}))
            client = stack.enter_context(Client(cluster))
        print(f"{len(client.scheduler_info()['workers'])} workers")
        I, H = 784, 50
        g = da.random.default_rng(0)  # synthetic data, made on the workers and kept there
        X = g.standard_normal((a.n, I), dtype=np.float32, chunks=(a.rows, -1))
        w_true = np.random.default_rng(1).standard_normal((I, 1)).astype(np.float32) / np.sqrt(I)
        T = da.maximum(X @ w_true, 0) + 0.1 * g.standard_normal((a.n, 1), dtype=np.float32,
                                                                 chunks=(a.rows, -1))
        X, T = client.persist([X, T.astype(np.float32)])
        r = np.random.default_rng(2)
        w1 = (r.standard_normal((I, H)) * np.sqrt(2 / I)).astype(np.float32)
        b1 = np.zeros(H, np.float32)
        w2 = (r.standard_normal((H, 1)) * np.sqrt(1 / H)).astype(np.float32)
        b2 = np.zeros(1, np.float32)
        print(f"x: {a.n:,} x {I} float32 in {X.numblocks[0]} chunks of {a.rows:,} rows")
        for s in range(a.steps):
            loss, *grads = dask.compute(*step(X, T, w1, b1, w2, b2))
            print(f"step {s}: loss {float(loss):.4f}")
            if s == 0 and a.check:
                ref = numpy_grads(*(v.astype(np.float64) for v in
                                    (X.compute(), T.compute(), w1, b1, w2, b2)))
                for name, got, e in zip(["dw1", "db1", "dw2", "db2"], grads, ref):
                    err = np.abs(got - e).max() / np.abs(e).max()
                    print(f"  {name} max relative error vs numpy float64: {err:.1e}")
            for param, grad in zip((w1, b1, w2, b2), grads):
                param -= a.lr * grad
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
