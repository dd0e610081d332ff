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
from numba._dispatcher import compute_fingerprint as _fingerprint
from numba.np.ufunc import parallel as _numba_parallel

from . import kernels as K
from . import plan as P
from ._checks import Out, as_float_arrays, as_rows, check_dim, check_ndim, transposed, view

LinearGrads = namedtuple("LinearGrads", ["dx", "dw", "db"])
LinearGrads.__doc__ = "Gradients of y = x @ w + b: dx (like x), dw (like w), db (like b); None if skipped."

_workqueue_lock = threading.Lock()
_launch_pid = []  # the process that last launched lingrad's parallel kernels


_NARROW = min(K.engine.DOT, K.engine.AXPY)
_ADDRESS: dict = {}  # (task, Numba's type fingerprint of its arguments) -> address


def _address(task, args):
    """The address of the task's machine code for (t, *args, T), which a parallel wrapper
    calls through engine.run; compiled (or loaded from Numba's cache) for the types of args
    on the first call with them. Numba's own dispatch keys on the same fingerprint."""
    key = (task, _fingerprint(args))
    address = _ADDRESS.get(key)
    if address is None:
        sig = (numba.int64,) + tuple(numba.typeof(a) for a in args) + (numba.int64,)
        task.compile(sig)
        res = task.overloads[sig]
        address = res.library.get_pointer_to_function(res.fndesc.llvm_func_name)
        _ADDRESS[key] = address
    return address


def _launch(parallel, task, threads, *args):
    """task(t, *args, T) for t < T = ``threads`` (the plan's count): on the calling thread
    for 1, else by the parallel wrapper, which calls task by its address (engine.run).

    Numba's fallback 'workqueue' threading layer is not safe for concurrent
    parallel launches from several Python threads, so those are serialised
    with a lock; the 'omp' and 'tbb' layers run them concurrently. GNU OpenMP
    cannot be used again in a child forked after the parent started it, so a
    forked child runs the tasks serially under 'omp'.
    """
    if threads == 1:
        return task(0, *args, 1)
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel region has run yet in this process
        layer = None
    if layer == "omp" and _launch_pid and _launch_pid[0] != os.getpid():
        return task(0, *args, 1)  # a child forked after the parent used the pool
    _launch_pid[:] = [os.getpid()]
    address = _address(task, args)
    if layer in ("omp", "tbb"):
        return parallel(address, *args, threads)
    with _workqueue_lock:
        return parallel(address, *args, threads)


_EMPTY = {np.dtype(t): (np.empty(0, t), np.empty((1, 0), t)) for t in (np.float32, np.float64)}
_ND = np.ndarray
_may_share_memory = np.may_share_memory

# ---- the lean call path ----
# Every call is validated and planned once per distinct key: the exact type, shape, strides
# and dtype of every array passed, and the flags. The validated call's decisions (plans,
# how each operand is viewed, the kernels' constant arguments) are cached under that key,
# so a repeated call skips the checks that cannot have changed. What can change between
# two calls with equal keys is checked on every call, before anything is written: that
# each out= is writeable and overlaps no input (nor another out=). A call that fails
# those checks, or that has no entry yet, takes the checked path, which raises the same
# TypeError or ValueError as ever. Entries are immutable and made whole before they are
# stored, so Python threads may share the cache; scratch buffers are allocated per call.
_CACHE: dict = {}
_CACHE_MAX = 4096  # entries; the cache is emptied when it is full
# An entry whose plans depend on the thread count is stored as {threads: entry} under its
# key (a dict is never an entry: entries are namedtuples), so the key is hashed once a call.


def clear_cache() -> None:
    """Forget every cached call (the next call of each key is validated and planned again)."""
    _CACHE.clear()


def _store(key, threads, entry):
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    if threads is None:
        _CACHE[key] = entry
    else:
        by_threads = _CACHE.get(key)
        if type(by_threads) is not dict:
            by_threads = _CACHE[key] = {}
        by_threads[threads] = entry


_numba_threads = None  # Numba's own getter of the calling thread's count, once its pool is up


def _threads_in_force():
    """numba.get_num_threads(): the thread count in force in the calling Python thread.

    numba.get_num_threads takes two locks to check that its pool is up (0.7 us a call on
    Zen 4); once it has answered, its pool is up for good and the C function it reads the
    count with (numba.np.ufunc.parallel._get_num_threads, 0.1 us) is called directly. Where
    a Numba version lacks that function, numba.get_num_threads answers every call."""
    global _numba_threads
    get = _numba_threads
    if get is not None:
        n = get()
        if n > 0:
            return n
    n = numba.get_num_threads()
    _numba_threads = getattr(_numba_parallel, "_get_num_threads", None)
    return n


def _writable_apart(out, arrays):
    """out is writeable, is none of arrays and shares no memory with any (None skipped).
    Two distinct arrays that both own their data cannot overlap; otherwise
    np.may_share_memory decides, as _checks.Out does."""
    f = out.flags
    if not f.writeable:
        return False
    own = f.owndata
    for a in arrays:
        if a is not None and (a is out or not (own and a.flags.owndata) and _may_share_memory(out, a)):
            return False
    return True


def _mode(a):
    """How the fast path views a: 0 C order (a.ravel()), 1 Fortran order, 2-D (a.T.ravel()),
    None for any other layout (not cached)."""
    if a.flags.c_contiguous:
        return 0
    if a.ndim == 2 and a.flags.f_contiguous:
        return 1
    return None


Prepared = namedtuple("Prepared", ["threads", "whole", "nr", "K", "N", "dtype", "empty_b", "empty_bias",
                                   "empty_db", "dims", "blocks", "flags", "split", "narrow"])


def _prepare(plan, dtype, cdtype, relu=False, partial=0, accumulate=False):
    """The constant part of one product's kernel calls (see _gemm)."""
    E = K.engine
    nr = P.tile_columns(plan.blocks[3], dtype.itemsize)
    whole = -(-plan.N // nr) * nr * plan.K if plan.b_mode == E.WHOLE else 0
    flags = (plan.pack_a, plan.masked, plan.b_mode, bool(relu), plan.want_db, bool(accumulate))
    return Prepared(plan.threads, whole, nr, plan.K, plan.N, dtype, _EMPTY[dtype][0], _EMPTY[cdtype][0],
                    _EMPTY[np.dtype(np.float64)][1], (plan.M, plan.K, plan.N, partial), plan.blocks,
                    flags, plan.split, plan.b_mode >= _NARROW)


def _record(g, A, B, C, Y):
    """The call record of one product prepared as g, on the views A, B, Y = (buf, off, rs,
    cs) and C = (buf, off, ldc): their offsets and strides, then g's dims, blocks, flags
    and split, as one int64 array in the layout kernels/engine.py's unpack reads. The
    record of a cached call is made once, with its entry: the views a cached call takes
    (C or Fortran order, from offset 0) have the same offsets and strides every time."""
    return np.array(A[1:] + B[1:] + C[1:] + Y[1:] + g.dims + g.blocks + g.flags + (g.split,),
                    np.int64)


def _gemm(g, p, a, b, c, y, bias=None, db=None):
    """Run one product as prepared: C = A @ B (g.dims' M x K times K x N).

    p: its call record (_record); a, b, c, y: the flat buffers of A, B, C and Y (the ReLU
    output) that p's offsets and strides index; bias: (N,) contiguous or None; db:
    (threads, M) float64 partials when the plan sums db. B packed whole first when the
    plan says so (into a buffer of this call's own).
    """
    E = K.engine
    T = g.threads
    bp = g.empty_b
    if g.whole:  # all of B, once: the same panels serve every row block and thread
        bp = np.empty(g.whole, g.dtype)
        _launch(E.pack_whole_b, E.pack_panels, T, (b,) + tuple(p[3:6].tolist()), g.K, g.N, g.nr,
                bp)
    if bias is None:
        bias = g.empty_bias
    if g.narrow:  # the dot kernel or axpy (flags[2], b_mode, DOT or AXPY)
        if T == 1:
            E.narrow_task(0, a, b, c, y, bias, p, 1)
        else:
            _launch(E.narrow, E.narrow_task, T, a, b, c, y, bias, p)
    elif T == 1:
        E.gemm_task(0, a, b, c, y, bias, g.empty_db if db is None else db, bp, p, 1)
    else:
        _launch(E.gemm, E.gemm_task, T, a, b, c, y, bias, g.empty_db if db is None else db, bp, p)


Forward = namedtuple("Forward", ["planner", "plans", "g", "p", "xm", "wm", "yshape"])
Forward.__doc__ = """A cached forward: the planner it was made with, the plans (plan.Calls),
the prepared product and its call record (_record), how x and w are viewed (mode 0 C
order, 1 Fortran order) and the shape of y."""


def linear(x: "np.typing.ArrayLike", w: "np.typing.ArrayLike", b: "np.typing.ArrayLike | None" = None,
           *, relu: bool = False, out: "np.ndarray | None" = None) -> "np.ndarray":
    """y = x @ w + b (then max(y, 0) if relu).

    x: (..., I), w: (I, O), b: (O,) or None; all float32 or all float64.
    Returns y of shape (..., O) in the same dtype, written into ``out`` if given.
    numpy: ``x @ w + b``, or ``np.maximum(x @ w + b, 0)`` with relu=True.
    """
    key = None
    if type(x) is _ND and type(w) is _ND:
        dt = x.dtype
        if w.dtype is dt and (b is None or type(b) is _ND and b.dtype is dt) and (
                out is None or type(out) is _ND and out.dtype is dt):
            key = ("linear", dt, x.shape, x.strides, w.shape, w.strides,
                   b is None or (b.shape, b.strides), out is None or (out.shape, out.strides), relu)
            try:
                e = _CACHE.get(key)
            except TypeError:  # an unhashable relu
                e = key = None
            if type(e) is dict:
                e = e.get(_threads_in_force())
            if e is not None and e[0] is P.gemm and (out is None or _writable_apart(out, (x, w, b))):
                xb = x.ravel() if e.xm == 0 else x.T.ravel()
                if out is None:
                    out = np.empty(e.yshape, dt)
                _gemm(e.g, e.p, xb, w.ravel() if e.wm == 0 else w.T.ravel(), out.ravel(), xb, b)
                return out
    return _linear_checked(x, w, b, relu, out, key)


def _linear_checked(x, w, b, relu, out, key):
    """linear with every check; caches the call under key (None: not cacheable)."""
    arrays = (x, w, b)
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
    threads = _threads_for(P.call_work(N, I, O, True))
    plans = P.call_plans(N, I, O, x.itemsize, threads or 1, forward=True, x=X[2:], w=W[2:])
    g = _prepare(plans.forward, x.dtype, x.dtype, relu)
    bias = None if b is None else np.ascontiguousarray(b)
    C = (y.buf.reshape(-1), 0, O)
    p = _record(g, X, W, C, X)
    _gemm(g, p, X[0], W[0], C[0], X[0], bias)
    xm, wm = _mode(x), _mode(w)
    if (key is not None and xm is not None and wm is not None and (b is None or b is bias)
            and y.direct and all(a is c for a, c in zip(arrays, (x, w, b)))):
        _store(key, threads, Forward(P.gemm, plans, g, p, xm, wm, y.user.shape))
    return y.done()


def _threads_for(work):
    """Numba's thread count in force when work may use threads, else None (without asking
    Numba): the cache keys on the count only then."""
    return _threads_in_force() if work >= K.SERIAL_WORK else None


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
    return _tuple_new(LinearGrads, _backward(x, w, dy, relu_out, need_dx, need_dw, need_db, out,
                                             accumulate))


_tuple_new = tuple.__new__  # LinearGrads(*t) without namedtuple's Python-level __new__


def input_grad(dy: "np.typing.ArrayLike", w: "np.typing.ArrayLike", *,
               relu_out: "np.typing.ArrayLike | None" = None,
               out: "np.ndarray | None" = None) -> "np.ndarray":
    """dx = dy @ w.T.  dy: (..., O), w: (I, O) -> dx: (..., I)."""
    return _backward(None, w, dy, relu_out, True, False, False, (out, None, None), False)[0]


def weight_grad(x: "np.typing.ArrayLike", dy: "np.typing.ArrayLike", *,
                relu_out: "np.typing.ArrayLike | None" = None, out: "np.ndarray | None" = None,
                accumulate: bool = False) -> "np.ndarray":
    """dw = x.T @ dy over the flattened batch.  x: (..., I), dy: (..., O) -> dw: (I, O)."""
    return _backward(x, None, dy, relu_out, False, True, False, (None, out, None), accumulate)[1]


def bias_grad(dy: "np.typing.ArrayLike", *, relu_out: "np.typing.ArrayLike | None" = None,
              out: "np.ndarray | None" = None, accumulate: bool = False) -> "np.ndarray":
    """db = dy.sum(0) over the flattened batch.  dy: (..., O) -> db: (O,)."""
    return _backward(None, None, dy, relu_out, False, False, True, (None, None, out), accumulate)[2]


Backward = namedtuple("Backward", ["planner", "plans", "dx", "dw", "merge_dw",
                                   "xm", "xv", "wm", "wv", "dm", "dv", "ym", "yv", "N", "I", "O",
                                   "dxshape", "masked", "need_db", "accumulate", "recs"])
Backward.__doc__ = """A cached backward: the planner it was made with, the plans (plan.Calls),
the prepared dx and dw products (None where not run) and the threads of dw's merge; how x,
w, dy and relu_out are viewed (mode 0 C order, 1 Fortran order, None not read; the view's
strides: (rs, cs) of x, of w.T, of dy and of relu_out); N, I, O; dx's shape; the flags;
the call records of dx and dw (_record; None until the entry's first run)."""


def _backward(x, w, dy, relu_out, need_dx, need_dw, need_db, out, accumulate):
    key = None
    if type(dy) is _ND:
        dt = dy.dtype
        if out is None:
            o0 = o1 = o2 = None
        elif type(out) is tuple and len(out) == 3:
            o0, o1, o2 = out
        else:
            o0 = o1 = o2 = dt  # not an array: not cacheable
        if ((x is None or type(x) is _ND and x.dtype is dt)
                and (w is None or type(w) is _ND and w.dtype is dt)
                and (relu_out is None or type(relu_out) is _ND and relu_out.dtype is dt)
                and (o0 is None or type(o0) is _ND and o0.dtype is dt)
                and (o1 is None or type(o1) is _ND and o1.dtype is dt)
                and (o2 is None or type(o2) is _ND and o2.dtype is dt)):
            key = ("backward", dt, dy.shape, dy.strides, x is None or (x.shape, x.strides),
                   w is None or (w.shape, w.strides),
                   relu_out is None or (relu_out.shape, relu_out.strides),
                   o0 is None or (o0.shape, o0.strides), o1 is None or (o1.shape, o1.strides),
                   o2 is None or (o2.shape, o2.strides), need_dx, need_dw, need_db, accumulate)
            try:
                e = _CACHE.get(key)
            except TypeError:  # an unhashable flag
                e = key = None
            if type(e) is dict:
                e = e.get(_threads_in_force())
            if e is not None and e[0] is not P.gemm:
                e = None
            if e is not None:
                # what an equal key cannot tell: each out= is writeable and apart (as Out)
                if e.dx is None:
                    o0 = None
                elif o0 is not None and not _writable_apart(o0, (x, w, dy, relu_out)):
                    e = None
                if e is None or e.dw is None:
                    o1 = None
                elif o1 is not None and not _writable_apart(o1, (x, w, dy, relu_out, o0)):
                    e = None
                if e is None or not e.need_db:
                    o2 = None
                elif o2 is not None and not _writable_apart(o2, (x, w, dy, relu_out, o0, o1)):
                    e = None
                if e is not None:
                    D = (dy.ravel() if e.dm == 0 else dy.T.ravel(), 0) + e.dv
                    Y = D if relu_out is None else (
                        (relu_out.ravel() if e.ym == 0 else relu_out.T.ravel(), 0) + e.yv)
                    WT = X = None
                    if e.dx is not None:
                        WT = (w.ravel() if e.wm == 0 else w.T.ravel(), 0) + e.wv
                        if o0 is None:
                            o0 = np.empty(e.dxshape, dt)
                    if e.dw is not None:
                        X = (x.ravel() if e.xm == 0 else x.T.ravel(), 0) + e.xv
                        if o1 is None:
                            o1 = np.empty((e.I, e.O), dt)
                    if e.need_db and o2 is None:
                        o2 = np.empty(e.O, dt)
                    _backward_run(e, D, Y, WT, X, x, o0, o1, o2, e.recs)
                    return o0, o1, o2
    return _backward_checked(x, w, dy, relu_out, need_dx, need_dw, need_db, out, accumulate, key)


def _backward_run(e, D, Y, WT, X, x, dx, dw, db, recs=None):
    """The kernels of one backward, as e (a Backward) says: dx, then dw (and db while
    packing d.T when its plan fuses them), then db alone. D, Y, WT, X: views of d, the
    ReLU output (D when not masked), w.T and x; dx, dw, db: C-ordered arrays of their
    shapes (dw 2-D); x: the array X views (copied to C order for a fused dw).
    recs: the call records of dx and dw (_record) of a cached call, else None, to make
    them from the views. Returns the records run (None where a product is not)."""
    E = K.engine
    p_dx = p_dw = None
    if e.dx is not None:
        g = e.dx
        C = (dx.ravel(), 0, e.I)
        p_dx = _record(g, D, WT, C, Y) if recs is None else recs[0]
        _gemm(g, p_dx, D[0], WT[0], C[0], Y[0])
    db_acc = None
    if e.dw is not None:
        g = e.dw
        plan = e.plans.dw
        part = None
        if plan.swap:  # dw.T = d.T @ x into per-thread float64 partials (db summed while
            # packing d.T, when the plan fuses it)
            if e.plans.copy_x:  # x is read in place along I
                X = view(np.ascontiguousarray(as_rows(x, e.I)))
            acc = np.empty((plan.threads, e.I * e.O))
            part = np.zeros((plan.threads, e.O if plan.want_db else 0))
            A, B, C, V = (D[0], D[1], D[3], D[2]), X, (acc.reshape(-1), 0, e.I), (Y[0], Y[1], Y[3], Y[2])
        else:  # dw = x.T @ d, written in place
            A, B, C, V = (X[0], X[1], X[3], X[2]), D, (dw.ravel(), 0, e.O), Y
        p_dw = _record(g, A, B, C, V) if recs is None else recs[1]
        _gemm(g, p_dw, A[0], B[0], C[0], V[0], db=part)
        if plan.swap:
            _merge(acc, dw, plan.swap, e.accumulate, e.merge_dw)
        if plan.want_db:
            db_acc = part
    if e.need_db:
        T = e.plans.db_threads
        if db_acc is None and T == 1:
            E.colsum_into(D, Y, e.masked, e.N, db, e.accumulate)
        else:
            if db_acc is None:
                db_acc = np.zeros((T, e.O))
                _launch(E.colsum, E.colsum_rows, T, D, Y, e.masked, e.N, db_acc)
            E.merge_part(0, db_acc, db[None], False, e.accumulate, 1)  # db (O,) as (1, O)
    return p_dx, p_dw


def _merge(acc, out, transposed, accumulate, T):
    _launch(K.engine.merge, K.engine.merge_part, T, acc, out, transposed, accumulate)


def _backward_checked(x, w, dy, relu_out, need_dx, need_dw, need_db, out, accumulate, key):
    """_backward with every check; caches the call under key (None: not cacheable)."""
    arrays = (x, w, dy, relu_out)
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
    I = 0
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
    X = view(as_rows(x, I)) if need_dw else None
    W = view(w) if need_dx else None
    threads = _threads_for(P.call_work(N, I, O, False, need_dx, need_dw))
    plans = P.call_plans(N, I, O, dtype.itemsize, threads or 1, x=None if X is None else X[2:],
                         w=None if W is None else W[2:], d=D[2:], masked=masked,
                         need_dx=bool(need_dx), need_dw=bool(need_dw), need_db=bool(need_db))
    e = _prepare_backward(plans, N, I, O, dy, x, w, relu_out, D, X, W, Y, masked, need_db,
                          accumulate)
    recs = _backward_run(e, D, Y, None if W is None else transposed(W), X, x,
                         dx.buf if need_dx else None, dw.buf if need_dw else None,
                         db.buf if need_db else None)
    if (key is not None and e.dm is not None and (not masked or e.ym is not None)
            and (not need_dw or e.xm is not None) and (not need_dx or e.wm is not None)
            and all(o is None or o.direct for o in (dx, dw, db))
            and all(a is b for a, b in zip(arrays, (x, w, dy, relu_out)))):
        _store(key, threads, e._replace(recs=recs))
    return (dx.done() if need_dx else None, dw.done() if need_dw else None,
            db.done() if need_db else None)


def _prepare_backward(plans, N, I, O, dy, x, w, relu_out, D, X, W, Y, masked, need_db, accumulate):
    """The Backward entry of a checked call (the fast path's modes, None where not cacheable)."""
    dtype = dy.dtype
    f64 = np.dtype(np.float64)
    g_dx = g_dw = None
    merge_dw = 1
    if plans.dx is not None:
        g_dx = _prepare(plans.dx, dtype, dtype)
    if plans.dw is not None:
        plan = plans.dw
        if plan.swap:
            g_dw = _prepare(plan, dtype, f64, partial=I * O)
        else:
            g_dw = _prepare(plan, dtype, dtype, accumulate=accumulate)
        merge_dw = plan.threads
    return Backward(P.gemm, plans, g_dx, g_dw, merge_dw,
                    None if X is None else _mode(x), None if X is None else X[2:],
                    None if W is None else _mode(w), None if W is None else (W[3], W[2]),
                    _mode(dy), D[2:], None if not masked else _mode(relu_out), Y[2:], N, I, O,
                    dy.shape[:-1] + (I,), masked, bool(need_db), bool(accumulate), None)
