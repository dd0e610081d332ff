"""The public API: validate once, normalise layout, allocate, dispatch to lingrad.kernels.

Layout: the kernels read C-contiguous arrays. C-order inputs are used as they
are (the fast path); any other layout (Fortran order, strided views) is copied
once to C order. ``w`` is small (I*O): each call picks the micro-kernel form
(``kernels.use_nn``) and makes contiguous whichever of ``w`` and ``w.T`` that
form reads, so a C-order ``w`` costs an I*O transposed copy only for the NT
forward and the NN dx (skipped for batches up to SMALL_N rows), and a
PyTorch-layout weight passed as ``W.T`` the other way round.
"""
import os
import threading
from collections import namedtuple

import numba
import numpy as np

from . import kernels as K
from ._checks import Out, as_float_arrays, check_dim, check_ndim, rows

LinearGrads = namedtuple("LinearGrads", ["dx", "dw", "db"])
LinearGrads.__doc__ = "Gradients of y = x @ w + b: dx (like x), dw (like w), db (like b); None if skipped."

_workqueue_lock = threading.Lock()
_launch_pid = []  # the process that last launched lingrad's parallel kernels


def _call(parallel, serial, work, *args):
    """Run the serial kernel for tiny work or one thread, else the parallel one.

    Numba's fallback 'workqueue' threading layer is not safe for concurrent
    parallel launches from several Python threads, so those are serialised
    with a lock; the 'omp' and 'tbb' layers run them concurrently. GNU OpenMP
    cannot be used again in a child forked after the parent started it, so a
    forked child runs the serial kernels under 'omp'.
    """
    if work < K.SERIAL_WORK or numba.get_num_threads() == 1:
        return serial(*args)
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel region has run yet in this process
        layer = None
    if layer == "omp" and _launch_pid and _launch_pid[0] != os.getpid():
        return serial(*args)  # a child forked after the parent used the pool
    _launch_pid[:] = [os.getpid()]
    if layer in ("omp", "tbb"):
        return parallel(*args)
    with _workqueue_lock:
        return parallel(*args)


def _direct_parallel(*args):
    """kernels.weight_bias_direct_parallel with one block of dw per thread (asked only
    when the parallel kernel runs: numba.get_num_threads() costs about 0.7 us)."""
    return K.weight_bias_direct_parallel(*args, numba.get_num_threads())


def _operands(w, as_is, work):
    """(w, w.T) made C-contiguous, each only if the chosen form reads it: as_is
    means the kernel reads w (I, O) itself; otherwise it reads w.T (O, I). The
    other is an empty placeholder. A transposed copy runs on as many threads as
    the kernel that will read it (work: that kernel's multiply-adds)."""
    empty = np.empty((0, 0), w.dtype)
    if as_is:
        return np.ascontiguousarray(w), empty
    if w.T.flags.c_contiguous:  # w in Fortran order (a PyTorch weight's .T): no copy
        return empty, w.T
    wt = np.empty(w.shape[::-1], w.dtype)
    _call(K.transpose, K.transpose_rows, work, w, wt)
    return empty, wt


def linear(x: "np.typing.ArrayLike", w: "np.typing.ArrayLike", b: "np.typing.ArrayLike | None" = None,
           *, relu: bool = False, out: "np.ndarray | None" = None) -> "np.ndarray":
    """y = x @ w + b (then max(y, 0) if relu).

    x: (..., I), w: (I, O), b: (O,) or None; all float32 or all float64.
    Returns y of shape (..., O) in the same dtype, written into ``out`` if given.
    numpy: ``x @ w + b``, or ``np.maximum(x @ w + b, 0)`` with relu=True.
    """
    x, w, b = as_float_arrays({"x", "w"}, x=x, w=w, b=b)
    check_ndim(x, "x", "1+", "(..., I)")
    check_ndim(w, "w", 2, "(I, O)")
    I, O = w.shape
    check_dim(x, "x", -1, I, "w.shape[0]")
    if b is not None:
        check_ndim(b, "b", 1, "(O,)")
        check_dim(b, "b", 0, O, "w.shape[1]")
    y = Out(out, x.shape[:-1] + (O,), x.dtype, "y", {"x": x, "w": w, "b": b})
    x2 = rows(x, I)
    N = x2.shape[0]
    nn = K.use_nn(I, O) or N <= K.SMALL_N  # the NN form reads w as it is: no copy for small N
    wc, wt = _operands(w, nn, N * I * O)
    bias = np.empty(0, x.dtype) if b is None else np.ascontiguousarray(b)
    _call(K.forward, K.forward_rows, N * I * O, x2, wc, wt, bias, bool(relu), nn, y.buf)
    return y.done()


def linear_backward(x: "np.typing.ArrayLike | None", w: "np.typing.ArrayLike | None",
                    dy: "np.typing.ArrayLike", *, relu_out: "np.typing.ArrayLike | None" = None,
                    need_dx: bool = True, need_dw: bool = True, need_db: bool = True,
                    out: "tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None] | None" = None,
                    accumulate: bool = False) -> LinearGrads:
    """Gradients of y = x @ w + b: returns LinearGrads(dx, dw, db).

    x: (..., I), w: (I, O), dy = dL/dy: (..., O).
    relu_out: the forward output of ``linear(..., relu=True)``; when given, dy is
        multiplied by (relu_out > 0) on the fly, one block at a time.
    need_dx / need_dw / need_db: skip a gradient (returned as None). The first
        layer of a network never needs dx; x may then be None-free but w is
        only needed for dx.
    out: optional (dx, dw, db) buffers (any may be None).
    accumulate: add into the given dw and db (``dw += x.T @ dy``) instead of
        overwriting them: for micro-batches and streaming. dx is always written.
    numpy: ``dx = dy @ w.T;  dw = x.T @ dy;  db = dy.sum(0)`` over the flattened batch.
    """
    return _backward(x, w, dy, relu_out, need_dx, need_dw, need_db, out, accumulate)


def input_grad(dy: "np.typing.ArrayLike", w: "np.typing.ArrayLike", *,
               relu_out: "np.typing.ArrayLike | None" = None,
               out: "np.ndarray | None" = None) -> "np.ndarray":
    """dx = dy @ w.T.  dy: (..., O), w: (I, O) -> dx: (..., I)."""
    return _backward(None, w, dy, relu_out, True, False, False, (out, None, None), False).dx


def weight_grad(x: "np.typing.ArrayLike", dy: "np.typing.ArrayLike", *,
                relu_out: "np.typing.ArrayLike | None" = None, out: "np.ndarray | None" = None,
                accumulate: bool = False) -> "np.ndarray":
    """dw = x.T @ dy over the flattened batch.  x: (..., I), dy: (..., O) -> dw: (I, O)."""
    return _backward(x, None, dy, relu_out, False, True, False, (None, out, None), accumulate).dw


def bias_grad(dy: "np.typing.ArrayLike", *, relu_out: "np.typing.ArrayLike | None" = None,
              out: "np.ndarray | None" = None, accumulate: bool = False) -> "np.ndarray":
    """db = dy.sum(0) over the flattened batch.  dy: (..., O) -> db: (O,)."""
    return _backward(None, None, dy, relu_out, False, False, True, (None, None, out), accumulate).db


def _backward(x, w, dy, relu_out, need_dx, need_dw, need_db, out, accumulate):
    required = {"dy"} | ({"w"} if need_dx else set()) | ({"x"} if need_dw else set())
    x, w, dy, relu_out = as_float_arrays(required, x=x, w=w, dy=dy, relu_out=relu_out)
    if out is None:
        out = (None, None, None)
    if not isinstance(out, (tuple, list)):
        raise TypeError(f"out must be a (dx, dw, db) tuple, got {type(out).__name__}; "
                        f"use None for any buffer you do not pass")
    if len(out) != 3:
        raise ValueError(f"out must be a (dx, dw, db) tuple of 3, got {len(out)} items; "
                         f"use None for any buffer you do not pass")
    check_ndim(dy, "dy", "1+", "(..., O)")
    O = dy.shape[-1]
    if relu_out is not None and relu_out.shape != dy.shape:
        raise ValueError(f"relu_out has shape {relu_out.shape}, must match dy's {dy.shape}")
    inputs = {"x": x, "w": w, "dy": dy, "relu_out": relu_out}
    if need_dx:
        check_ndim(w, "w", 2, "(I, O)")
        check_dim(w, "w", 1, O, "dy.shape[-1]")
        I = w.shape[0]
        if x is not None and x.shape != dy.shape[:-1] + (I,):
            raise ValueError(f"x has shape {x.shape}, expected {dy.shape[:-1] + (I,)} "
                             f"(dy's leading dimensions, then w.shape[0])")
    if need_dw:
        check_ndim(x, "x", "1+", "(..., I)")
        I = x.shape[-1]
        if x.shape[:-1] != dy.shape[:-1]:
            raise ValueError(f"x {x.shape} and dy {dy.shape} must share their leading "
                             f"(batch) dimensions")
        if w is not None:
            check_ndim(w, "w", 2, "(I, O)")
            if w.shape != (I, O):
                raise ValueError(f"w has shape {w.shape}, expected (x.shape[-1], dy.shape[-1]) "
                                 f"= {(I, O)}")
    dtype = dy.dtype
    dx = dw = db = None
    if need_dx:
        dx = Out(out[0], dy.shape[:-1] + (I,), dtype, "dx", inputs)
        inputs["dx out"] = dx.user
    if need_dw:
        dw = Out(out[1], (I, O), dtype, "dw", inputs, accumulate)
        inputs["dw out"] = dw.user
    if need_db:
        db = Out(out[2], (O,), dtype, "db", inputs, accumulate, as_rows=False)
    d2 = rows(dy, O)
    y2 = d2 if relu_out is None else rows(relu_out, O)
    masked = relu_out is not None
    N = d2.shape[0]
    if need_dx:
        nn = K.use_nn(O, I) and N > K.SMALL_N  # the NT form reads w as it is: no copy for small N
        wc, wt = _operands(w, not nn, N * I * O)
        _call(K.input_grad, K.input_grad_rows, N * I * O, d2, wc, wt, y2, masked, nn, dx.buf)
    if need_dw or need_db:
        x2 = rows(x, I) if need_dw else d2
        dwb = dw.buf if need_dw else np.empty((0, 0), dtype)
        dbb = db.buf if need_db else np.empty(0, dtype)
        if N <= K.NB:  # one block: straight into the outputs, no partials
            work = N * x2.shape[1] * O if need_dw else 0
            _call(_direct_parallel, K.weight_bias_direct, work, x2, d2, y2, masked, need_dw,
                  need_db, bool(accumulate), dwb, dbb)
        else:
            work = N * (x2.shape[1] * O if need_dw else O)
            # per-thread float64 partials: one chunk of the batch per thread, each at least NB rows
            T = max(1, min(numba.get_num_threads(), N // K.NB)) if work >= K.SERIAL_WORK else 1
            dw_acc = np.zeros((T, x2.shape[1] * O if need_dw else 0))
            db_acc = np.zeros((T, O if need_db else 0))
            _call(K.weight_bias_grad, K.weight_bias_grad_serial, work, x2, d2, y2, masked,
                  need_dw, need_db, bool(accumulate), dw_acc, db_acc, dwb, dbb)
    return LinearGrads(dx.done() if need_dx else None, dw.done() if need_dw else None,
                       db.done() if need_db else None)
