"""Throughput (rows/s) of the lesson MLP's full-batch forward + backward on dask, against workers.

    python examples/dask_throughput.py [--n 100000] [--rows 10000] [--workers 1 2] [--repeats 5]

Each worker is one process with one thread and NUMBA_NUM_THREADS=1, so k workers use k cores.
The batch is generated on the workers and persisted there, so a timed step is: per chunk
lin1 -> relu -> lin2 -> mse and its backward (lingrad's kernels), then the tree sum of
dw1, db1, dw2, db2 (784*50 + 50 + 50 + 1 values per chunk) and their transfer to the client.
Baseline: the same step in this process, in memory, at 1 thread (no dask).
All clusters are started first and timed in turn (baseline, 1 worker, 2 workers, baseline,
...: lingrad.timing.interleaved_min), so a burst of load from other users of a shared machine
hits all of them alike. Reported: rows/s from the best of --repeats runs (the least
disturbed), and ratios to the 1-worker rate and to the in-memory rate.
Needs ``pip install "lingrad[dask]"``.
"""
import argparse
import contextlib

import numpy as np

# lingrad (and so numba) is imported inside main(), not here: worker processes are spawned,
# and a spawned process re-runs this module's top level before the Nanny sets its
# NUMBA_NUM_THREADS=1; numba imported that early would keep the default thread count.


def mlp_grads(lin, X, T, w1, b1, w2, b2, n):
    """The lesson's step through ``lin`` (lingrad or lingrad.dask): dw1, db1, dw2, db2."""
    h = lin.linear(X, w1, b1, relu=True)
    y = lin.linear(h, w2, b2)
    dy = 2 * (y - T) / n
    g2 = lin.linear_backward(h, w2, dy)
    g1 = lin.linear_backward(X, w1, g2.dx, relu_out=h, need_dx=False)
    return g1.dw, g1.db, g2.dw, g2.db


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="rows in the batch (default 100000)")
    p.add_argument("--rows", type=int, default=10_000, help="rows per chunk (default 10000)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args(argv)
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster, wait

    import lingrad
    import lingrad.dask
    from lingrad.timing import interleaved_min

    I, H = 784, 50
    r = np.random.default_rng(0)
    w1 = (r.standard_normal((I, H)) * np.sqrt(2 / I)).astype(np.float32)
    b1 = np.zeros(H, np.float32)
    w2 = (r.standard_normal((H, 1)) * np.sqrt(1 / H)).astype(np.float32)
    b2 = np.zeros(1, np.float32)
    print(f"lesson MLP {I}->{H}->1, float32, N={a.n:,} rows in chunks of {a.rows:,} "
          f"({-(-a.n // a.rows)} chunks), best of {a.repeats}")

    x = r.standard_normal((a.n, I), dtype=np.float32)
    t = r.standard_normal((a.n, 1), dtype=np.float32)
    steps = {"in memory, no dask, 1 thread": lambda: mlp_grads(lingrad, x, t, w1, b1, w2, b2, a.n)}
    with contextlib.ExitStack() as stack:
        for k in a.workers:
            cluster = stack.enter_context(LocalCluster(
                n_workers=k, threads_per_worker=1, processes=True, dashboard_address=None,
                env={"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}))
            client = stack.enter_context(Client(cluster, set_as_default=False))
            threads = set(client.run(lingrad.get_num_threads).values())
            if threads != {1}:
                raise RuntimeError(f"workers run {threads} Numba threads, expected 1")
            g = da.random.default_rng(1)  # the batch is made on the workers and stays there
            X, T = client.persist([g.standard_normal((a.n, I), dtype=np.float32, chunks=(a.rows, -1)),
                                   g.standard_normal((a.n, 1), dtype=np.float32, chunks=(a.rows, -1))])
            with client.as_current():
                wait([X, T])
            grads = mlp_grads(lingrad.dask, X, T, w1, b1, w2, b2, a.n)
            steps[f"dask, {k} worker(s) x 1 thread"] = (
                lambda grads=grads, client=client: dask.compute(*grads, scheduler=client))
        with lingrad.num_threads(1):  # the in-memory baseline on one core, like one worker
            times = dict(zip(steps, interleaved_min(list(steps.values()), repeats=a.repeats)))
    one = a.n / times[f"dask, {a.workers[0]} worker(s) x 1 thread"]
    base = a.n / times["in memory, no dask, 1 thread"]
    for name, sec in times.items():
        rate = a.n / sec
        print(f"  {name:<30} {rate:12,.0f} rows/s  {sec * 1e3:7.0f} ms  "
              f"{rate / one:5.2f}x the {a.workers[0]}-worker rate  {rate / base:5.2f}x in-memory")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
