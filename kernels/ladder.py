"""The optimisation ladder: the layer's three products, eight ways, from the formula to the engine.

    weight gradient   dw[i, j] = sum_n x[n, i] * dy[n, j]    numpy: x.T @ dy   (+ db = dy.sum(0), rung 8)
    forward           y[n, j]  = sum_i x[n, i] * w[i, j]     numpy: x @ w      (+ b, then ReLU, rung 8)
    input gradient    dx[n, i] = sum_j dy[n, j] * w[i, j]    numpy: dy @ w.T   (dy masked by y > 0, rung 8)

shapes: x (N, I), w (I, O), b (O,), dy (N, O), dw (I, O), y (N, O), dx (N, I); all C order.

    rung 1  *_naive      the formula's loops, as written
    rung 2  *_rows       loop order: the innermost loop walks contiguous memory
    rung 3  *_register   register blocking: a 4x4 block of the left operand in scalars (madd4x4)
    rung 4  *_micro      the register micro-kernel: an MR x NR tile of the *output* in registers
                         for the whole sum (micro.micro, the production micro-kernel)
    rung 5  *_packed     packing: the operand read as NR-wide vectors is copied into micro-panels
    rung 6  *_blocked    the five loops: KC x MC blocks, packed per block, stay in L2 / L1
    rung 7  *_parallel   threads (prange), race-free by construction
    rung 8  *_fused      fusion: bias + ReLU in the micro-kernel's epilogue (forward), db summed
                         while dy is packed (dw), the ReLU mask applied while dy is packed (dx)

From rung 3 on every product is one problem, C = A @ B:

    forward   C = y     A = x      B = w       summed axis i (I)
    dx        C = dx    A = dy     B = w.T     summed axis j (O)
    dw        C = dw.T  A = dy.T   B = x       summed axis n, the batch (rungs 4-8; rung 3: dw = x.T @ dy)

Rungs 4-8 hand operands to the micro-kernel as views ``(buf, off, rs, cs)``: a
flat array and the offset, row stride and column stride of a matrix in it, so
a transpose (dy.T, w.T) is a pair of strides, never a copy. Rungs 4-8 are
written here, in this file, from the same ideas as the engine
(kernels/engine.py), which lingrad.linear / weight_grad / input_grad run;
rung 8 is the engine's technique (docs/ladder.md compares them). Every rung
overwrites its output (never reads it first). Block sizes are arguments, so the
tests can use odd ones; python -m lingrad ladder passes kernels/config.py's.
"""
import numpy as np
from numba import njit, prange

from .config import JIT, KF, MR, MR_WIDE, NV, NV_WIDE, PJIT
from .engine import tile_shape
from .micro import micro


@njit(**JIT)
def relu(v):
    """max(v, 0) with NaN propagated, as numpy's np.maximum(v, 0)."""
    return v if (v > 0 or v != v) else 0.0


# ---- rung 1: the formula's loops ---------------------------------------------
@njit(**JIT)
def dw_naive(x, dy, dw):
    """Rung 1. dw[i, j] = sum_n x[n, i] * dy[n, j], loops in the formula's order (i, j, n).

    shapes: x (N, I), dy (N, O), dw (I, O).   numpy: dw[:] = x.T @ dy
    The summed index n is innermost, so x is read down a column (a stride of I
    elements, a new cache line at every step) and so is dy. Serial.
    """
    N, I = x.shape
    O = dy.shape[1]
    for i in range(I):
        for j in range(O):
            s = dw.dtype.type(0)
            for n in range(N):
                s += x[n, i] * dy[n, j]
            dw[i, j] = s


@njit(**JIT)
def y_naive(x, w, y):
    """Rung 1. y[n, j] = sum_i x[n, i] * w[i, j], loops in the formula's order (n, j, i).

    shapes: x (N, I), w (I, O), y (N, O).   numpy: y[:] = x @ w
    x is read along its row (contiguous), w down a column (stride O). Serial.
    """
    N, I = x.shape
    O = w.shape[1]
    for n in range(N):
        for j in range(O):
            s = y.dtype.type(0)
            for i in range(I):
                s += x[n, i] * w[i, j]
            y[n, j] = s


# ---- rung 2: loop order --------------------------------------------------------
@njit(**JIT)
def dw_rows(x, dy, dw):
    """Rung 2. dw = sum over n of the outer product x[n, :] (x) dy[n, :], loops (n, i, j).

    shapes: x (N, I), dy (N, O), dw (I, O).   numpy: dw[:] = x.T @ dy
    The same sum as rung 1, reordered: one rank-1 update per row n of the batch.
    This is the lesson's (x[:, :, None] * dy[:, None, :]).sum(0) without its
    (N, I, O) temporary: each outer product is added into dw as soon as it is
    formed. Innermost loop over j: dy[n, :] and dw[i, :] are contiguous, so it
    vectorises; x is read row by row, once. Serial.
    """
    N, I = x.shape
    O = dy.shape[1]
    dw[:] = 0
    for n in range(N):
        for i in range(I):
            s = x[n, i]
            for j in range(O):
                dw[i, j] += s * dy[n, j]


@njit(**JIT)
def dx_naive(dy, w, dx):
    """Rung 1. dx[n, i] = sum_j dy[n, j] * w[i, j], loops in the formula's order (n, i, j).

    shapes: dy (N, O), w (I, O), dx (N, I).   numpy: dx[:] = dy @ w.T
    Both dy[n, :] and w[i, :] are read along a row (contiguous): a dot product
    of length O per output, summed with horizontal adds. Serial.
    """
    N, O = dy.shape
    I = w.shape[0]
    for n in range(N):
        for i in range(I):
            s = dx.dtype.type(0)
            for j in range(O):
                s += dy[n, j] * w[i, j]
            dx[n, i] = s


@njit(**JIT)
def y_rows(x, w, y):
    """Rung 2. y[n, :] = sum_i x[n, i] * w[i, :], loops (n, i, j).

    shapes: x (N, I), w (I, O), y (N, O).   numpy: y[:] = x @ w
    Row n of y is built as I scaled copies of rows of w (axpy). Innermost loop
    over j: w[i, :] and y[n, :] are contiguous, so it vectorises. Serial.
    """
    N, I = x.shape
    O = w.shape[1]
    y[:] = 0
    for n in range(N):
        for i in range(I):
            s = x[n, i]
            for j in range(O):
                y[n, j] += s * w[i, j]


@njit(**JIT)
def dx_rows(dy, w, dx):
    """Rung 2. dx[n, :] = sum_j dy[n, j] * w.T[j, :], loops (n, j, i), on a transposed copy of w.

    shapes: dy (N, O), w (I, O), dx (N, I).   numpy: dx[:] = dy @ w.T
    The mirror of y_rows: row n of dx is built from O scaled rows of w.T (axpy).
    w.T is copied once to C order (I x O values), so the innermost loop over i
    is contiguous in w.T[j, :] and dx[n, :] and vectorises, where rung 1 needed
    a horizontal sum per output. Serial.
    """
    N, O = dy.shape
    wt = np.ascontiguousarray(w.T)
    dx[:] = 0
    for n in range(N):
        for j in range(O):
            s = dy[n, j]
            for i in range(wt.shape[1]):
                dx[n, i] += s * wt[j, i]


# ---- rung 3: register blocking (one micro-kernel for both products) ------------
@njit(**JIT)
def madd(a, b, c, m0, m1, k0, k1):
    """c[m0:m1, :] += a[m0:m1, k0:k1] @ b[k0:k1, :], plain loops (m, k, j). Serial.

    shapes: a (M, K), b (K, P), c (M, P). The edge loop of madd_tiles: rows and
    k-steps left over when a size is not a multiple of 4.
    """
    for m in range(m0, m1):
        for k in range(k0, k1):
            s = a[m, k]
            for j in range(c.shape[1]):
                c[m, j] += s * b[k, j]


@njit(**JIT)
def madd4x4(a, b, c, m, k):
    """The micro-kernel: c[m:m+4, :] += a[m:m+4, k:k+4] @ b[k:k+4, :]. Serial.

    shapes: a (M, K), b (K, P), c (M, P); needs m + 4 <= M and k + 4 <= K.
    The 4x4 block of a is loaded once into 16 scalars (registers) and reused
    for every j. Per j: 4 loads of b and 4 loads + 4 stores of c feed 16
    multiply-adds, where rung 2 needed 1 load of b and 1 load + 1 store of c
    per multiply-add. The j loop is contiguous in b and c and vectorises.
    """
    a00, a01, a02, a03 = a[m, k], a[m, k + 1], a[m, k + 2], a[m, k + 3]
    a10, a11, a12, a13 = a[m + 1, k], a[m + 1, k + 1], a[m + 1, k + 2], a[m + 1, k + 3]
    a20, a21, a22, a23 = a[m + 2, k], a[m + 2, k + 1], a[m + 2, k + 2], a[m + 2, k + 3]
    a30, a31, a32, a33 = a[m + 3, k], a[m + 3, k + 1], a[m + 3, k + 2], a[m + 3, k + 3]
    for j in range(c.shape[1]):
        b0, b1, b2, b3 = b[k, j], b[k + 1, j], b[k + 2, j], b[k + 3, j]
        c[m, j] += a00 * b0 + a01 * b1 + a02 * b2 + a03 * b3
        c[m + 1, j] += a10 * b0 + a11 * b1 + a12 * b2 + a13 * b3
        c[m + 2, j] += a20 * b0 + a21 * b1 + a22 * b2 + a23 * b3
        c[m + 3, j] += a30 * b0 + a31 * b1 + a32 * b2 + a33 * b3


@njit(**JIT)
def madd_tiles(a, b, c, m0, m1, k0, k1):
    """c[m0:m1, :] += a[m0:m1, k0:k1] @ b[k0:k1, :] in 4x4 steps of (m, k), edges by madd.

    shapes: a (M, K), b (K, P), c (M, P). Loops: 4 rows m outside, 4 steps of
    k inside, so the 4 rows of c being updated stay in L1 while k advances.
    numpy: c[m0:m1] += a[m0:m1, k0:k1] @ b[k0:k1]. Serial.
    """
    mt = m0 + (m1 - m0) // 4 * 4
    kt = k0 + (k1 - k0) // 4 * 4
    for m in range(m0, mt, 4):
        for k in range(k0, kt, 4):
            madd4x4(a, b, c, m, k)
        madd(a, b, c, m, m + 4, kt, k1)
    madd(a, b, c, mt, m1, k0, k1)


# Rows of the batch per madd_tiles call of dw_register. With 4 (one madd4x4 step), all of dw
# (784 x 50 float32, 157 KB: L2) went in and out of L1 every 4 rows and rung 3 ran no faster
# than rung 2 on Zen 4 (50000 x 784 -> 50, 1 thread: rung 2 172 ms, rung 3 185 ms); with 64,
# 133 ms (256: 141 ms).
REGISTER_ROWS = 64


@njit(**JIT)
def dw_register(x, dy, dw):
    """Rung 3. dw = x.T @ dy as rung 2 (batch outermost), REGISTER_ROWS rows of the batch at a time.

    shapes: x (N, I), dy (N, O), dw (I, O).   numpy: dw[:] = x.T @ dy
    For each REGISTER_ROWS rows n: dw[i:i+4, :] += x[n:n+R, i:i+4].T @ dy[n:n+R, :] for all
    i (madd_tiles on a = x.T, a view: 4 rows i of dw stay in L1 while madd4x4 steps 4
    rows of the batch at a time through the R). Serial.
    """
    N, I = x.shape
    dw[:] = 0
    for n in range(0, N, REGISTER_ROWS):
        madd_tiles(x.T, dy, dw, 0, I, n, min(N, n + REGISTER_ROWS))


@njit(**JIT)
def y_register(x, w, y):
    """Rung 3. y = x @ w in 4x4 register blocks of (n, i), batch outermost.

    shapes: x (N, I), w (I, O), y (N, O).   numpy: y[:] = x @ w
    For each 4 rows n: y[n:n+4, :] += x[n:n+4, i:i+4] @ w[i:i+4, :] for all i. Serial.
    """
    N, I = x.shape
    y[:] = 0
    madd_tiles(x, w, y, 0, N, 0, I)


@njit(**JIT)
def dx_register(dy, w, dx):
    """Rung 3. dx = dy @ w.T in 4x4 register blocks of (n, j), on a transposed copy of w.

    shapes: dy (N, O), w (I, O), dx (N, I).   numpy: dx[:] = dy @ w.T
    y_register with a = dy, b = w.T (copied once to C order). Serial.
    """
    N, O = dy.shape
    dx[:] = 0
    madd_tiles(dy, np.ascontiguousarray(w.T), dx, 0, N, 0, O)


# ---- views: a matrix as (flat buffer, offset, row stride, column stride) ----------------
@njit(**JIT)
def rows_of(a):
    """a (R, S), C order, as the view (flat buffer, 0, S, 1)."""
    return a.reshape(a.size), 0, a.shape[1], 1


@njit(**JIT)
def cols_of(a):
    """a.T for a (R, S) in C order, as the view (flat buffer, 0, 1, S): a transpose is two strides."""
    return a.reshape(a.size), 0, 1, a.shape[1]


@njit(**JIT)
def at(V, r, c):
    """V[r, c] of a view V = (buf, off, rs, cs)."""
    return V[0][V[1] + r * V[2] + c * V[3]]


# ---- rung 4: the register micro-kernel ---------------------------------------------------
@njit(**JIT)
def tiles(A, B, C, M, K, N, flags, bias, jr_outer, wide):
    """C[:M, :N] := beta * C + A @ B (+ bias) (then ReLU), one micro-kernel call per MR x NR
    tile of C. Serial.

    A = (buf, off, rs, cs, step): A[r, k] = buf[off + r * rs + k * cs], any strides; the
        tile of rows from ir starts at off + ir * step (step = rs for A read in place,
        kc for MR-row micro-panels: ir * kc).
    B = (buf, off, ld, step): B[k, p] = buf[off + k * ld + p], contiguous along p; the
        tile of columns from jr starts at off + jr * step (1 in place, kc for NR-column
        micro-panels).
    C = (buf, off, ldc), C order. flags = (beta, use_bias, relu), micro.micro's.
    micro.micro holds each tile of C in MR x NV vector registers for the whole sum over
    k and stores it once; per k it loads NV vectors of B and broadcasts MR values of A
    (its contract: kernels/micro.py). A last tile narrower than NR (50 = 32 + 18
    columns) is the micro-kernel's edge case: masked loads of B and masked stores of C.
    jr_outer: the jr loop outside ir (BLIS's order, rung 6's five loops: one panel of
    B stays in L1 while every tile of rows uses it) or inside (rungs 4-5: MR rows of A
    stay in L1 while every panel of B passes), both as one loop over the tiles.
    wide: the tiles are MR_WIDE x NV_WIDE vectors, the engine's wide block
    (engine.tile_shape: 6 x 4 vectors with AVX-512, the same 24 accumulators, half the
    broadcasts of A per multiply-add; lingrad.plan.register_block chooses, as for the engine).
    """
    c, co, ldc = C
    mr, nr = tile_shape(A[0], 1 if wide else 0)
    # a float64 C of float32 operands (rungs 7-8's partials of dw) gets the sums of KF terms
    # at a time: each is summed in float32 registers, then added into C in float64
    kf = KF if c.itemsize > A[0].itemsize else max(K, 1)
    beta, use_bias, relu = flags
    ni, nj = -(-M // mr), -(-N // nr)
    for t in range(ni * nj):
        if jr_outer:
            ir, jr = t % ni * mr, t // ni * nr
        else:
            ir, jr = t // nj * mr, t % nj * nr
        for kq in range(0, max(K, 1), kf):
            offs = (A[1] + ir * A[4] + kq * A[3], A[2], A[3], B[1] + jr * B[3] + kq * B[2], B[2],
                    co + ir * ldc + jr, ldc, jr)
            dims = (min(kf, K - kq), min(mr, M - ir), min(nr, N - jr))
            last = kq + kf >= K
            fl = (beta or kq > 0, use_bias and last, relu and last)
            if wide:
                micro(A[0], B[0], c, bias, offs, dims, fl, MR_WIDE, NV_WIDE)
            else:
                micro(A[0], B[0], c, bias, offs, dims, fl, MR, NV)


@njit(**JIT)
def tiles_micro(A, B, c, M, K, N, beta, wide):
    """c (M x N, C order) = A @ B (+ c when beta), both read in place by the micro-kernel. Serial.

    A (M x K): any strides. B (K x N): rows contiguous (unit column stride).
    Loops: ir (MR rows of A, which stay in L1) outside, jr (a panel of NR
    columns of B) inside, as rung 3's m outside and j inside.
    """
    tiles(A + (A[2],), (B[0], B[1], B[2], 1), (c, 0, N), M, K, N, (beta, False, False),
          np.empty(0, c.dtype), False, wide)


@njit(**JIT)
def y_micro(x, w, y, wide):
    """Rung 4. y = x @ w by the register micro-kernel, x and w read in place.

    shapes: x (N, I), w (I, O), y (N, O).   numpy: y[:] = x @ w
    A = x, B = w, C = y. Each MR x NR tile of y (12 x 32 with AVX-512 float32)
    is summed in registers over all of i and stored once: no load or store of
    y inside the sum, where rung 3 loaded and stored y once per 4 multiply-adds.
    Serial.
    """
    N, I = x.shape
    tiles_micro(rows_of(x), rows_of(w), y.reshape(y.size), N, I, w.shape[1], False, wide)


@njit(**JIT)
def dx_micro(dy, w, dx, wide):
    """Rung 4. dx = dy @ w.T by the register micro-kernel, on a transposed copy of w.

    shapes: dy (N, O), w (I, O), dx (N, I).   numpy: dx[:] = dy @ w.T
    A = dy (in place), B = w.T copied once to C order: the micro-kernel loads
    B's rows as vectors, and w.T's rows are w's columns. Serial.
    """
    N, O = dy.shape
    wt = np.ascontiguousarray(w.T)
    tiles_micro(rows_of(dy), rows_of(wt), dx.reshape(dx.size), N, O, w.shape[0], False, wide)


@njit(**JIT)
def dw_micro(x, dy, dw, kc, wide):
    """Rung 4. dw = (dy.T @ x).T by the register micro-kernel, kc rows of the batch at a time.

    shapes: x (N, I), dy (N, O), dw (I, O).   numpy: dw[:] = x.T @ dy
    A = dy.T (a view: strides 1 and O), B = x, C = dw.T (O x I), transposed into
    dw at the end (I x O values). As in rungs 2-3 the batch is the outer loop:
    each step of kc rows adds dy[n:n+kc].T @ x[n:n+kc] into dw.T, every tile
    summed over the kc rows in registers (the micro-kernel's beta: the first
    step overwrites). The kc x I rows of x in use stay in L2 while every tile
    reads them. The transposed form puts the long axis I along the vectors:
    rows of x are read as they lie. Serial.
    """
    N, I = x.shape
    O = dy.shape[1]
    dwt = np.empty((O, I), dw.dtype)
    dyf, xf = dy.reshape(dy.size), x.reshape(x.size)
    for n in range(0, max(N, 1), kc):  # an empty batch still writes dw = 0
        k = min(kc, N - n)
        tiles_micro((dyf, n * O, 1, O), (xf, n * I, I, 1), dwt.reshape(dwt.size), O, k, I, n > 0,
                    wide)
    dw[:] = dwt.T


# ---- rung 5: packing into micro-panels --------------------------------------------------
@njit(**JIT)
def pack_b(B, k0, kc, n0, nc, nr, dst):
    """dst[(p // NR) * kc * NR + k * NR + p % NR] = B[k0 + k, n0 + p] for k < kc, p < nc. Serial.

    NR-column micro-panels, k-major, zero-padded to whole panels: each panel is
    the kc x NR values the micro-kernel reads, in the order it reads them, one
    contiguous stream. B may have any strides (w.T is packed straight from w).
    """
    for j in range(0, nc, nr):
        for k in range(kc):
            for p in range(nr):
                dst[j * kc + k * nr + p] = at(B, k0 + k, n0 + j + p) if j + p < nc else 0.0


@njit(**JIT)
def pack_a(A, m0, mc, k0, kc, mr, dst, Y, masked, db):
    """The block A[m0:m0 + mc, k0:k0 + kc] copied into dst, in one of two layouts. Serial.

    A must be contiguous along k or along r. Along k (dy for dx): row-major,
    dst[r * kc + k], each row a contiguous copy (a loop that vectorises). Along r
    (dy.T for dw): MR-row micro-panels, k-major, dst[(r // MR) * kc * MR + k * MR + r % MR],
    MR adjacent values per k, r inside. panel_strides gives the micro-kernel's view
    of either. Rows past mc in the last panel are not written (the micro-kernel never
    stores them). Rung 8's fusions, off in rungs 5-7 (masked False, db empty): with
    masked, a value is packed as 0 where Y <= 0 (d = where(y > 0, dy, 0), never
    stored as an array; Y has A's strides: the callers pass A itself when not
    masked); with db (M,), db[m0 + r] += every value packed.
    """
    a, y = A[0], Y[0]
    zero = a.dtype.type(0)
    sums = db.size > 0
    if A[3] == 1:
        for r in range(mc):  # one contiguous row of kc values, copied as a run
            src = A[1] + (m0 + r) * A[2] + k0
            ysrc = src - A[1] + Y[1]
            arow, yrow, out = a[src:src + kc], y[ysrc:ysrc + kc], dst[r * kc:(r + 1) * kc]
            s = zero
            for k in range(kc):
                v = arow[k] if yrow[k] > 0 or not masked else zero
                out[k] = v
                s += v
            if sums:
                db[m0 + r] += s
        return
    for p0 in range(0, mc, mr):  # k outer, r inside: along A's contiguous axis
        rows = min(mr, mc - p0)
        panel = dst[p0 * kc:(p0 + mr) * kc]
        for k in range(kc):
            src = A[1] + (m0 + p0) * A[2] + (k0 + k) * A[3]
            ysrc = src - A[1] + Y[1]
            acol, ycol = a[src:src + rows], y[ysrc:ysrc + rows]
            for r in range(rows):
                panel[k * mr + r] = acol[r] if ycol[r] > 0 or not masked else zero
    if sums:  # db from the block while it is in L1: a contiguous run of mc values per k
        dbs = db[m0:m0 + mc]
        for k in range(kc):
            src = A[1] + m0 * A[2] + (k0 + k) * A[3]
            ysrc = src - A[1] + Y[1]
            acol, ycol = a[src:src + mc], y[ysrc:ysrc + mc]
            for r in range(mc):
                dbs[r] += acol[r] if ycol[r] > 0 or not masked else zero


@njit(**JIT)
def panel_strides(A, kc, mr):
    """(row stride, column stride) of pack_a's block of A as the micro-kernel reads it;
    the tile of rows from ir starts at ir * kc in both layouts."""
    return (kc, 1) if A[3] == 1 else (1, mr)


@njit(**JIT)
def tiles_packed(A, B, c, M, K, N, packed_a, packed_b, beta, wide):
    """c (M x N, C order) = A @ B (+ c when beta) as tiles_micro, from micro-panels. Serial.

    With packed_b, B is packed into NR-column micro-panels, so each micro-kernel
    call streams one contiguous panel instead of NV vectors from each of K rows
    far apart; with packed_a, A is packed into MR-row micro-panels. An operand
    not packed is read in place (B: with contiguous rows).
    """
    mr, nr = tile_shape(A[0], 1 if wide else 0)
    none = np.empty(0, c.dtype)
    ap = np.empty(-(-M // mr) * mr * K if packed_a else 0, A[0].dtype)
    bp = np.empty(-(-N // nr) * nr * K if packed_b else 0, B[0].dtype)
    if packed_a:
        pack_a(A, 0, M, 0, K, mr, ap, A, False, none)
    if packed_b:
        pack_b(B, 0, K, 0, N, nr, bp)
    At = (ap, 0) + panel_strides(A, K, mr) + (K,) if packed_a else A + (A[2],)
    Bt = (bp, 0, nr, K) if packed_b else (B[0], B[1], B[2], 1)
    tiles(At, Bt, (c, 0, N), M, K, N, (beta, False, False), none, False, wide)


@njit(**JIT)
def y_packed(x, w, y, wide):
    """Rung 5. y = x @ w by the micro-kernel, w packed into micro-panels, x read in place.

    shapes: x (N, I), w (I, O), y (N, O).   numpy: y[:] = x @ w
    x is read along its rows, one value at a time broadcast: packing it would
    copy all of x to gain nothing. Serial.
    """
    N, I = x.shape
    tiles_packed(rows_of(x), rows_of(w), y.reshape(y.size), N, I, w.shape[1], False, True, False,
                 wide)


@njit(**JIT)
def dx_packed(dy, w, dx, wide):
    """Rung 5. dx = dy @ w.T, w.T packed into micro-panels straight from w, dy in place.

    shapes: dy (N, O), w (I, O), dx (N, I).   numpy: dx[:] = dy @ w.T
    Packing reads w.T through its strides (cols_of): rung 4's transposed copy
    becomes the packing itself. Serial.
    """
    N, O = dy.shape
    tiles_packed(rows_of(dy), cols_of(w), dx.reshape(dx.size), N, O, w.shape[0], False, True,
                 False, wide)


@njit(**JIT)
def dw_packed(x, dy, dw, kc, wide):
    """Rung 5. dw = (dy.T @ x).T as rung 4, each kc-row step of dy.T packed into micro-panels.

    shapes: x (N, I), dy (N, O), dw (I, O).   numpy: dw[:] = x.T @ dy
    x stays in place (copying it would cost a pass over all of x). Serial.
    """
    N, I = x.shape
    O = dy.shape[1]
    dwt = np.empty((O, I), dw.dtype)
    dyf, xf = dy.reshape(dy.size), x.reshape(x.size)
    for n in range(0, max(N, 1), kc):
        k = min(kc, N - n)
        tiles_packed((dyf, n * O, 1, O), (xf, n * I, I, 1), dwt.reshape(dwt.size), O, k, I,
                     True, False, n > 0, wide)
    dw[:] = dwt.T


# ---- rung 6: the five loops (cache blocking around the micro-kernel) ---------------------
@njit(**JIT)
def five_loops(A, B, C, M, K, N, mc, kc, packed_a, b_in_place, bias, relu, Y, masked, db, wide):
    """C[:M] = A @ B (M x K times K x N) in BLIS's loops around the micro-kernel. Serial.

    C = (flat buffer, offset, row stride), C order. Loops, outermost first:
      (jc: NC columns of B, for L3: one block here, all of B's columns fit)
      pc: a kc slice of the summed axis: B's kc x N block is packed (its panels stay in L2)
      ic: mc rows of C: A's mc x kc block is packed when packed_a (it stays in L2/L1)
      jr: one NR-wide micro-panel of B (in L1 while the ir loop reuses it)
      ir: one MR-row micro-panel of A: one micro-kernel call, kc steps
    The first kc slice overwrites C, later ones add to it (the micro-kernel's beta).
    b_in_place: B is read where it lies (a B too large to copy, with contiguous
    rows: x for dw), not packed.
    Rung 8's fusions, off in rungs 6-7 (bias empty, relu and masked False, db
    empty): bias and ReLU applied by the micro-kernel after the last slice,
    in registers; the mask and db applied in pack_a.
    """
    c, co, ldc = C
    mr, nr = tile_shape(A[0], 1 if wide else 0)
    kmax = min(kc, max(K, 1))
    ap = np.empty(-(-min(mc, M) // mr) * mr * kmax if packed_a else 0, A[0].dtype)
    bp = np.empty(0 if b_in_place else -(-N // nr) * nr * kmax, A[0].dtype)
    for pc in range(0, max(K, 1), kc):  # an empty sum (K = 0) still writes C = 0 (+ bias)
        kk = min(kc, K - pc)
        last = pc + kc >= K
        if not b_in_place:
            pack_b(B, pc, kk, 0, N, nr, bp)
        Bt = (B[0], B[1] + pc * B[2], B[2], 1) if b_in_place else (bp, 0, nr, kk)
        flags = (pc > 0, last and bias.size > 0, relu and last)
        for ic in range(0, M, mc):
            mm = min(mc, M - ic)
            if packed_a:
                pack_a(A, ic, mm, pc, kk, mr, ap, Y, masked, db)
            At = ((ap, 0) + panel_strides(A, kk, mr) + (kk,) if packed_a else
                  (A[0], A[1] + ic * A[2] + pc * A[3], A[2], A[3], A[2]))
            tiles(At, Bt, (c, co + ic * ldc, ldc), mm, kk, N, flags, bias, True, wide)


@njit(**JIT)
def y_blocked(x, w, y, mc, kc, wide):
    """Rung 6. y = x @ w in the five loops: kc-long slices of i, mc rows of y per block.

    shapes: x (N, I), w (I, O), y (N, O).   numpy: y[:] = x @ w
    x read in place (its rows are contiguous along the sum), w packed per kc
    slice. With kc >= I and mc = MR (the ladder shape's choice, as plan.py's)
    these are rung 5's loops: blocking pays where a slice of B or the rows of A
    would not stay in cache (docs/ladder.md). Serial.
    """
    N, I = x.shape
    none = np.empty(0, y.dtype)
    five_loops(rows_of(x), rows_of(w), (y.reshape(y.size), 0, w.shape[1]), N, I, w.shape[1],
               mc, kc, False, False, none, False, rows_of(x), False, none, wide)


@njit(**JIT)
def dx_blocked(dy, w, dx, mc, kc, wide):
    """Rung 6. dx = dy @ w.T in the five loops; w.T packed per kc slice of j, dy in place.

    shapes: dy (N, O), w (I, O), dx (N, I).   numpy: dx[:] = dy @ w.T   Serial.
    """
    N, O = dy.shape
    I = w.shape[0]
    none = np.empty(0, dx.dtype)
    five_loops(rows_of(dy), cols_of(w), (dx.reshape(dx.size), 0, I), N, O, I,
               mc, kc, False, False, none, False, rows_of(dy), False, none, wide)


@njit(**JIT)
def dwt_blocked(x, dy, n0, n1, c, mc, kc, db, wide):
    """c (O x I, C order) = dy[n0:n1].T @ x[n0:n1] in the five loops, and db += dy[n0:n1].sum(0)
    when db is not empty (rung 8). Serial.

    A = dy.T packed per mc x kc block (kc rows of the batch), B = x read in
    place (its kc x I block stays in L2 while all of A's panels use it).
    """
    I = x.shape[1]
    O = dy.shape[1]
    A = (dy.reshape(dy.size), n0 * O, 1, O)
    none = np.empty(0, c.dtype)
    five_loops(A, (x.reshape(x.size), n0 * I, I, 1), (c, 0, I), O, n1 - n0, I, mc, kc, True, True,
               none, False, A, False, db, wide)


@njit(**JIT)
def dw_blocked(x, dy, dw, mc, kc, wide):
    """Rung 6. dw = (dy.T @ x).T in the five loops: kc rows of the batch per block.

    shapes: x (N, I), dy (N, O), dw (I, O).   numpy: dw[:] = x.T @ dy
    Rungs 4-5 sum over the whole batch for each tile: every panel of x
    (N x NR) is streamed once per MR rows of dw.T, from memory or L3. Here a
    kc x I block of x is brought in once and used by every tile before the
    next: x crosses from memory once. Serial.
    """
    O = dy.shape[1]
    dwt = np.empty((O, x.shape[1]), dw.dtype)
    dwt_blocked(x, dy, 0, x.shape[0], dwt.reshape(dwt.size), mc, kc, np.empty(0, dw.dtype), wide)
    dw[:] = dwt.T


# ---- rung 7: threads ----------------------------------------------------------------------
@njit(**JIT)
def chunk(N, T, t):
    """Rows [n0, n1) of chunk t when N rows are cut into T nearly equal chunks."""
    return t * N // T, (t + 1) * N // T


@njit(**JIT)
def merge(part, out):
    """out[r] = sum_t part[t, r].   shapes: part (T, R), out (R,).   numpy: out[:] = part.sum(0). Serial."""
    for r in range(out.shape[0]):
        s = part.dtype.type(0)
        for t in range(part.shape[0]):
            s += part[t, r]
        out[r] = s


@njit(**PJIT)
def merge_transposed(part, dw):
    """dw[i, j] = sum_t part[t, j * I + i]: T partial dw.T's (O x I, flattened) summed into dw.

    numpy: dw[:] = part.reshape(T, O, I).sum(0).T
    Parallel over rows i of dw: each iteration owns dw[i], so it is race-free.
    """
    I, O = dw.shape
    for i in prange(I):
        for j in range(O):
            s = part.dtype.type(0)
            for t in range(part.shape[0]):
                s += part[t, j * I + i]
            dw[i, j] = s


@njit(**JIT)
def y_parallel(x, w, y, mc, kc, T, wide):
    """Rung 7. y = x @ w on T threads, each running rung 6 on its own rows of y.

    shapes: x (N, I), w (I, O), y (N, O).   numpy: y[:] = x @ w
    Parallel over T chunks of the batch, an output axis: chunk t reads x's rows
    and writes y's rows n0:n1 only, so it is race-free with no partials and no
    merge. Each thread packs its own copy of w (I * O values). Rung 8
    passes b and relu; rung 7 passes neither.
    """
    y_rows_fused(x, w, y, mc, kc, T, np.empty(0, y.dtype), False, wide)


@njit(**PJIT)
def y_rows_fused(x, w, y, mc, kc, T, b, relu, wide):
    """y = x @ w (+ b) (then ReLU) on T threads, parallel over chunks of rows of y (race-free)."""
    N, I = x.shape
    O = w.shape[1]
    xf, yf = x.reshape(x.size), y.reshape(y.size)
    for t in prange(T):
        n0, n1 = chunk(N, T, t)
        five_loops((xf, n0 * I, I, 1), rows_of(w), (yf, n0 * O, O), n1 - n0, I, O, mc, kc,
                   False, False, b, relu, (xf, n0 * I, I, 1), False, np.empty(0, y.dtype), wide)


@njit(**PJIT)
def dx_rows_fused(dy, w, dx, mc, kc, T, y, masked, wide):
    """dx = d @ w.T on T threads, d = dy, or where(y > 0, dy, 0) when masked (applied while
    packing dy), parallel over chunks of rows of dx (race-free)."""
    N, O = dy.shape
    I = w.shape[0]
    df, xf, yf = dy.reshape(dy.size), dx.reshape(dx.size), y.reshape(y.size)
    for t in prange(T):
        n0, n1 = chunk(N, T, t)
        five_loops((df, n0 * O, O, 1), cols_of(w), (xf, n0 * I, I), n1 - n0, O, I, mc, kc,
                   masked, False, np.empty(0, dx.dtype), False, (yf, n0 * O, O, 1), masked,
                   np.empty(0, dx.dtype), wide)


@njit(**JIT)
def dx_parallel(dy, w, dx, mc, kc, T, wide):
    """Rung 7. dx = dy @ w.T on T threads, each running rung 6 on its own rows of dx.

    shapes: dy (N, O), w (I, O), dx (N, I).   numpy: dx[:] = dy @ w.T
    Parallel over T chunks of the batch, an output axis (rows of dx): race-free,
    no partials, no merge.
    """
    dx_rows_fused(dy, w, dx, mc, kc, T, dy, False, wide)


@njit(**PJIT)
def dw_db_threads(x, dy, dw, db, mc, kc, T, wide):
    """dw = x.T @ dy (and db = dy.sum(0) when db is not empty) on T threads, per-thread
    partials in float64, rounded once into dw and db by the merges."""
    N, I = x.shape
    O = dy.shape[1]
    part = np.empty((T, O * I), np.float64)
    part_b = np.zeros((T, db.size), np.float64)
    for t in prange(T):
        n0, n1 = chunk(N, T, t)
        dwt_blocked(x, dy, n0, n1, part[t], mc, kc, part_b[t], wide)
    merge_transposed(part, dw)
    merge(part_b, db)


@njit(**JIT)
def dw_parallel(x, dy, dw, mc, kc, T, wide):
    """Rung 7. dw = x.T @ dy on T threads, with per-thread partial sums.

    shapes: x (N, I), dy (N, O), dw (I, O); T chunks, one per thread.
    numpy: dw[:] = x.T @ dy
    Parallel over T chunks of the batch, the summed axis: chunk t runs rung 6
    on its rows into its own partial part[t] (dw.T, O x I), so no two threads
    write the same element; writing dw[i, j] += ... from every thread instead
    would race (lost updates). merge_transposed then sums the T partials,
    parallel over rows of dw (each iteration owns its row).
    The partials are float64, as in lingrad's engine: each micro-kernel call sums
    KF terms in float32 registers and adds them into the partial in float64
    (tiles), so a float32 dw's error does not grow with the batch (a float32 C
    summed over all 25000 rows of a thread's share would: tests/test_accuracy.py
    holds lingrad to numpy's pairwise sum). The cost is a flush of the register
    block every KF terms: docs/ladder.md measures it.
    """
    dw_db_threads(x, dy, dw, np.empty(0, dw.dtype), mc, kc, T, wide)


# ---- rung 8: fusion -------------------------------------------------------------------------
@njit(**JIT)
def y_fused(x, w, b, y, mc, kc, T, wide):
    """Rung 8. y = max(x @ w + b, 0): bias and ReLU in the micro-kernel's epilogue, T threads.

    shapes: x (N, I), w (I, O), b (O,), y (N, O).   numpy: y[:] = np.maximum(x @ w + b, 0)
    Rung 7, with the micro-kernel told to add b and apply the ReLU after the
    last kc slice, while the tile is still in registers: y is stored once,
    final. Parallel over chunks of rows of y (race-free).
    """
    y_rows_fused(x, w, y, mc, kc, T, b, True, wide)


@njit(**JIT)
def dx_fused(dy, w, y, dx, mc, kc, T, wide):
    """Rung 8. dx = where(y > 0, dy, 0) @ w.T: the ReLU's mask applied while dy is packed.

    shapes: dy (N, O), w (I, O), y (N, O) the forward's ReLU output, dx (N, I).
    numpy: dx[:] = np.where(y > 0, dy, 0) @ w.T
    Rung 7, with dy packed per mc x kc block (pack_a) and each value replaced by
    0 where y <= 0 as it is packed: the masked dy is never an array.
    Parallel over chunks of rows of dx (race-free).
    """
    dx_rows_fused(dy, w, dx, mc, kc, T, y, True, wide)


@njit(**JIT)
def dw_db_fused(x, dy, dw, db, mc, kc, T, wide):
    """Rung 8. dw = x.T @ dy and db = dy.sum(0), db summed while dy is packed, T threads.

    shapes: x (N, I), dy (N, O), dw (I, O), db (O,).
    numpy:  dw[:] = x.T @ dy;  db[:] = dy.sum(0)
    Rung 7, with pack_a adding each value of dy.T it packs into thread t's
    partial db (oneDNN's diff_bias): one add per value that is packed anyway,
    and dy is read once for both gradients. Per-thread partials for both
    (race-free), merged after.
    """
    dw_db_threads(x, dy, dw, db, mc, kc, T, wide)


# ---- the unfused second passes that rung 8 saves (the CLI's "7+" rows) ------------------
@njit(**JIT)
def colsum(dy, db, n0, n1):
    """db[j] += sum_{n0 <= n < n1} dy[n, j].   numpy: db += dy[n0:n1].sum(0). Serial."""
    for n in range(n0, n1):
        for j in range(dy.shape[1]):
            db[j] += dy[n, j]


@njit(**PJIT)
def db_parallel(dy, db, T):
    """db = dy.sum(0) on all threads: the second pass over dy that dw_db_fused saves.

    shapes: dy (N, O), db (O,); T chunks, one per thread.   numpy: db[:] = dy.sum(0)
    Parallel over T chunks of the batch with per-thread partials (race-free),
    then a serial merge of the T x O partials.
    """
    N, O = dy.shape
    part = np.zeros((T, O), db.dtype)
    for t in prange(T):
        n0, n1 = chunk(N, T, t)
        colsum(dy, part[t], n0, n1)
    merge(part, db)


@njit(**JIT)
def bias_relu_rows(y, b, n0, n1):
    """y[n, j] = max(y[n, j] + b[j], 0) for n0 <= n < n1 (NaN propagates as in np.maximum). Serial."""
    for n in range(n0, n1):
        for j in range(y.shape[1]):
            y[n, j] = relu(y[n, j] + b[j])


@njit(**PJIT)
def bias_relu(y, b):
    """y = max(y + b, 0) in place, on all threads: the second pass over y that y_fused saves.

    shapes: y (N, O), b (O,).   numpy: y[:] = np.maximum(y + b, 0)
    Parallel over rows n of y: each iteration owns its row, race-free.
    """
    for n in prange(y.shape[0]):
        bias_relu_rows(y, b, n, n + 1)


@njit(**PJIT)
def relu_mask(dy, y, d):
    """d = where(y > 0, dy, 0), on all threads: the masked copy of dy that dx_fused never makes.

    shapes: dy, y, d (N, O).   numpy: d[:] = np.where(y > 0, dy, 0)
    Parallel over rows n: each iteration owns d[n], race-free.
    """
    for n in prange(dy.shape[0]):
        for j in range(dy.shape[1]):
            d[n, j] = dy[n, j] if y[n, j] > 0 else 0.0
