"""lingrad.explain: what the plan runs for a call's shapes, dtype and flags, in words.

    print(lingrad.explain(50000, 784, 50))                 # x (50000, 784), w (784, 50)
    print(lingrad.explain((64, 784, 50), dtype="float64", relu=True, threads=1))
    python -m lingrad explain 50000x784x50 --relu --threads 2

For the forward (lingrad.linear) and the backward (lingrad.linear_backward) it says which
path each product takes, the block sizes, serial or parallel and over which axis, what
is packed, which fusions apply and which files and functions do the work. The plans come
from lingrad.plan.call_plans, the function the API itself calls, on the strides the
API's views of C- or Fortran-ordered operands would have: what explain says is what a
call runs.
"""
import argparse
import re
from typing import Optional, Sequence, Tuple, Union

import numba
import numpy as np
import numpy.typing as npt

from . import kernels as K
from . import plan as P

Shape = Union[int, str, Sequence[int]]


def view_strides(rows: int, cols: int, layout: str) -> Tuple[int, int]:
    """(rs, cs) in elements of the view lingrad._checks.view makes of a (rows, cols) array
    in C ("C") or Fortran ("F") order: a C-contiguous array (every C array, and an F array
    with one row or one column) is viewed as C order."""
    if layout not in ("C", "F"):
        raise ValueError(f"layout must be 'C' or 'F', got {layout!r}")
    if layout == "C" or rows <= 1 or cols <= 1:
        return cols, 1
    return 1, rows


def _dims(shape: Shape, I: Optional[int], O: Optional[int]) -> Tuple[int, int, int]:
    if isinstance(shape, str):
        parts = re.split(r"[x×, ]+", shape.strip())
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"shape {shape!r}: expected NxIxO, e.g. 50000x784x50")
        dims = tuple(int(p) for p in parts)
    elif isinstance(shape, (int, np.integer)):
        if I is None or O is None:
            raise ValueError("explain(N, I, O): give I and O with an integer N, "
                             "or a shape (N, I, O) or 'NxIxO'")
        dims = (int(shape), int(I), int(O))
    else:
        dims = tuple(int(d) for d in shape)
        if len(dims) == 2 and O is not None:  # x's shape (N, I), then O
            dims = dims + (int(O),)
        if len(dims) != 3:
            raise ValueError(f"shape {tuple(shape)}: expected (N, I, O), or x's (N, I) and O")
    if min(dims) < 0:
        raise ValueError(f"shape {dims}: sizes must be >= 0")
    return dims[0], dims[1], dims[2]


def plans(shape: Shape, I: Optional[int] = None, O: Optional[int] = None, *,
          dtype: "npt.DTypeLike" = np.float32, relu: bool = False, need_dx: bool = True,
          need_dw: bool = True, need_db: bool = True, threads: Optional[int] = None,
          x_layout: str = "C", w_layout: str = "C", dy_layout: str = "C") -> Tuple[P.Calls, P.Calls]:
    """The plans (lingrad.plan.Calls) of lingrad.linear and of lingrad.linear_backward
    (with relu_out= when relu) for these shapes: (forward, backward)."""
    N, I_, O_ = _dims(shape, I, O)
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype {dt}: lingrad works on float32 or float64")
    T = numba.get_num_threads() if threads is None else int(threads)
    if T < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    x = view_strides(N, I_, x_layout)
    w = view_strides(I_, O_, w_layout)
    d = view_strides(N, O_, dy_layout)
    fwd = P.call_plans(N, I_, O_, dt.itemsize, T, forward=True, x=x, w=w)
    bwd = P.call_plans(N, I_, O_, dt.itemsize, T, x=x if need_dw else None,
                       w=w if need_dx else None, d=d, masked=bool(relu), need_dx=need_dx,
                       need_dw=need_dw, need_db=need_db)
    return fwd, bwd


def _indent(text: str, by: str = "  ") -> str:
    return "\n".join(by + line for line in text.splitlines())


def _path(plan: P.Plan) -> str:
    E = K.engine
    if plan.b_mode == E.AXPY:
        return (f"a summed axis of {plan.K} value(s) (<= AXPY_MAX_K = {K.AXPY_MAX_K}): each row "
                f"of the output is {plan.K} scaled row(s) of B, written in one pass per k")
    if plan.b_mode == E.DOT:
        return (f"{plan.N} output column(s): each output one dot product along k (the dot "
                f"kernel), " + ("d copied masked a block of rows at a time" if plan.masked else
                                "nothing packed"))
    if plan.op == "dw":
        if plan.swap:
            return (f"long batch (N = {plan.K} > DW_DIRECT_ROWS = {K.DW_DIRECT_ROWS}): dw.T = d.T @ x "
                    f"split over the batch into per-thread float64 partials")
        return (f"short batch (N = {plan.K} <= DW_DIRECT_ROWS = {K.DW_DIRECT_ROWS}): dw = x.T @ d, "
                f"x.T and d read where they are, rows of dw over threads")
    b = "w" if plan.op == "forward" else "w.T"
    if plan.b_mode == E.IN_PLACE:
        return (f"short batch (N = {plan.M} <= B_IN_PLACE_ROWS = {K.B_IN_PLACE_ROWS}, {b} contiguous "
                f"along its rows): {b} read in place, not packed")
    if plan.b_mode == E.WHOLE:
        return f"{b} packed whole once per call, every thread's row blocks read the same panels"
    return f"{b} packed a KC block at a time (one thread: each block once, every row block reads it)"


def describe(fwd: P.Calls, bwd: P.Calls, N: int, I: int, O: int, dtype: "npt.DTypeLike",
             relu: bool, threads: int, layouts: Tuple[str, str, str] = ("C", "C", "C"),
             bias: bool = True) -> str:
    """The text of explain for these plans (also usable on plans recorded from real calls)."""
    dt = np.dtype(dtype)
    nr = K.NV * K.VECTOR_BYTES // dt.itemsize
    lines = [f"lingrad.explain: x ({N}, {I}) @ w ({I}, {O}){' + b' if bias else ''}"
             f"{', ReLU' if relu else ''}, {dt.name}, x {layouts[0]} / w {layouts[1]} / "
             f"dy {layouts[2]} order, {threads} thread{'s' if threads != 1 else ''} in force",
             f"micro-kernel: {K.MR} x {nr} ({K.MR} rows x {K.NV} vectors of {K.VECTOR_BYTES} bytes, "
             f"kernels/micro.py micro), or the wide {K.MR_WIDE} x {nr * K.NV_WIDE // K.NV} where "
             f"the columns fill it, or the tall {K.MR_TALL} x {nr // K.NV} where they fit in one "
             f"vector (plan.register_block); work below SERIAL_WORK = {K.SERIAL_WORK} "
             f"multiply-adds runs serially", ""]
    f = fwd.forward
    args = "x, w, b" if bias else "x, w"
    lines.append(f"forward: lingrad.linear({args}{', relu=True' if relu else ''}) -> y ({N}, {O})")
    lines.append(f"  path: {_path(f)}")
    lines.append(_indent(P.explain(f)))
    fused = [n for n, on in (("+ b", bias), ("ReLU", relu)) if on]
    lines.append("  fusions: " + (" and ".join(fused) + " applied in the micro-kernel's epilogue, "
                                  "in registers, on the last k block (no second pass over y)"
                                  if fused else "none (no bias, no ReLU)"))
    lines.append("")
    wanted = [g for g, p in (("dx", bwd.dx), ("dw", bwd.dw), ("db", bwd.db_threads or
                                                             (bwd.dw is not None and bwd.dw.want_db)))
              if p]
    lines.append(f"backward: lingrad.linear_backward(x, w, dy{', relu_out=y' if relu else ''}) -> "
                 f"{', '.join(wanted) if wanted else 'nothing'}"
                 + ("   (d = where(y > 0, dy, 0), masked on the fly)" if relu else "   (d = dy)"))
    for plan in (bwd.dx, bwd.dw):
        if plan is None:
            continue
        lines.append(f"  path: {_path(plan)}")
        lines.append(_indent(P.explain(plan)))
        fus = []
        if plan.masked:
            fus.append("the ReLU mask applied while d is packed (no masked copy of dy)"
                       if plan.b_mode != K.engine.DOT else
                       "the ReLU mask applied while a block of d is copied (no masked copy of "
                       "all of dy)")
        if plan.want_db:
            fus.append("db summed while d.T is packed (no second pass over dy)")
        lines.append("  fusions: " + ("; ".join(fus) if fus else "none"))
    if bwd.copy_x:
        lines.append("  x is copied once to C order first (dw's long-batch path reads x along I)")
    if bwd.db_threads:
        T = bwd.db_threads
        run = ("serial: kernels/engine.py colsum_into -> colsum_rows; float64 sums rounded once "
               "into db" if T == 1 else
               f"parallel on {T} threads over the batch, each into its own float64 partial: "
               f"kernels/engine.py colsum (prange) -> colsum_rows; float64 sums rounded once "
               f"into db (engine.merge_part)")
        lines.append(f"  db = d.sum(0), alone: {run}"
                     f"{'; the ReLU mask applied as d is read' if relu else ''}")
    return "\n".join(lines)


def explain(shape: Shape, I: Optional[int] = None, O: Optional[int] = None, *,
            dtype: "npt.DTypeLike" = np.float32, relu: bool = False, bias: bool = True,
            need_dx: bool = True, need_dw: bool = True, need_db: bool = True,
            threads: Optional[int] = None, layout: str = "C", x_layout: Optional[str] = None,
            w_layout: Optional[str] = None, dy_layout: Optional[str] = None) -> str:
    """What lingrad runs for a linear layer of these shapes, forward and backward, in words.

    shape: N with I and O, or (N, I, O), or x's shape (N, I) with O, or "NxIxO".
    dtype: float32 or float64. relu: the forward with relu=True, the backward with
    relu_out=. bias: the forward adds b. need_dx / need_dw / need_db: as linear_backward.
    threads: the thread count in force (default: Numba's, in this thread).
    layout: "C" or "F" for x, w and dy; x_layout / w_layout / dy_layout override one.
    Returns the text; the plans behind it are ``lingrad.explain_plans`` (same arguments
    but bias and the layouts, given as x_layout, w_layout, dy_layout).
    """
    lay = (x_layout or layout, w_layout or layout, dy_layout or layout)
    N, I_, O_ = _dims(shape, I, O)
    T = numba.get_num_threads() if threads is None else int(threads)
    fwd, bwd = plans((N, I_, O_), dtype=dtype, relu=relu, need_dx=need_dx, need_dw=need_dw,
                     need_db=need_db, threads=T, x_layout=lay[0], w_layout=lay[1],
                     dy_layout=lay[2])
    return describe(fwd, bwd, N, I_, O_, dtype, relu, T, lay, bias)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lingrad explain",
                                 description="what lingrad's plan runs for a linear layer's shapes")
    ap.add_argument("shape", help="NxIxO: x (N, I), w (I, O), e.g. 50000x784x50")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--relu", action="store_true", help="forward with relu=True, backward with relu_out=")
    ap.add_argument("--no-bias", action="store_true", help="the forward without b")
    ap.add_argument("--threads", type=int, default=None, help="thread count in force (default: Numba's)")
    ap.add_argument("--layout", choices=["C", "F"], default="C", help="order of x, w and dy")
    for name in ("x", "w", "dy"):
        ap.add_argument(f"--{name}-layout", choices=["C", "F"], default=None,
                        help=f"order of {name} (overrides --layout)")
    for g in ("dx", "dw", "db"):
        ap.add_argument(f"--no-{g}", action="store_true", help=f"the backward without {g}")
    a = ap.parse_args(argv)
    try:
        print(explain(a.shape, dtype=a.dtype, relu=a.relu, bias=not a.no_bias,
                      need_dx=not a.no_dx, need_dw=not a.no_dw, need_db=not a.no_db,
                      threads=a.threads, layout=a.layout, x_layout=a.x_layout,
                      w_layout=a.w_layout, dy_layout=a.dy_layout))
    except (TypeError, ValueError) as e:
        ap.error(str(e))
    return 0
