"""The public API: validate once, normalise, allocate, dispatch to lingrad.kernels.engine.

Every product runs on the engine (kernels/engine.py) as lingrad.plan decides.
Inputs are read in the layout they come in (C order, Fortran order, strided
or reversed views): each operand is handed over as a view of its memory
(``_checks.view``). The one copy an input can cost: dw reads x in place along
I, so an x whose rows are not contiguous (Fortran order, strided columns) is
copied once to C order for dw. The engine packs w (or w.T) once per call into
its micro-panels, and per-thread blocks of d (and of x, for the forward of an
x not contiguous along I).
"""
import os
import threading
from collections import namedtuple

import numba
import numpy as np

from . import kernels as K
from . import plan as P
from ._checks import Out, as_float_arrays, as_rows, check_dim, check_ndim, transposed, view

LinearGrads = namedtuple("LinearGrads", ["dx", "dw", "db"])
LinearGrads.__doc__ = "Gradients of y = x @ w + b: dx (like x), dw (like w), db (like b); None if skipped."

_workqueue_lock = threading.Lock()
_launch_pid = []  # the process that last launched lingrad's parallel kernels


def _launch(parallel, serial, threads, *args):
    """Run the parallel kernel on ``threads`` threads (the plan's count), or the serial
    one for 1.

    Numba's fallback 'workqueue' threading layer is not safe for concurrent
    parallel launches from several Python threads, so those are serialised
    with a lock; the 'omp' and 'tbb' layers run them concurrently. GNU OpenMP
    cannot be used again in a child forked after the parent started it, so a
    forked child runs the serial kernels under 'omp'.
    """
    if threads == 1:
        return serial(*args, 1)
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel region has run yet in this process
        layer = None
    if layer == "omp" and _launch_pid and _launch_pid[0] != os.getpid():
        return serial(*args, 1)  # a child forked after the parent used the pool
    _launch_pid[:] = [os.getpid()]
    if layer in ("omp", "tbb"):
        return parallel(*args, threads)
    with _workqueue_lock:
        return parallel(*args, threads)


_EMPTY = {np.dtype(t): (np.empty(0, t), np.empty((1, 0), t)) for t in (np.float32, np.float64)}


def _gemm(plan, A, B, C, Y=None, bias=None, db=None, relu=False, partial=0, accumulate=False):
    """Run one product as planned: C = A @ B (plan.M x plan.K times plan.K x plan.N).

    A, B, Y: operand views; C = (flat buffer, offset, row stride); bias: (N,) or
    None; db: (threads, M) float64 partials when the plan sums db; partial: the
    size of each thread's partial C when the plan splits the summed axis;
    accumulate: C += A @ B.
    """
    E = K.engine
    dtype = A[0].dtype
    bp = _EMPTY[dtype][0]
    if plan.b_mode == E.WHOLE:  # all of B, once: the same panels serve every row block and thread
        nr = E.lanes(bp)
        bp = np.empty(-(-plan.N // nr) * nr * plan.K, dtype)
        _launch(E.pack_whole_b, E.pack_whole_b_serial, plan.threads, B, plan.K, plan.N, bp)
    bias = _EMPTY[C[0].dtype][0] if bias is None else bias
    db = _EMPTY[np.dtype(np.float64)][1] if db is None else db
    flags = (plan.pack_a, plan.masked, plan.b_mode, bool(relu), plan.want_db, bool(accumulate))
    _launch(E.gemm, E.gemm_serial, plan.threads, A, B, C, A if Y is None else Y, bias, db, bp,
            (plan.M, plan.K, plan.N, partial), plan.blocks, flags, plan.split)


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
    x2 = as_rows(x, I)
    N = x2.shape[0]
    X = view(x2)
    W = view(w)
    plan = P.gemm("forward", N, I, O, x.itemsize, X[3] == 1, W[3] == 1, False, False,
                  P.threads(N * I * O))
    bias = None if b is None else np.ascontiguousarray(b)
    _gemm(plan, X, W, (y.buf.reshape(-1), 0, O), bias=bias, relu=relu)
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
        layer of a network never needs dx. w is needed only for dx (None with
        need_dx=False), x only for dw (None with need_dw=False).
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
    d2 = as_rows(dy, O)
    N = d2.shape[0]
    masked = relu_out is not None
    D = view(d2)
    Y = view(as_rows(relu_out, O)) if masked else D
    threads = P.threads(N * O * (I if need_dx or need_dw else 1))
    if need_dx:
        WT = transposed(view(w))
        plan = P.gemm("dx", N, O, I, dtype.itemsize, D[3] == 1, WT[3] == 1, masked, False, threads)
        _gemm(plan, D, WT, (dx.buf.reshape(-1), 0, I), Y)
    db_acc = None
    if need_dw:
        x2 = as_rows(x, I)
        XT = transposed(view(x2))
        plan = P.gemm("dw", I, N, O, dtype.itemsize, XT[3] == 1, D[3] == 1, masked, need_db, threads)
        if plan.swap:  # dw.T = d.T @ x into per-thread float64 partials, db summed while packing d.T
            if x2.strides[1] != x2.itemsize:  # x is read in place along I
                x2 = np.ascontiguousarray(x2)
            acc = np.empty((plan.threads, I * O))
            db_acc = np.zeros((plan.threads, O if need_db else 0))
            _gemm(plan, transposed(D), view(x2), (acc.reshape(-1), 0, I), transposed(Y), db=db_acc,
                  partial=I * O)
            _launch(K.engine.merge, K.engine.merge_serial, plan.threads, acc, dw.buf, True,
                    bool(accumulate))
        elif plan.scratch:  # dw = x.T @ d, float64 sums, rounded once
            acc = np.empty((1, I * O))
            _gemm(plan, XT, D, (acc.reshape(-1), 0, O), Y)
            _launch(K.engine.merge, K.engine.merge_serial, plan.threads, acc, dw.buf, False,
                    bool(accumulate))
        else:  # dw = x.T @ d, written in place
            _gemm(plan, XT, D, (dw.buf.reshape(-1), 0, O), Y, accumulate=accumulate)
    if need_db and db_acc is None:
        T = P.reduction(N, O, threads)
        db_acc = np.zeros((T, O))
        _launch(K.engine.colsum, K.engine.colsum_serial, T, D, Y, masked, N, db_acc)
    if need_db:
        _launch(K.engine.merge, K.engine.merge_serial, 1, db_acc, db.buf.reshape(1, O), False,
                bool(accumulate))
    return LinearGrads(dx.done() if need_dx else None, dw.done() if need_dw else None,
                       db.done() if need_db else None)
