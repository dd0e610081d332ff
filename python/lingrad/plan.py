"""The plan: every decision about how a call runs, in one place.

For a call's shapes, layouts, dtype, flags and thread count, ``gemm`` returns a
Plan: which operand is packed, the block sizes, serial or parallel and over
which axis. The kernels (lingrad.kernels.engine) only carry it out, and the
API only validates, allocates and dispatches. Every number used here is a named
constant of lingrad.kernels.config; ``explain`` says the same in words.

The three products, as C (M x N) = A (M x K) @ B (K x N):

    op        C      A      B     parallel over      packed
    forward   y      x      w     rows of y          at most NR / DOT_SHARE columns of y:
                                                     nothing (the dot kernel); else w (once per call, all of it) past
                                                     B_IN_PLACE_ROWS rows, else read in place;
                                                     x if not contiguous along I
    dx        dx     d      w.T   rows of dx         at most NR / DOT_SHARE columns, d unmasked:
                                                     nothing (the dot kernel); else w.T (once per call); d when masked or
                                                     not contiguous along O
    dw        dw     x.T    d     rows of dw         a batch up to DW_DIRECT_ROWS: nothing (d
                                                     per block when masked); float32 sums
                                                     past KF terms in equal chunks
    dw        dw.T   d.T    x     the batch (K)      a longer batch: d.T (with the mask; db
                                                     summed there); x read in place, or per
                                                     block when its rows are X_ALIASED_BYTES apart

A product summed over at most AXPY_MAX_K values runs as scaled rows of B added into each
row of C (engine.axpy_block), whatever the op (masked: dx only, the mask applied to each
value of d as it is read; a masked dw of a batch of 1-2 rows keeps the micro-kernel).
"""
import functools
from collections import namedtuple
from typing import Optional, Tuple

from . import kernels as K

Plan = namedtuple("Plan", ["op", "M", "K", "N", "threads", "split", "blocks", "pack_a", "b_mode",
                           "masked", "want_db", "swap"])
Plan.__doc__ = """How one product runs.

op: "forward", "dx" or "dw"; M, K, N: C = A (M x K) @ B (K x N), as the engine runs it;
threads: 1 runs the serial kernel; split: 0 rows of C, 1 the summed axis (per-thread partials);
blocks: (MC, KC, KF, block) rows of A and values of k per block, terms per float64 flush, and
the register block (config.BLOCKS: 0 MR x NV, 1 the wide MR_WIDE x NV_WIDE, 2 the tall
MR_TALL x 1 vector; ``register_block``);
pack_a: A is packed (else read in place); b_mode: how B is read (engine.WHOLE: packed whole,
once; IN_PLACE: read where it is; BLOCK: packed KC rows at a time);
masked: the operand the ReLU mask is applied to while it is packed (0 none, engine.MASK_A
or engine.MASK_B); want_db: db is summed while A is packed;
swap: dw runs as dw.T = d.T @ x into per-thread float64 partials, added up into dw
afterwards (engine.merge); else dw = x.T @ d, written in place.
"""


@functools.lru_cache(maxsize=1024)
def gemm(op: str, M: int, Kdim: int, N: int, itemsize: int, a_unit_k: bool, b_unit_n: bool,
         masked: bool, want_db: bool, threads: int) -> Plan:
    """The Plan for one product, given as C (M x Kdim) @ (Kdim x N) in the layer's terms:
    forward x @ w, dx d @ w.T, dw x.T @ d (see the module docstring).

    a_unit_k: A's values along k are adjacent in memory (x or dy in C order), so
    the micro-kernel can read A in place; b_unit_n: B's rows are contiguous (w, or d),
    so full panels of B can be read in place. threads: the thread count in force.
    Plans are cached by their arguments (all plain values; a Plan is immutable), so a
    training loop's repeated shapes cost a dictionary lookup.
    """
    work = M * Kdim * N
    E = K.engine
    kc = max(1, Kdim) if Kdim <= K.KC_MAX else K.KC_BLOCK
    if op == "dw" and Kdim > K.DW_DIRECT_ROWS:
        # a long batch is split over threads, each into its own float64 partial of dw.T:
        # dw.T = d.T @ x, d.T packed with the mask (db summed there), x read in place along I.
        # An unmasked d.T of at most MR rows (one micro-panel) is read in place, and its db
        # summed alone (colsum, short rows as one run): a row of d per k either way, and
        # packing one narrow panel costs more than it saves (Zen 5, 1 thread, float32 dw,
        # packed / in place, us: 50000 x 50 -> 1 287-315 / 169-205, 50000 x 50 -> 4 352-426
        # / 216-224; wider d.T measured no better in place; db alone of 50000 x 1: 4 us).
        # So is an unmasked d.T of any height when dw.T has one panel of columns (I <= NR):
        # each packed value would be read once (Zen 4, 2026-12-06, 1 thread, float32, ms,
        # packed / in place, dw and dw + db: 50000 x 16 -> 256 14.9 / 9.2 and 15.2 / 11.1,
        # 50000 x 8 -> 256 16.1 / 9.6 and 16.4 / 11.4, 50000 x 16 -> 64 2.8 / 1.9 and 3.6 /
        # 1.6; 20000 x 784 -> 50, many panels: 22.8 / 22.4, the same)
        T = min(threads, max(1, Kdim // K.DW_SPLIT_ROWS)) if work >= K.SERIAL_WORK else 1
        kf = K.KF if itemsize < 8 else K.KC_DW
        b_mode = E.BLOCK if (M * itemsize) % K.X_ALIASED_BYTES == 0 else E.IN_PLACE
        block = register_block(M, None, itemsize)
        pack = bool(masked or N > K.MR and M > tile_columns(block, itemsize))
        return Plan(op, N, Kdim, M, T, 1, (K.MC_DW, K.KC_DW, kf, block), pack,
                    b_mode,
                    E.MASK_A if masked else 0, bool(want_db and pack), True)
    T = min(threads, max(1, M // K.MR)) if work >= K.SERIAL_WORK else 1
    if Kdim <= K.AXPY_MAX_K and (not masked or op == "dx"):
        # a summed axis of a value or two (an outer product): each row of C is a few
        # scaled rows of B (engine.axpy_block; dx's ReLU mask applied to each scalar of
        # d), rows of C over threads
        return Plan(op, M, Kdim, N, T, 0, (K.MR, Kdim, Kdim, 0), False, E.AXPY,
                    E.MASK_A if masked else 0, False, False)
    if op == "dw":
        # a short batch: dw = x.T @ d with x.T and d read in place, rows of dw over threads;
        # float32 sums longer than KF terms are split into chunks of equal length, each
        # summed in registers and added into dw
        chunks = max(1, -(-Kdim // K.KF)) if itemsize < 8 else 1
        b_mode = E.IN_PLACE if b_unit_n and not masked else E.BLOCK
        block = register_block(N, Kdim, itemsize)
        return Plan(op, M, Kdim, N, T, 0, (row_block(Kdim, N, False, block), kc,
                                           max(1, -(-Kdim // chunks)), block), False, b_mode,
                    E.MASK_B if masked else 0, False, False)
    narrow = N * K.DOT_SHARE <= K.NV * (K.VECTOR_BYTES // itemsize) and dot_pays(N, Kdim, itemsize)
    if (narrow and (a_unit_k or masked)
            or a_unit_k and not masked and not b_unit_n and M <= K.DOT_MAX_ROWS):
        # few output columns, or a short batch whose B would be packed whole (B.T's rows,
        # w of a dx, are contiguous): each output one dot product along k (the dot
        # kernel), A and B.T read by rows, rows of C over threads; a masked d (dx's ReLU
        # mask) is copied masked, a block of rows at a time, whatever its layout
        T = min(threads, max(1, M // K.DOT_ACC)) if work >= K.SERIAL_WORK else 1
        return Plan(op, M, Kdim, N, T, 0, (K.DOT_ACC, Kdim, Kdim, 0), False, E.DOT,
                    E.MASK_A if masked else 0, False, False)
    pack_a = masked or not a_unit_k
    block = register_block(N, Kdim, itemsize)
    mc = row_block(Kdim, N, pack_a, block)
    # B packed whole once per call serves every thread's rows; on one thread, packing it a
    # KC block at a time is the same work without a kernel call of its own
    b_mode = (E.IN_PLACE if b_unit_n and M <= K.B_IN_PLACE_ROWS else E.WHOLE if T > 1 else
              E.BLOCK)
    return Plan(op, M, Kdim, N, T, 0, (mc, kc, kc, block), pack_a, b_mode,
                E.MASK_A if masked else 0, False, False)


def row_block(Kdim: int, N: int, packed: bool, block: int) -> int:
    """MC, the rows of C per block of the forward, dx and short-batch dw: MC_GROUP for a
    short sum and a small B (Kdim * N <= GROUP_KN), so that one micro-kernel call runs a
    column of whole tiles down C; else MC, or MC_PACKED when A is packed; at least one tile
    of the register block's rows (kernels/config.py)."""
    mc = K.MC_GROUP if Kdim * N <= K.GROUP_KN else K.MC_PACKED if packed else K.MC
    return max(mc, K.BLOCKS[block][0])


def dot_pays(N: int, Kdim: int, itemsize: int) -> bool:
    """Whether the dot kernel beats the tall register block on C's N columns summed over
    Kdim: N * (ceil(Kdim / L) + DOT_REDUCE) <= TALL_PER_K * Kdim vector FMAs per row of C
    (L lanes; kernels/config.py has the model and its measurements). Always, for N wider
    than the tall block or where it is the MR x NV block itself."""
    lanes = K.VECTOR_BYTES // itemsize
    if N > lanes or K.BLOCKS[2] == K.BLOCKS[0]:
        return True
    return N * (-(-Kdim // lanes) + K.DOT_REDUCE) <= K.TALL_PER_K * Kdim


def register_block(N: int, Kdim: Optional[int], itemsize: int) -> int:
    """The register block (kernels/config.py BLOCKS) for a product with N columns of C,
    summed over Kdim values (None: into float64 partials, the long-batch dw): 2, the tall
    MR_TALL x 1 vector, when N fits in one vector (the MR x NV block would fill half of its
    columns or less); 1, the wide MR_WIDE x NV_WIDE, when the share of its columns that N
    fills is at least WIDE_FILL times the MR x NV block's and, for a C written in place, the
    sum is at least WIDE_MIN_K long; else 0, MR x NV."""
    if 0 < N <= K.VECTOR_BYTES // itemsize and K.BLOCKS[2] != K.BLOCKS[0]:
        return 2
    if N < 1 or K.NV_WIDE == K.NV or Kdim is not None and Kdim < K.WIDE_MIN_K:
        return 0

    def fill(block: int) -> float:
        nr = tile_columns(block, itemsize)
        return N / (-(-N // nr) * nr)
    return int(fill(1) >= K.WIDE_FILL * fill(0))


def tile_columns(block: int, itemsize: int) -> int:
    """NR, the columns of the register block a plan's blocks[3] names (engine.tile_shape's)."""
    return K.BLOCKS[block][1] * (K.VECTOR_BYTES // itemsize)


def _block_words(block: int) -> str:
    rows, nv = K.BLOCKS[block]
    return (f"{rows} rows x {nv} vector{'s' if nv > 1 else ''}"
            + {1: " (the wide block: N fills it)", 2: " (the tall block: N fits in one vector)"}
            .get(block, ""))


def explain(plan: Plan) -> str:
    """The plan in words: for learners, and for anyone asking why a shape is slow.
    lingrad.explain describes whole calls (every plan a call runs) with these lines."""
    mc, kc, kf, block = plan.blocks
    E = K.engine
    what = {"forward": "y = x @ w (+ b, ReLU in the epilogue)", "dx": "dx = d @ w.T",
            "dw": "dw.T = d.T @ x" if plan.swap else "dw = x.T @ d"}[plan.op]
    blocks = {
        E.DOT: f"KC = {kc} values of k (all of them), dot kernel: at most NR / {K.DOT_SHARE} "
               f"columns (DOT_SHARE), each output a dot product along k; {K.DOT_ACC} "
               f"accumulators, columns in groups of {K.DOT_COLS}",
        E.AXPY: f"KC = {kc} values of k (all of them, at most AXPY_MAX_K = {K.AXPY_MAX_K}): "
                f"each row of C is {kc} scaled rows of B"}.get(
        plan.b_mode, f"MC = {mc} rows of A, KC = {kc} values of k, micro-kernel "
                     + _block_words(block))
    lines = [f"{plan.op}: {what}, as C ({plan.M} x {plan.N}) = A ({plan.M} x {plan.K}) @ B "
             f"({plan.K} x {plan.N})", f"  blocks: {blocks} (kernels/config.py)"]
    chain = {E.DOT: "narrow_task -> dot_block -> kernels/micro.py dot",
             E.AXPY: "narrow_task -> axpy_block"}.get(
        plan.b_mode, "gemm_task -> gemm_block -> kernels/micro.py micro")
    if plan.threads == 1:
        lines.append(f"  serial: kernels/engine.py {chain}")
    else:
        axis = ("rows of C (each thread owns its rows)" if plan.split == 0 else
                "the batch (k), each thread into its own float64 partial")
        lines.append(f"  parallel on {plan.threads} threads over {axis}: kernels/engine.py "
                     f"{'narrow' if plan.b_mode in (E.DOT, E.AXPY) else 'gemm'} (prange) -> {chain}")
    mask_a = ("" if plan.masked != E.MASK_A else ", ReLU mask applied to each value as it is read"
              if plan.b_mode == E.AXPY else ", ReLU mask applied while packing")
    a_read = ("packed MC x KC at a time into MR-row panels (engine.pack_a)" if plan.pack_a else
              f"copied with the ReLU mask, {K.DOT_ACC} rows at a time (engine.masked_rows)"
              if plan.b_mode == E.DOT and plan.masked else "read in place")
    if plan.b_mode == E.DOT:
        mask_a = ""
    lines.append(f"  A: {a_read}"
                 f"{mask_a}"
                 f"{', db summed while packing' if plan.want_db else ''}")
    lines.append("  B: " + {E.WHOLE: "packed whole, once per call, into NR-column panels (engine.pack_whole_b)",
                            E.IN_PLACE: "read in place (edge panels by masked loads)",
                            E.BLOCK: "packed KC rows at a time (engine.pack_b)",
                            E.DOT: "read by columns (B.T's rows): in place when they are "
                                   "contiguous, else copied once per call and thread",
                            E.AXPY: "read by rows: in place when they are contiguous, else "
                                    "copied once per call and thread"}[plan.b_mode]
                 + (", ReLU mask applied while packing" if plan.masked == E.MASK_B else ""))
    if plan.swap:
        lines.append("  C: per-thread float64 partials of dw.T, added up and rounded once into dw "
                     "(engine.merge)")
    if plan.op == "dw" and kf < kc:
        lines.append(f"  float32 sums of {kf} terms (at most KF) are added into "
                     + ("the float64 partials" if plan.swap else "dw, a chunk at a time"))
    return "\n".join(lines)


@functools.lru_cache(maxsize=1024)
def reduction(N: int, O: int, threads: int) -> int:
    """Threads for db alone (engine.colsum): one per share of at least REDUCE_ROWS rows."""
    return min(threads, max(1, N // K.REDUCE_ROWS)) if N * O >= K.SERIAL_WORK else 1


# ---- the plans of one call: shared by the API (lingrad.api) and lingrad.explain ----

Calls = namedtuple("Calls", ["forward", "dx", "dw", "db_threads", "copy_x"])
Calls.__doc__ = """Every plan one call of the API runs, in the order it runs them.

forward, dx, dw: the Plan of each product, or None where the call does not run it;
db_threads: the threads of db summed alone (engine.colsum), 0 where db is not summed alone
(not wanted, or summed while dw packs d.T); copy_x: x is copied to C order for dw (the
long-batch dw reads x in place along I).
"""

Strides = Tuple[int, int]  # (row stride, column stride) in elements, as _checks.view gives them


def call_work(N: int, I: int, O: int, forward: bool, need_dx: bool = False,
              need_dw: bool = False) -> int:
    """The multiply-adds that decide whether a call may use threads (``threads``): N*I*O for
    the forward and for a backward with dx or dw, N*O for db alone."""
    return N * I * O if forward or need_dx or need_dw else N * O


def call_plans(N: int, I: int, O: int, itemsize: int, threads_in_force: int, *,
               forward: bool = False, x: Optional[Strides] = None, w: Optional[Strides] = None,
               d: Optional[Strides] = None, masked: bool = False, need_dx: bool = False,
               need_dw: bool = False, need_db: bool = False) -> Calls:
    """The plans of one call of lingrad.linear (forward=True) or of linear_backward (the
    need_* flags), for x (N, I), w (I, O), dy (N, O) viewed with strides x, w, d
    (``(rs, cs)`` in elements, as ``_checks.view`` gives them; only those the call reads).

    threads_in_force: Numba's thread count in the calling thread; only read when the
    call's work (``call_work``) reaches SERIAL_WORK. The API and lingrad.explain both
    call this, so what explain says is what the API runs.
    """
    work = call_work(N, I, O, forward, need_dx, need_dw)
    T = threads_in_force if work >= K.SERIAL_WORK else 1
    if forward:
        assert x is not None and w is not None
        return Calls(gemm("forward", N, I, O, itemsize, x[1] == 1, w[1] == 1, False, False, T),
                     None, None, 0, False)
    dx = dw = None
    if need_dx:  # dx = d @ w.T: B is w.T, whose column stride is w's row stride
        assert w is not None and d is not None
        dx = gemm("dx", N, O, I, itemsize, d[1] == 1, w[0] == 1, masked, False, T)
    if need_dw:  # dw = x.T @ d: A is x.T, contiguous along k (the batch) when x's rows are
        assert x is not None and d is not None
        dw = gemm("dw", I, N, O, itemsize, x[0] == 1, d[1] == 1, masked, need_db, T)
    fused = dw is not None and dw.want_db
    db_threads = reduction(N, O, T) if need_db and not fused else 0
    copy_x = dw is not None and dw.swap and x is not None and x[1] != 1
    return Calls(None, dx, dw, db_threads, copy_x)
