"""The plan: every decision about how a call runs, in one place.

For a call's shapes, layouts, dtype, flags and thread count, ``gemm`` returns a
Plan: which operand is packed, the block sizes, serial or parallel and over
which axis. The kernels (lingrad.kernels.engine) only carry it out, and the
API only validates, allocates and dispatches. Every number used here is a named
constant of lingrad.kernels.config; ``explain`` says the same in words.

The three products, as C (M x N) = A (M x K) @ B (K x N):

    op        C      A      B     parallel over      packed
    forward   y      x      w     rows of y          w (once per call, all of it); x if not
                                                     contiguous along I
    dx        dx     d      w.T   rows of dx         w.T (once per call); d when masked or
                                                     not contiguous along O
    dw        dw.T   d.T    x     the batch (K)      d.T (with the mask; db summed there);
                                                     x is read in place
"""
from collections import namedtuple

from . import kernels as K

Plan = namedtuple("Plan", ["op", "M", "K", "N", "threads", "split", "blocks", "pack_a", "b_mode",
                           "masked", "want_db"])
Plan.__doc__ = """How one product runs.

op: "forward", "dx" or "dw"; M, K, N: C = A (M x K) @ B (K x N);
threads: 1 runs the serial kernel; split: 0 rows of C, 1 the summed axis (per-thread partials);
blocks: (MC, KC, KF) rows of A and values of k per block, and terms per float64 flush;
pack_a: A is packed (else read in place); b_mode: how B is read (engine.WHOLE: packed whole,
once; IN_PLACE: read where it is; BLOCK: packed KC rows at a time);
masked: the ReLU mask is applied while A is packed; want_db: db is summed while A is packed.
"""


def gemm(op: str, M: int, Kdim: int, N: int, itemsize: int, a_unit_k: bool, masked: bool,
         want_db: bool, threads: int) -> Plan:
    """The Plan for one product (see the module docstring).

    a_unit_k: A's values along k are adjacent in memory (x or dy in C order), so
    the micro-kernel can read A in place. threads: the thread count in force.
    """
    work = M * Kdim * N
    if op == "dw":
        # the batch is split: each thread needs a long enough share to amortise its partial
        T = min(threads, max(1, Kdim // K.KC_DW)) if work >= K.SERIAL_WORK else 1
        kf = K.KF if itemsize < 8 else K.KC_DW
        # x read in place, but packed per block when its rows are a multiple of 4 KiB apart
        # (they would all fall in the same L1 sets: 2048^3 dw 0.36x -> 0.55x numpy)
        b_mode = K.engine.BLOCK if (N * itemsize) % 4096 == 0 else K.engine.IN_PLACE
        return Plan(op, M, Kdim, N, T, 1, (K.MC_DW, K.KC_DW, kf), True, b_mode, masked, want_db)
    T = min(threads, max(1, M // K.MR)) if work >= K.SERIAL_WORK else 1
    pack_a = masked or not a_unit_k
    kc = max(1, Kdim) if Kdim <= K.KC_MAX else K.KC_BLOCK
    mc = K.MC_PACKED if pack_a else K.MC
    return Plan(op, M, Kdim, N, T, 0, (mc, kc, kc), pack_a, K.engine.WHOLE, masked, False)


def explain(plan: Plan) -> str:
    """The plan in words: for learners, and for anyone asking why a shape is slow."""
    mc, kc, kf = plan.blocks
    what = {"forward": "y = x @ w (+ b, ReLU in the epilogue)", "dx": "dx = d @ w.T",
            "dw": "dw.T = d.T @ x, db = d.sum(0)"}[plan.op]
    lines = [f"{plan.op}: {what}, as C ({plan.M} x {plan.N}) = A ({plan.M} x {plan.K}) @ B",
             f"  blocks: MC = {mc} rows of A, KC = {kc} values of k, micro-kernel {K.MR} x "
             f"{K.NV} vectors"]
    if plan.threads == 1:
        lines.append("  serial (engine.gemm_serial)")
    else:
        axis = "rows of C" if plan.split == 0 else "the batch, with per-thread float64 partials"
        lines.append(f"  parallel on {plan.threads} threads over {axis} (engine.gemm)")
    lines.append(f"  A: {'packed (engine.pack_a)' if plan.pack_a else 'read in place'}"
                 f"{', ReLU mask applied while packing' if plan.masked else ''}"
                 f"{', db summed while packing' if plan.want_db else ''}")
    lines.append("  B: " + {K.engine.WHOLE: "packed whole, once (engine.pack_whole_b)",
                            K.engine.IN_PLACE: "read in place (a last partial panel packed)",
                            K.engine.BLOCK: "packed KC rows at a time (engine.pack_b)"}[plan.b_mode])
    if plan.op == "dw" and kf < kc:
        lines.append(f"  float32 sums of {kf} terms are added into float64 partials")
    return "\n".join(lines)


def reduction(N: int, O: int, threads: int) -> int:
    """Threads for db alone (engine.colsum): one per share of at least REDUCE_ROWS rows."""
    return min(threads, max(1, N // K.REDUCE_ROWS)) if N * O >= K.SERIAL_WORK else 1
