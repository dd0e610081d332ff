"""Logistic regression by full-batch gradient descent over a .npy file read in chunks.

    python examples/stream_regression.py [--n 2000000] [--i 64] [--steps 5] [--mib 16] [--dir DIR]

Writes x (N, I) float32 and labels t (N,) int8 to DIR (a temporary folder by default)
without ever holding x in memory, then runs --steps steps of full-batch gradient descent
with lingrad.stream.full_batch_grad, reading x through np.load(mmap_mode="r") in chunks of
at most --mib MiB of working memory. With --check (for an N that fits in memory) the first
gradient is compared with numpy on the whole batch in float64.
"""
import argparse
import os
import tempfile
import time

import numpy as np

from lingrad import stream


def write_dataset(folder, n, i, rng, rows=100_000):
    """x ~ N(0, 1) and t = 1 where x @ w_true > noise, written in pieces of `rows` rows."""
    w_true = rng.standard_normal(i) / np.sqrt(i)
    x = np.lib.format.open_memmap(os.path.join(folder, "x.npy"), "w+", np.float32, (n, i))
    t = np.lib.format.open_memmap(os.path.join(folder, "t.npy"), "w+", np.int8, (n,))
    for lo in range(0, n, rows):
        xc = rng.standard_normal((min(rows, n - lo), i)).astype(np.float32)
        x[lo:lo + len(xc)] = xc
        t[lo:lo + len(xc)] = xc @ w_true > 0.3 * rng.standard_normal(len(xc))
    x.flush(), t.flush()
    return os.path.join(folder, "x.npy"), os.path.join(folder, "t.npy")


def check_against_numpy(x_path, t_path, w, b, grads):
    x = np.load(x_path).astype(np.float64)
    t = np.load(t_path).astype(np.float64)[:, None]
    y = x @ w + b
    dy = (1 / (1 + np.exp(-y)) - t) / y.size
    for name, got, ref in (("dw", grads[0], x.T @ dy), ("db", grads[1], dy.sum(0))):
        err = np.abs(got - ref).max() / np.abs(ref).max()
        print(f"  {name} max relative error vs in-memory numpy float64: {err:.1e}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2_000_000)
    p.add_argument("--i", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--lr", type=float, default=2.0)
    p.add_argument("--mib", type=float, default=16, help="working memory per chunk, MiB")
    p.add_argument("--dir", default=None, help="where to write x.npy and t.npy (default: a temp dir)")
    p.add_argument("--check", action="store_true", help="compare the first gradient with numpy")
    a = p.parse_args(argv)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir=a.dir) as folder:
        x_path, t_path = write_dataset(folder, a.n, a.i, rng)
        print(f"x: {a.n:,} x {a.i} float32 = {a.n * a.i * 4 / 2**20:,.0f} MiB on disk; "
              f"chunks of at most {a.mib:g} MiB of working memory")
        w, b = np.zeros((a.i, 1), np.float32), np.zeros(1, np.float32)
        for step in range(a.steps):
            t0 = time.perf_counter()
            loss, [(dw, db)] = stream.full_batch_grad(x_path, t_path, [(w, b)], loss="logistic",
                                                      max_bytes=a.mib * 2**20, progress=True)
            print(f"step {step}: loss {loss:.4f}  ({time.perf_counter() - t0:.2f} s)")
            if step == 0 and a.check:
                check_against_numpy(x_path, t_path, w, b, (dw, db))
            w -= a.lr * dw
            b -= a.lr * db
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
