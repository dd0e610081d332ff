"""python -m lingrad bench: lingrad against numpy, PyTorch and JAX (each when installed), side by side.

Each row times one op on one shape (a name from --shapes, or --shape NxIxO),
dtype and thread count. Times are the minimum of several interleaved repeats
(lingrad, numpy, torch, jax, lingrad, ...; a 0.15 s pause before each block),
JIT compilation excluded, with BLAS and torch pinned to lingrad's thread count.
JAX runs jax.jit-compiled functions on arrays already on its device
(jax.device_put), timed up to block_until_ready(). Each thread count runs in a
fresh process; one on fewer threads than the machine's cores is pinned to that
many cores (at 1 thread: one core, and XLA_FLAGS=--xla_cpu_multi_thread_eigen=false),
set before JAX starts its threads. "speedup" is the fastest peer's time over
lingrad's (above 1: lingrad beats all of them); "vs" names that peer.
"% peak" compares lingrad's rate with this machine's measured limit: for
compute-bound shapes the GFLOP/s of a large BLAS GEMM, for memory-bound ones
(I or O <= 16) the GB/s of a large array read.

--json FILE writes a list of rows, one per (shape, dtype, threads, op):
  shape, N, I, O, dtype, threads, op; cores, cores_after (the cores the run could use
  at its start and after its op; a row with fewer than its threads, narrowed by another
  program, is marked "!" in the table);
  lingrad_s, numpy_s, torch_s, jax_s (seconds per call; null for a peer not run);
  lingrad_gflops, numpy_gflops, torch_gflops, jax_gflops;
  speedup (fastest peer's time / lingrad's), peer (its name);
  bound ("compute" or "memory"), pct_peak, peak_gflops, bandwidth_gbs.
"""
import argparse
import importlib
import json
import sys
from typing import Any, Callable, Collection, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt

import lingrad

from .timing import (blas_threads, current_cores, interleaved_min, peer, per_thread_count, short_of_cores,
                     thread_setup)

SHAPES = {  # name: (N, I, O)
    "lesson-1": (50000, 784, 50),
    "lesson-2": (50000, 50, 1),
    "mlp": (10000, 784, 256),
    "head": (10000, 256, 10),
    "batch-1": (1, 784, 50),
    "batch-16": (16, 784, 50),
    "batch-64": (64, 784, 50),
    "square": (2048, 2048, 2048),
}
DEFAULT = ["lesson-1", "lesson-2", "mlp", "head", "batch-1", "batch-64"]
OPS = ["forward", "relu", "dx", "dw", "db", "dw+db", "step"]
PEERS = ["numpy", "torch", "jax"]


def parse_shape(text: str) -> Tuple[int, int, int]:
    """'NxIxO' -> (N, I, O), each a positive int (for --shape)."""
    parts = text.lower().split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not NxIxO with three positive integers, e.g. 64x784x50")
    return dims


def shape_dims(name: str) -> Tuple[int, int, int]:
    """(N, I, O) of a named shape, or of an 'NxIxO' one."""
    return SHAPES[name] if name in SHAPES else parse_shape(name)

# lingrad fn, numpy fn, torch fn or None, flops, bytes moved
Op = Tuple[Callable[[], object], Callable[[], object], Optional[Callable[[], object]], int, int]


def ops(x: np.ndarray, w: np.ndarray, b: np.ndarray, dy: np.ndarray,
        torch: Any = None) -> Dict[str, Op]:
    """op name -> (lingrad fn, numpy fn, torch fn or None, flops, bytes moved)."""
    N, I = x.shape
    O = w.shape[1]
    it = x.itemsize
    f = {
        "forward": (lambda: lingrad.linear(x, w, b), lambda: x @ w + b, 2 * N * I * O, (N * I + N * O) * it),
        "relu": (lambda: lingrad.linear(x, w, b, relu=True), lambda: np.maximum(x @ w + b, 0),
                 2 * N * I * O, (N * I + N * O) * it),
        "dx": (lambda: lingrad.input_grad(dy, w), lambda: dy @ w.T, 2 * N * I * O, (N * I + N * O) * it),
        "dw": (lambda: lingrad.weight_grad(x, dy), lambda: x.T @ dy, 2 * N * I * O, (N * I + N * O) * it),
        "db": (lambda: lingrad.bias_grad(dy), lambda: dy.sum(0), N * O, N * O * it),
        "dw+db": (lambda: lingrad.linear_backward(x, w, dy, need_dx=False),
                  lambda: (x.T @ dy, dy.sum(0)), 2 * N * I * O + N * O, (N * I + N * O) * it),
        "step": (lambda: (lingrad.linear(x, w, b), lingrad.linear_backward(x, w, dy)),
                 lambda: (x @ w + b, dy @ w.T, x.T @ dy, dy.sum(0)),
                 6 * N * I * O + N * O, (3 * N * I + 3 * N * O) * it),
    }
    t: Dict[str, Callable[[], object]] = {}
    if torch is not None:
        X, W, B, DY = (torch.from_numpy(a) for a in (x, w, b, dy))
        F = torch.nn.functional
        WT = W.T.contiguous()
        t = {"forward": lambda: F.linear(X, WT, B), "relu": lambda: torch.relu(F.linear(X, WT, B)),
             "dx": lambda: DY @ W.T, "dw": lambda: X.T @ DY,
             "db": lambda: DY.sum(0), "dw+db": lambda: (X.T @ DY, DY.sum(0)),
             "step": lambda: (F.linear(X, WT, B), DY @ W.T, X.T @ DY, DY.sum(0))}
    return {k: (v[0], v[1], t.get(k), v[2], v[3]) for k, v in f.items()}


def jax_ops(jax: Any, x: np.ndarray, w: np.ndarray, b: np.ndarray,
            dy: np.ndarray) -> Dict[str, Callable[[], Any]]:
    """op name -> a call of the op as a jax.jit-compiled function on device arrays,
    returning once the result is ready; the ops of ``ops`` (same formulas)."""
    X, W, B, DY = (jax.device_put(a) for a in (x, w, b, dy))
    f = {
        "forward": (lambda x, w, b: x @ w + b, X, W, B),
        "relu": (lambda x, w, b: jax.numpy.maximum(x @ w + b, 0), X, W, B),
        "dx": (lambda dy, w: dy @ w.T, DY, W),
        "dw": (lambda x, dy: x.T @ dy, X, DY),
        "db": (lambda dy: dy.sum(0), DY),
        "dw+db": (lambda x, dy: (x.T @ dy, dy.sum(0)), X, DY),
        "step": (lambda x, w, b, dy: (x @ w + b, dy @ w.T, x.T @ dy, dy.sum(0)), X, W, B, DY),
    }

    def call(fn: Callable[..., Any], args: Sequence[Any]) -> Callable[[], Any]:
        jf = jax.jit(fn)
        return lambda: jax.block_until_ready(jf(*args))
    return {k: call(fn, args) for k, (fn, *args) in f.items()}


def machine_limits(threads: int, dtype: npt.DTypeLike) -> Tuple[float, float]:
    """Measured peak GFLOP/s (BLAS GEMM 2048^3) and read bandwidth GB/s (sum of 256 MB)."""
    r = np.random.default_rng(0)
    a = r.standard_normal((2048, 2048)).astype(dtype)
    big = np.ones(256 * 2**20 // np.dtype(dtype).itemsize, dtype)
    with blas_threads(threads):
        tg, ts = interleaved_min([lambda: a @ a, lambda: big.sum()], repeats=3, min_time=0.1)
    return 2 * 2048**3 / tg / 1e9, big.nbytes / ts / 1e9


def run(shapes: Sequence[str], dtypes: Sequence[str], thread_counts: Sequence[int],
        op_names: Collection[str], repeats: int, use_torch: bool = True, use_jax: bool = True,
        progress: bool = True) -> List[Dict[str, Any]]:
    """Rows for every shape x dtype x thread count x op, in this process (see main for
    one process per thread count). shapes: names of SHAPES or 'NxIxO' strings."""
    torch = peer("torch") if use_torch else None
    rows = []
    todo = [(s, d, t) for t in thread_counts for d in dtypes for s in shapes]
    limits: Dict[Tuple[int, str], Tuple[float, float]] = {}
    for k, (name, dtype, threads) in enumerate(todo):
        N, I, O = shape_dims(name)
        with thread_setup(threads):  # before JAX starts: its pool follows the affinity
            jax = peer("jax") if use_jax else None
            if progress:
                print(f"[{k + 1}/{len(todo)}] {name} {N}x{I}->{O} {dtype} threads={threads}",
                      file=sys.stderr, flush=True)
            if (threads, dtype) not in limits:
                limits[threads, dtype] = machine_limits(threads, dtype)
            peak, bw = limits[threads, dtype]
            r = np.random.default_rng(0)
            x, w, b, dy = (r.standard_normal(s).astype(dtype) for s in [(N, I), (I, O), (O,), (N, O)])
            jx = jax_ops(jax, x, w, b, dy) if jax is not None else {}
            cores = current_cores()
            with lingrad.num_threads(threads), blas_threads(threads):
                for op, (fl, fn, ft, flops, nbytes) in ops(x, w, b, dy, torch).items():
                    if op not in op_names:
                        continue
                    impls = {"lingrad": fl, "numpy": fn, "torch": ft, "jax": jx.get(op)}
                    impls = {n: f for n, f in impls.items() if f is not None}
                    t = dict(zip(impls, interleaved_min(list(impls.values()), repeats=repeats)))
                    best = min((p for p in PEERS if p in t), key=t.__getitem__)
                    memory_bound = min(I, O) <= 16 or op == "db"
                    rate = nbytes / t["lingrad"] / 1e9 if memory_bound else flops / t["lingrad"] / 1e9
                    row = dict(shape=name, N=N, I=I, O=O, dtype=dtype, threads=threads, op=op, cores=cores,
                               cores_after=current_cores())
                    for impl in ["lingrad"] + PEERS:
                        row[f"{impl}_s"] = t.get(impl)
                        row[f"{impl}_gflops"] = flops / t[impl] / 1e9 if impl in t else None
                    row.update(speedup=t[best] / t["lingrad"], peer=best,
                               bound="memory" if memory_bound else "compute",
                               pct_peak=100 * rate / (bw if memory_bound else peak),
                               peak_gflops=peak, bandwidth_gbs=bw)
                    rows.append(row)
    return rows


def fmt_time(s: float) -> str:
    return f"{s * 1e6:8.1f}us" if s < 1e-3 else f"{s * 1e3:8.2f}ms"


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    head = (f"{'shape':<11} {'N x I -> O':<18} {'dtype':<7} {'thr':>3} {'op':<7} {'lingrad':>10} {'GF/s':>6} "
            f"{'numpy':>10} {'torch':>10} {'jax':>10} {'speedup':>7} {'vs':<5} {'%peak':>6}")
    out = [head, "-" * len(head)]
    for r in rows:
        peers = " ".join(fmt_time(r[f"{p}_s"]) if r[f"{p}_s"] else f"{'-':>10}" for p in PEERS)
        out.append(f"{r['shape']:<11} {str(r['N']) + 'x' + str(r['I']) + '->' + str(r['O']):<18} "
                   f"{r['dtype']:<7} {r['threads']:>2}{'!' if short_of_cores(r) else ' '} {r['op']:<7} "
                   f"{fmt_time(r['lingrad_s'])} "
                   f"{r['lingrad_gflops']:6.1f} {peers} {r['speedup']:6.2f}x {r['peer']:<5} "
                   f"{r['pct_peak']:5.0f}%")
    if any(short_of_cores(r) for r in rows):
        out.append("! fewer cores than threads during the run (another program narrowed this process's "
                   "affinity): not a time on that many threads")
    return "\n".join(out)


def plot(rows: Sequence[Mapping[str, Any]], path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit('--plot needs matplotlib: pip install "lingrad[plot]"') from None
    groups = sorted({(r["shape"], r["op"]) for r in rows}, key=str)
    fig, ax = plt.subplots(figsize=(max(6, len(groups) * 0.5), 4))
    xs = np.arange(len(groups))
    for k, impl in enumerate(["lingrad"] + PEERS):
        vals = []
        for g in groups:
            best = [r[f"{impl}_gflops"] for r in rows if (r["shape"], r["op"]) == g and r.get(f"{impl}_gflops")]
            vals.append(max(best) if best else 0)
        ax.bar(xs + (k - 1.5) * 0.2, vals, 0.2, label=impl)
    ax.set_xticks(xs, [f"{s}\n{o}" for s, o in groups], rotation=90, fontsize=7)
    ax.set_ylabel("GFLOP/s (best over dtypes and threads)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="python -m lingrad bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", choices=list(SHAPES),
                   help=f"named shapes (default, without --shape: {' '.join(DEFAULT)}); "
                        + ", ".join(f"{k} = {n}x{i}x{o}" for k, (n, i, o) in SHAPES.items()))
    p.add_argument("--shape", action="append", type=parse_shape, default=[], metavar="NxIxO",
                   help="a shape of your own, x (N, I) and w (I, O); repeatable, e.g. --shape 128x784x50")
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    p.add_argument("--threads", nargs="+", type=int,
                   default=sorted({1, lingrad.get_num_threads()}))
    p.add_argument("--ops", nargs="+", default=OPS, choices=OPS)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even when installed")
    p.add_argument("--no-jax", action="store_true", help="skip JAX even when installed")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON (fields above)")
    p.add_argument("--plot", metavar="PNG", help="also write a bar chart (needs matplotlib)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one thread count, rows to --json
    a = p.parse_args(argv)
    if a.repeats < 1 or min(a.threads) < 1:
        p.error("--repeats and --threads must be positive")
    shapes = (a.shapes or ([] if a.shape else DEFAULT)) + [f"{n}x{i}x{o}" for n, i, o in a.shape]
    if len(a.threads) > 1 and not a.child:
        rows = per_thread_count("bench", argv, a.threads)
    else:
        rows = run(shapes, a.dtypes, a.threads, a.ops, a.repeats, not a.no_torch, not a.no_jax)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    if a.child:
        return 0
    print(table(rows))
    if a.plot:
        plot(rows, a.plot)
    return 0
