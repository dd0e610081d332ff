"""Full-batch gradients over a dataset larger than memory, read in chunks of rows.

    x = np.load("x.npy", mmap_mode="r")            # (N, I), never read whole
    t = np.load("t.npy", mmap_mode="r")            # (N,) or (N, O)
    loss, grads = lingrad.stream.full_batch_grad(x, t, [(w1, b1), (w2, b2)], loss="mse")
    (dw1, db1), (dw2, db2) = grads

Why it works: the loss is a mean over rows, so every batch reduction of the
backward pass is a sum over rows, and a sum over rows splits over chunks:

    dw = x.T @ dy = sum over chunks c of x[c].T @ dy[c]        db = sum_c dy[c].sum(0)

Each chunk's forward and backward run through lingrad's kernels, and
``linear_backward(..., accumulate=True, out=(dx, dw, db))`` adds the chunk's
``dw`` and ``db`` into the running totals. The chunk's activations live in
buffers allocated once, so memory is set by the chunk size, not by N.
"""
import os
import sys
import time
from collections import namedtuple
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from . import api
from ._checks import FLOATS

StreamResult = namedtuple("StreamResult", ["loss", "grads"])
StreamResult.__doc__ = ("Full-batch loss (a Python float) and grads: one (dw, db) pair per layer, "
                        "db None where the layer has no bias.")

DEFAULT_MAX_BYTES = 64 * 2**20  # working memory of one chunk when chunk_rows is not given
PROGRESS_DELAY = 1.0  # seconds a run lasts before its progress bar appears

# an array (a memmap included) or the path of a .npy file
Source = Union[npt.ArrayLike, str, "os.PathLike[str]"]
Layer = Tuple[npt.ArrayLike, Optional[npt.ArrayLike]]


# ---- losses: L = mean over the N*O outputs; each writes dL/dy for its chunk --------------
def mse(y: np.ndarray, t: np.ndarray, scale: float, dy: np.ndarray) -> float:
    """L = mean((y - t)^2);  dL/dy = 2 (y - t) / (N*O).  Writes dy, returns the chunk's sum of (y - t)^2.

    numpy: ``((y - t) ** 2).mean()`` and ``2 * (y - t) / y.size`` over the whole batch.
    """
    np.subtract(y, t, out=dy)
    total = float(np.square(dy).sum(dtype=np.float64))
    dy *= 2 * scale
    return total


def logistic(y: np.ndarray, t: np.ndarray, scale: float, dy: np.ndarray) -> float:
    """Binary cross-entropy on logits y, targets t in [0, 1]:
    L = mean(log(1 + e^y) - t*y);  dL/dy = (sigmoid(y) - t) / (N*O).
    Writes dy, returns the chunk's sum of log(1 + e^y) - t*y.

    numpy: ``np.mean(np.logaddexp(0, y) - t * y)``; sigmoid(y) = (1 + tanh(y/2)) / 2 (no overflow).
    """
    total = float(np.sum(np.logaddexp(0, y) - t * y, dtype=np.float64))
    np.multiply(y, 0.5, out=dy)
    np.tanh(dy, out=dy)
    dy += 1
    dy *= 0.5
    dy -= t
    dy *= scale
    return total


LOSSES: Dict[str, Callable[[np.ndarray, np.ndarray, float, np.ndarray], float]] = {
    "mse": mse, "logistic": logistic}


# ---- the public function --------------------------------------------------------------
def full_batch_grad(x: Source, t: Source, layers: Sequence[Layer], *, loss: str = "mse",
                    chunk_rows: Optional[int] = None, max_bytes: int = DEFAULT_MAX_BYTES,
                    progress: Optional[bool] = None) -> StreamResult:
    """Loss and gradients of an MLP over all N rows of x, computed chunk by chunk.

    Model (the lesson's MLP for two layers; linear/logistic regression for one):
        h_0 = x;   h_k = relu(h_{k-1} @ w_k + b_k) for k < L;   y = h_{L-1} @ w_L + b_L
    loss "mse":      L = mean((y - t)^2)
    loss "logistic": L = mean(log(1 + e^y) - t*y)   (binary cross-entropy on logits y)
    with the mean over all N*O outputs.

    x: (N, I) array or path of a .npy file (opened with ``np.load(path, mmap_mode="r")``).
    t: (N, O) or, when O == 1, (N,); array or .npy path; any numeric dtype.
    layers: [(w_1, b_1), ..., (w_L, b_L)], w_k (I_k, O_k) and b_k (O_k,) or None, all one
        float dtype; x is read in chunks and cast to that dtype one chunk at a time.
    chunk_rows: rows per chunk; by default as many as fit in ``max_bytes`` of working
        memory: the rows of x read (and their cast, if x's dtype differs from the layers'),
        each layer's output and its gradient, and t.
    progress: show a progress bar on stderr (tqdm if installed, else a line of text)
        once a run has lasted PROGRESS_DELAY (1 s); None: only when stderr is a terminal.

    Returns StreamResult(loss, grads), grads = [(dw_1, db_1), ..., (dw_L, db_L)].
    numpy (in memory): the same forward, dy = dL/dy, then per layer from the last:
        dw_k = h_{k-1}.T @ dz_k,  db_k = dz_k.sum(0),  dz_{k-1} = (dz_k @ w_k.T) * (h_{k-1} > 0)
    Memory: O(chunk_rows * (I + sum of layer widths)), independent of N.
    """
    xa, ta = _open(x, "x"), _open(t, "t")  # arrays (a memmap for a path)
    ws, bs = _check(xa, ta, layers, loss)
    dtype = ws[0].dtype
    N, widths = xa.shape[0], [w.shape[1] for w in ws]
    O = widths[-1]
    rows = chunk_rows if chunk_rows is not None else _rows_for(max_bytes, xa, dtype, widths)
    if not isinstance(rows, (int, np.integer)) or rows < 1:
        raise ValueError(f"chunk_rows must be a positive int, got {rows!r}")
    rows = int(min(rows, N))
    h = [np.empty((rows, o), dtype) for o in widths]          # h[k]: output of layer k (h[-1] = y)
    dh = [np.empty((rows, o), dtype) for o in widths]         # dh[k]: dL/dh[k] (dh[-1] = dL/dy)
    x_buf = np.empty((rows, xa.shape[1]), dtype) if _needs_cast(xa, dtype) else None
    dws = [np.zeros(w.shape, dtype) for w in ws]
    dbs = [None if b is None else np.zeros(b.shape, dtype) for b in bs]
    scale, total = 1.0 / (N * O), 0.0
    with _Progress(N, progress) as bar:
        for lo in range(0, N, rows):
            hi = min(lo + rows, N)
            xc = _read(xa, lo, hi, x_buf)
            tc = np.asarray(ta[lo:hi], dtype=dtype).reshape(hi - lo, O)
            hc, dhc = [a[:hi - lo] for a in h], [a[:hi - lo] for a in dh]
            _forward(xc, ws, bs, hc)
            total += LOSSES[loss](hc[-1], tc, scale, dhc[-1])
            _backward_accumulate(xc, ws, bs, hc, dhc, dws, dbs)
            bar.update(hi - lo)
    return StreamResult(total * scale, list(zip(dws, dbs)))


def _forward(x: np.ndarray, ws: Sequence[np.ndarray], bs: Sequence[Optional[np.ndarray]],
             h: Sequence[np.ndarray]) -> None:
    """h[k] = relu(h[k-1] @ w_k + b_k), no ReLU after the last layer; written into h."""
    a = x
    for k, (w, b) in enumerate(zip(ws, bs)):
        a = api.linear(a, w, b, relu=k < len(ws) - 1, out=h[k])


def _backward_accumulate(x: np.ndarray, ws: Sequence[np.ndarray], bs: Sequence[Optional[np.ndarray]],
                         h: Sequence[np.ndarray], dh: Sequence[np.ndarray], dws: Sequence[np.ndarray],
                         dbs: Sequence[Optional[np.ndarray]]) -> None:
    """From dh[-1] = dL/dy back to the first layer: dws[k] += h[k-1].T @ dz_k, dbs[k] += dz_k.sum(0).

    dz_k is dh[k] masked by the ReLU (h[k] > 0), on the fly, for all but the last layer.
    """
    for k in reversed(range(len(ws))):
        relu_out = h[k] if k < len(ws) - 1 else None
        api.linear_backward(x if k == 0 else h[k - 1], ws[k], dh[k], relu_out=relu_out,
                            need_dx=k > 0, need_db=bs[k] is not None, accumulate=True,
                            out=(dh[k - 1] if k > 0 else None, dws[k], dbs[k]))


# ---- input handling --------------------------------------------------------------------
def _open(a: Any, name: str) -> Any:
    """A .npy path becomes a read-only memmap; arrays (memmaps included) pass through."""
    if isinstance(a, (str, os.PathLike)):
        return np.load(a, mmap_mode="r")
    if not hasattr(a, "shape") or not hasattr(a, "__getitem__"):
        raise TypeError(f"{name} must be an array or the path of a .npy file, "
                        f"got {type(a).__name__}")
    return a


def _needs_cast(x: Any, dtype: np.dtype) -> bool:
    """True when rows of x cannot be handed to the kernels as they are (another dtype or layout)."""
    return x.dtype != dtype or not getattr(x, "flags", None) or not x.flags.c_contiguous


def _read(x: Any, lo: int, hi: int, buf: Optional[np.ndarray]) -> np.ndarray:
    """Rows lo:hi of x: a view of the memmap, or cast into the reused buffer."""
    if buf is None:
        return np.asarray(x[lo:hi])
    np.copyto(buf[:hi - lo], x[lo:hi], casting="unsafe")
    return buf[:hi - lo]


def _check(x: Any, t: Any, layers: Sequence[Layer],
           loss: str) -> Tuple[List[np.ndarray], List[Optional[np.ndarray]]]:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
    if len(layers) == 0:
        raise ValueError("layers must hold at least one (w, b) pair")
    ws = [np.asarray(w) for w, _ in layers]
    bs = [None if b is None else np.asarray(b) for _, b in layers]
    dtype = ws[0].dtype
    if dtype not in FLOATS:
        raise TypeError(f"w_1 has dtype {dtype}; use float32 or float64, e.g. w.astype(np.float32)")
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (N, I), got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError("x has no rows: the mean loss over an empty batch is undefined")
    width = x.shape[1]
    for k, (w, b) in enumerate(zip(ws, bs), start=1):
        for name, a in ((f"w_{k}", w), (f"b_{k}", b)):
            if a is not None and a.dtype != dtype:
                raise TypeError(f"{name} has dtype {a.dtype}, w_1 has {dtype}: cast all layers to one")
        if w.ndim != 2 or w.shape[0] != width:
            raise ValueError(f"w_{k} has shape {w.shape}, expected ({width}, O_{k}): its rows "
                             f"must match {'x.shape[1]' if k == 1 else f'w_{k - 1}.shape[1]'}")
        if b is not None and b.shape != (w.shape[1],):
            raise ValueError(f"b_{k} has shape {b.shape}, expected ({w.shape[1]},)")
        width = w.shape[1]
    if t.shape not in ((x.shape[0], width),) + (((x.shape[0],),) if width == 1 else ()):
        expected = f"({x.shape[0]}, {width})" + (f" or ({x.shape[0]},)" if width == 1 else "")
        raise ValueError(f"t has shape {t.shape}, expected {expected} (N rows of x, O outputs)")
    return ws, bs


def _rows_for(max_bytes: int, x: Any, dtype: np.dtype, widths: Sequence[int]) -> int:
    """Rows whose working set fits max_bytes: the rows of x read (plus their cast to dtype
    when x has another dtype or layout), and per layer h and dh, then t."""
    per_row = x.shape[1] * np.dtype(x.dtype).itemsize
    if _needs_cast(x, dtype):
        per_row += x.shape[1] * dtype.itemsize
    per_row += (2 * sum(widths) + widths[-1]) * dtype.itemsize
    return max(1, int(max_bytes) // per_row)


# ---- progress ---------------------------------------------------------------------------
class _Progress:
    """Rows done out of total on stderr: tqdm when installed, else one rewritten line.

    Shown only once the run has lasted ``delay`` seconds, so short calls print nothing.
    """

    def __init__(self, total: int, enabled: Optional[bool]) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else bool(enabled)
        self.total, self.done, self.delay = total, 0, PROGRESS_DELAY
        self.start = self.last = time.monotonic()
        self.tqdm: Any = None
        if self.enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                pass
            else:
                self.tqdm = tqdm(total=total, unit="rows", unit_scale=True, delay=self.delay,
                                 desc="lingrad.stream", file=sys.stderr)

    def update(self, n: int) -> None:
        self.done += n
        if self.tqdm is not None:
            self.tqdm.update(n)
        elif self.enabled:
            now = time.monotonic()
            if now - self.start >= self.delay and (now - self.last >= 0.5 or self.done == self.total):
                self.last = now
                print(f"\rlingrad.stream: {self.done:,}/{self.total:,} rows "
                      f"({100 * self.done / self.total:.0f}%)", end="", file=sys.stderr, flush=True)

    def __enter__(self) -> "_Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tqdm is not None:
            self.tqdm.close()
        elif self.enabled and time.monotonic() - self.start >= self.delay:
            print(file=sys.stderr, flush=True)
