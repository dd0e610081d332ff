"""lingrad on dask arrays chunked along the batch: one kernel call per chunk, a tree sum for dw, db.

    import dask.array as da, lingrad.dask
    x = da.from_array(x_np, chunks=(100_000, -1))          # (N, I), chunks of rows only
    y = lingrad.dask.linear(x, w, b, relu=True)            # lazy (N, O), same row chunks
    dx, dw, db = lingrad.dask.linear_backward(x, w, dy)    # lazy; dask.compute(dx, dw, db)

Forward and dx are row-wise: chunk c of y needs only chunk c of x (and all of w).
dw and db are sums over the batch:

    dw = sum_c x[c].T @ dy[c]        db = sum_c dy[c].sum(0)

Each chunk computes its partial (I*O + O values, packed into one (I+1, O) block by
``lingrad.linear_backward``), and the partials are added in a tree with fan-in
``split_every`` (2 by default: depth ceil(log2(chunks))), so no worker receives
more than ``split_every`` partials and the sum never funnels through one task.

Needs ``pip install "lingrad[dask]"``; w and b are numpy arrays (small: sent once per worker).
"""
try:
    import dask.array as da
except ImportError as e:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError('lingrad.dask needs dask: pip install "lingrad[dask]" '
                      '(dask[array] and distributed)') from e

import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import numpy.typing as npt

from . import api
from ._checks import FLOATS


def linear(x: "da.Array", w: npt.ArrayLike, b: Optional[npt.ArrayLike] = None, *,
           relu: bool = False) -> "da.Array":
    """y = x @ w + b (then max(y, 0) if relu), one lingrad.linear call per chunk of rows.

    x: dask array (N, I) chunked along N (any chunks along I are merged); w: (I, O) and
    b: (O,) or None, numpy arrays of x's dtype. Returns a lazy dask array y (N, O) with x's
    row chunks. numpy: ``x @ w + b``.
    """
    x = _batch_chunked(x, "x")
    w_np, b_np = _small(w, "w"), _small(b, "b")
    meta = _check_on_empty(api.linear, {"x": x}, _empty(x), w_np, b_np, relu=relu)
    args = [x, "ni", da.from_array(w_np, chunks=-1), "ij"]
    if b_np is not None:
        args += [da.from_array(b_np, chunks=-1), "j"]
    return da.blockwise(api.linear, "nj", *args, relu=bool(relu), dtype=meta.dtype, meta=meta,
                        concatenate=True)


def linear_backward(x: "Optional[da.Array]", w: Optional[npt.ArrayLike], dy: "da.Array", *,
                    relu_out: "Optional[da.Array]" = None, need_dx: bool = True,
                    need_dw: bool = True, need_db: bool = True,
                    split_every: int = 2) -> api.LinearGrads:
    """Gradients of y = x @ w + b over a batch chunked in rows: LinearGrads(dx, dw, db), lazy.

    x: (N, I) and dy = dL/dy: (N, O), dask arrays chunked along N (dy and relu_out are
    rechunked to x's row chunks if they differ); w: (I, O) numpy; relu_out: the forward
    output of ``linear(..., relu=True)`` (a dask array like dy), masks dy where it is 0.
    dx (N, I) is row-wise, chunked like x. dw (I, O) and db (O,) are each chunk's
    ``x[c].T @ dy[c]`` and ``dy[c].sum(0)``, summed in a tree of fan-in split_every.
    x may be None when need_dw is False; w may be None when need_dx is False.
    numpy: ``dx = dy @ w.T;  dw = x.T @ dy;  db = dy.sum(0)``.
    """
    dy = _batch_chunked(dy, "dy")
    x = None if x is None else _batch_chunked(x, "x")
    rows_like = x if x is not None else dy
    dy = _same_rows(dy, rows_like)
    relu_out = None if relu_out is None else _same_rows(_batch_chunked(relu_out, "relu_out"), rows_like)
    w_np = _small(w, "w")
    _check_on_empty(api.linear_backward, {"x": x, "dy": dy, "relu_out": relu_out},
                    _empty(x), w_np, _empty(dy), relu_out=_empty(relu_out), need_dx=need_dx,
                    need_dw=need_dw, need_db=need_db)
    masked = [] if relu_out is None else [relu_out, "nj"]
    dx = None
    if need_dx and w_np is not None:  # (w None with need_dx was rejected just above)
        dx = da.blockwise(_input_grad, "ni", dy, "nj", da.from_array(w_np, chunks=-1), "ij", *masked,
                          dtype=dy.dtype, meta=_empty(dy, w_np.shape[0]), concatenate=True)
    dw = db = None
    if need_dw or need_db:
        dw, db = _tree_sum_weight_bias(x, dy, masked, need_dw, need_db, split_every)
    return api.LinearGrads(dx, dw, db)


def _input_grad(dy: np.ndarray, w: np.ndarray, relu_out: Optional[np.ndarray] = None) -> np.ndarray:
    """One chunk: dx[c] = (dy[c] masked by relu_out[c] > 0) @ w.T."""
    return api.input_grad(dy, w, relu_out=relu_out)


def _weight_bias_partial(*chunks: np.ndarray, need_dw: bool, need_db: bool) -> np.ndarray:
    """One chunk's partial sums, packed as a (1, rows, O) block: rows [:I] = x[c].T @ dy[c]
    (if need_dw), last row = dy[c].sum(0) (if need_db); chunks = ([x], dy, [relu_out])."""
    x, rest = (chunks[0], chunks[1:]) if need_dw else (None, chunks)
    dy, relu_out = rest[0], (rest[1] if len(rest) > 1 else None)
    I = x.shape[1] if x is not None else 0
    packed = np.empty((1, I + need_db, dy.shape[1]), dy.dtype)
    api.linear_backward(x, None, dy, relu_out=relu_out, need_dx=False, need_dw=need_dw,
                        need_db=need_db, out=(None, packed[0, :I] if need_dw else None,
                                              packed[0, I] if need_db else None))
    return packed


def _tree_sum_weight_bias(x: "Optional[da.Array]", dy: "da.Array", masked: List[Any], need_dw: bool,
                          need_db: bool, split_every: int) -> Tuple[Any, Any]:
    """dw, db: per-chunk partials (nchunks, I + 1, O), then a tree sum over axis 0."""
    I = x.shape[1] if need_dw and x is not None else 0  # (x None with need_dw is rejected earlier)
    args = ([x, "ni"] if need_dw else []) + [dy, "nj"] + masked
    partials = da.blockwise(_weight_bias_partial, "nkj", *args, new_axes={"k": I + need_db},
                            adjust_chunks={"n": 1}, dtype=dy.dtype,
                            meta=np.empty((0, 0, 0), dy.dtype), concatenate=True,
                            need_dw=need_dw, need_db=need_db)
    total = partials.sum(axis=0, split_every=split_every, dtype=dy.dtype)
    return (total[:I] if need_dw else None), (total[I] if need_db else None)


def from_npy(path: "str | os.PathLike[str]", rows: int) -> "da.Array":
    """A dask array over a .npy file, in chunks of ``rows`` rows, read where the tasks run.

    Each chunk is ``np.load(path, mmap_mode="r")[lo:lo + rows]``, read by the worker that
    computes it: the file must be at the same path on every worker (a shared filesystem);
    only the header is read here. numpy: ``np.load(path)``.
    """
    path = os.fspath(path)
    a = np.load(path, mmap_mode="r")
    if a.ndim == 0 or not isinstance(rows, (int, np.integer)) or rows < 1:
        raise ValueError(f"need a file of at least 1-D and rows >= 1, got shape {a.shape}, rows {rows!r}")
    n = a.shape[0]
    row_chunks = (rows,) * (n // rows) + ((n % rows,) if n % rows else ())
    return da.map_blocks(_read_rows, path, int(rows), dtype=a.dtype,
                         chunks=(row_chunks,) + tuple((d,) for d in a.shape[1:]),
                         meta=np.empty((0,) * a.ndim, a.dtype))


def _read_rows(path: str, rows: int, block_id: Optional[Tuple[int, ...]] = None) -> np.ndarray:
    """Chunk block_id[0] of the file: rows block_id[0] * rows onwards (dask passes block_id)."""
    if block_id is None:
        raise TypeError("_read_rows is called by dask.array.map_blocks, which passes block_id")
    lo = block_id[0] * rows
    return np.array(np.load(path, mmap_mode="r")[lo:lo + rows])


# ---- checks and conversions ----------------------------------------------------------------
def _batch_chunked(a: Any, name: str) -> "da.Array":
    """a as a 2-D dask array with one chunk along its columns (chunks only along the batch)."""
    if not isinstance(a, da.Array):
        raise TypeError(f"{name} must be a dask array chunked along the batch, got "
                        f"{type(a).__name__}: use da.from_array({name}, chunks=(rows, -1))")
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, features), got shape {a.shape}")
    if a.dtype not in FLOATS:
        raise TypeError(f"{name} has dtype {a.dtype}; lingrad works on float32 or float64: "
                        f"{name}.astype(np.float32)")
    return a if len(a.chunks[1]) == 1 else a.rechunk({1: -1})


def _same_rows(a: "da.Array", like: "da.Array") -> "da.Array":
    if a.shape[0] != like.shape[0]:
        raise ValueError(f"batch sizes differ: {a.shape[0]} rows against {like.shape[0]}")
    return a if a.chunks[0] == like.chunks[0] else a.rechunk({0: like.chunks[0]})


def _small(a: Any, name: str) -> Optional[np.ndarray]:
    """w and b are small and travel whole: numpy arrays (a dask array is computed once here)."""
    if a is None:
        return None
    if isinstance(a, da.Array):
        a = a.compute()
    return np.asarray(a)


def _check_on_empty(fn: Callable[..., Any], arrays: Dict[str, Any], *args: Any, **kwargs: Any) -> Any:
    """Run fn on 0-row stand-ins of the dask arrays: lingrad's own dtype and shape checks,
    here and now rather than later in a worker. Returns fn's (empty) result."""
    try:
        return fn(*args, **kwargs)
    except ValueError as e:
        shapes = ", ".join(f"{n} {a.shape}" for n, a in arrays.items() if a is not None)
        raise ValueError(f"{e} [checked on 0-row stand-ins of the dask arrays {shapes}]") from None


def _empty(a: Any, cols: Optional[int] = None) -> Optional[np.ndarray]:
    """A zero-row numpy stand-in for a dask array: for checks and dask's meta."""
    if a is None:
        return None
    return np.empty((0, a.shape[1] if cols is None else cols), a.dtype)
