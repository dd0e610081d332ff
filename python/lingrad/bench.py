"""python -m lingrad bench: lingrad against numpy (and PyTorch when installed), side by side.

Each row times one op on one shape, dtype and thread count. Times are the
minimum of several interleaved repeats (lingrad, numpy, torch, lingrad, ...),
JIT compilation excluded, with BLAS and torch pinned to lingrad's thread count.
"% peak" compares lingrad's rate with this machine's measured limit: for
compute-bound shapes the GFLOP/s of a large BLAS GEMM, for memory-bound ones
(I or O <= 16) the GB/s of a large array read.
"""
import argparse
import importlib
import json
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt

import lingrad

from .timing import blas_threads, interleaved_min

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


def machine_limits(threads: int, dtype: npt.DTypeLike) -> Tuple[float, float]:
    """Measured peak GFLOP/s (BLAS GEMM 2048^3) and read bandwidth GB/s (sum of 256 MB)."""
    r = np.random.default_rng(0)
    a = r.standard_normal((2048, 2048)).astype(dtype)
    big = np.ones(256 * 2**20 // np.dtype(dtype).itemsize, dtype)
    with blas_threads(threads):
        tg, ts = interleaved_min([lambda: a @ a, lambda: big.sum()], repeats=3, min_time=0.1)
    return 2 * 2048**3 / tg / 1e9, big.nbytes / ts / 1e9


def run(shapes: Sequence[str], dtypes: Sequence[str], thread_counts: Sequence[int],
        op_names: Sequence[str], repeats: int, use_torch: bool,
        progress: bool = True) -> List[Dict[str, Any]]:
    """One row per (shape, dtype, threads, op): times, GFLOP/s, speedup, share of the limit."""
    torch: Any = None
    if use_torch:
        try:
            torch = importlib.import_module("torch")
        except ImportError:
            torch = None
    rows = []
    todo = [(s, d, t) for t in thread_counts for d in dtypes for s in shapes]
    limits: Dict[Tuple[int, str], Tuple[float, float]] = {}
    for k, (name, dtype, threads) in enumerate(todo):
        N, I, O = SHAPES[name]
        if progress:
            print(f"[{k + 1}/{len(todo)}] {name} {N}x{I}->{O} {dtype} threads={threads}",
                  file=sys.stderr, flush=True)
        if (threads, dtype) not in limits:
            limits[threads, dtype] = machine_limits(threads, dtype)
        peak, bw = limits[threads, dtype]
        r = np.random.default_rng(0)
        x, w, b, dy = (r.standard_normal(s).astype(dtype) for s in [(N, I), (I, O), (O,), (N, O)])
        with lingrad.num_threads(threads), blas_threads(threads):
            for op, (fl, fn, ft, flops, nbytes) in ops(x, w, b, dy, torch).items():
                if op not in op_names:
                    continue
                fns = [fl, fn] + ([ft] if ft else [])
                ts = interleaved_min(fns, repeats=repeats)
                peer = min(ts[1:])
                memory_bound = min(I, O) <= 16 or op == "db"
                rate = nbytes / ts[0] / 1e9 if memory_bound else flops / ts[0] / 1e9
                rows.append(dict(shape=name, N=N, I=I, O=O, dtype=dtype, threads=threads, op=op,
                                 lingrad_s=ts[0], numpy_s=ts[1], torch_s=ts[2] if ft else None,
                                 lingrad_gflops=flops / ts[0] / 1e9, numpy_gflops=flops / ts[1] / 1e9,
                                 torch_gflops=flops / ts[2] / 1e9 if ft else None,
                                 speedup=peer / ts[0], bound="memory" if memory_bound else "compute",
                                 pct_peak=100 * rate / (bw if memory_bound else peak),
                                 peak_gflops=peak, bandwidth_gbs=bw))
    return rows


def fmt_time(s: float) -> str:
    return f"{s * 1e6:8.1f}us" if s < 1e-3 else f"{s * 1e3:8.2f}ms"


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    head = (f"{'shape':<9} {'N x I -> O':<18} {'dtype':<7} {'thr':>3} {'op':<7} {'lingrad':>10} {'GF/s':>6} "
            f"{'numpy':>10} {'GF/s':>6} {'torch':>10} {'speedup':>7} {'%peak':>6}")
    out = [head, "-" * len(head)]
    for r in rows:
        torch_t = fmt_time(r["torch_s"]) if r["torch_s"] else f"{'-':>10}"
        out.append(f"{r['shape']:<9} {str(r['N']) + 'x' + str(r['I']) + '->' + str(r['O']):<18} "
                   f"{r['dtype']:<7} {r['threads']:>3} {r['op']:<7} {fmt_time(r['lingrad_s'])} "
                   f"{r['lingrad_gflops']:6.1f} {fmt_time(r['numpy_s'])} {r['numpy_gflops']:6.1f} "
                   f"{torch_t} {r['speedup']:6.2f}x {r['pct_peak']:5.0f}%")
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
    for k, impl in enumerate(["lingrad", "numpy", "torch"]):
        vals = []
        for g in groups:
            best = [r[f"{impl}_gflops"] for r in rows if (r["shape"], r["op"]) == g and r[f"{impl}_gflops"]]
            vals.append(max(best) if best else 0)
        ax.bar(xs + (k - 1) * 0.27, vals, 0.27, label=impl)
    ax.set_xticks(xs, [f"{s}\n{o}" for s, o in groups], rotation=90, fontsize=7)
    ax.set_ylabel("GFLOP/s (best over dtypes and threads)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lingrad bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=DEFAULT, choices=list(SHAPES),
                   help=f"default: {' '.join(DEFAULT)}")
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    p.add_argument("--threads", nargs="+", type=int,
                   default=sorted({1, lingrad.get_num_threads()}))
    p.add_argument("--ops", nargs="+", default=OPS, choices=OPS)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even when installed")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    p.add_argument("--plot", metavar="PNG", help="also write a bar chart (needs matplotlib)")
    a = p.parse_args(argv)
    rows = run(a.shapes, a.dtypes, a.threads, a.ops, a.repeats, not a.no_torch)
    print(table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    if a.plot:
        plot(rows, a.plot)
    return 0
