"""Serial micro-kernels: the innermost loops, each with a written contract.

Arrays are of one float dtype, except the accumulators named ``acc``, which
are float64 for float32 data. Rows read along their contiguous axis are
C-contiguous (the API guarantees it); nn_tile's ``a`` is read one scalar at a
time and may be a transposed view.
Nothing here is parallel; the drivers in forward.py and backward.py split the
work and hand each thread its own rows or its own partial buffers.
"""
import numpy as np
from numba import njit

from .config import JIT, SHORT_K, TILE


@njit(**JIT)
def put(c, m, p, v, accumulate):
    """c[m, p] = v, or c[m, p] += v when accumulate. With accumulate False c is never read."""
    if accumulate:
        c[m, p] += v
    else:
        c[m, p] = v


@njit(**JIT)
def dot(u, v):
    """sum_k u[k] * v[k] for two contiguous rows   numpy: u @ v

    With "reassoc" LLVM vectorises the loop. Index from range(len): Numba knows
    k >= 0 and drops its negative-index wraparound, which would turn the
    loads into gathers.
    """
    s = u.dtype.type(0)
    for k in range(u.shape[0]):
        s += u[k] * v[k]
    return s


@njit(**JIT)
def dot_tile(a, bt, c, p0, p1, k0, k1, accumulate):
    """The "NT" micro-kernel: c[m, p] (+)= sum_{k0<=k<k1} a[m, k] * bt[p, k].

    shapes: a (M, K), bt (P, K), c (M, P); updates all rows m and columns p0 <= p < p1.
    numpy:  c[:, p0:p1] (+)= a[:, k0:k1] @ bt[p0:p1, k0:k1].T

    Both operands are read along k, their contiguous axis. A 4x4 block of c
    (MR x NR in config) is held in 16 scalar accumulators for the whole k loop:
    8 loads feed 16 multiply-adds per k, and LLVM turns each accumulator into a
    SIMD register (the k loop is vectorised; "reassoc" allows it). Rows and
    columns left over at the edges fall back to single dot products (measured:
    4x1 strips sharing the loads of bt were slower for short k).
    With accumulate False, c is overwritten and never read (BLIS's beta = 0).
    Serial.
    """
    M = c.shape[0]
    mb = M - M % 4
    pb = p1 - (p1 - p0) % 4
    for m in range(0, mb, 4):
        for p in range(p0, pb, 4):
            a0r, a1r, a2r, a3r = a[m, k0:k1], a[m + 1, k0:k1], a[m + 2, k0:k1], a[m + 3, k0:k1]
            b0r, b1r, b2r, b3r = bt[p, k0:k1], bt[p + 1, k0:k1], bt[p + 2, k0:k1], bt[p + 3, k0:k1]
            c00 = c01 = c02 = c03 = a.dtype.type(0)
            c10 = c11 = c12 = c13 = a.dtype.type(0)
            c20 = c21 = c22 = c23 = a.dtype.type(0)
            c30 = c31 = c32 = c33 = a.dtype.type(0)
            for k in range(k1 - k0):  # from 0: no wraparound, so no gathers
                a0 = a0r[k]
                a1 = a1r[k]
                a2 = a2r[k]
                a3 = a3r[k]
                b0 = b0r[k]
                b1 = b1r[k]
                b2 = b2r[k]
                b3 = b3r[k]
                c00 += a0 * b0
                c01 += a0 * b1
                c02 += a0 * b2
                c03 += a0 * b3
                c10 += a1 * b0
                c11 += a1 * b1
                c12 += a1 * b2
                c13 += a1 * b3
                c20 += a2 * b0
                c21 += a2 * b1
                c22 += a2 * b2
                c23 += a2 * b3
                c30 += a3 * b0
                c31 += a3 * b1
                c32 += a3 * b2
                c33 += a3 * b3
            put(c, m, p, c00, accumulate)
            put(c, m, p + 1, c01, accumulate)
            put(c, m, p + 2, c02, accumulate)
            put(c, m, p + 3, c03, accumulate)
            put(c, m + 1, p, c10, accumulate)
            put(c, m + 1, p + 1, c11, accumulate)
            put(c, m + 1, p + 2, c12, accumulate)
            put(c, m + 1, p + 3, c13, accumulate)
            put(c, m + 2, p, c20, accumulate)
            put(c, m + 2, p + 1, c21, accumulate)
            put(c, m + 2, p + 2, c22, accumulate)
            put(c, m + 2, p + 3, c23, accumulate)
            put(c, m + 3, p, c30, accumulate)
            put(c, m + 3, p + 1, c31, accumulate)
            put(c, m + 3, p + 2, c32, accumulate)
            put(c, m + 3, p + 3, c33, accumulate)
        for p in range(pb, p1):
            bp = bt[p, k0:k1]
            for m_ in range(m, m + 4):
                put(c, m_, p, dot(a[m_, k0:k1], bp), accumulate)
    for p in range(p0, p1):
        bp = bt[p, k0:k1]
        for m in range(mb, M):
            put(c, m, p, dot(a[m, k0:k1], bp), accumulate)


@njit(**JIT)
def dot_strips(a, bt, c):
    """The narrow-output micro-kernel: c[m, p] = sum_k a[m, k] * bt[p, k], for few columns.

    shapes: a (M, K), bt (P, K), c (M, P).   numpy: c[:] = a @ bt.T
    For a c narrower than the 4 x 4 tile (P < NR) with a short summed axis,
    such as a layer with one output: four rows of a are dotted with one row of
    bt in a single loop, so each load of bt feeds four multiply-adds and the
    four sums are independent chains (measured on 50000 x 50 -> 1: 2.3x
    float32, 1.3x float64, against dot_tile's one dot per output). Long rows
    are left to dot_tile: streaming four rows from memory at once ran slower
    than one after another. Serial.
    """
    M, K = a.shape
    mb = M - M % 4
    for p in range(c.shape[1]):
        b = bt[p]
        for m in range(0, mb, 4):
            a0, a1, a2, a3 = a[m], a[m + 1], a[m + 2], a[m + 3]
            s0 = s1 = s2 = s3 = a.dtype.type(0)
            for k in range(K):
                bk = b[k]
                s0 += a0[k] * bk
                s1 += a1[k] * bk
                s2 += a2[k] * bk
                s3 += a3[k] * bk
            c[m, p] = s0
            c[m + 1, p] = s1
            c[m + 2, p] = s2
            c[m + 3, p] = s3
        for m in range(mb, M):
            c[m, p] = dot(a[m], b)


@njit(**JIT)
def nn_rows(a0, a1, b, c0, c1, p0, k0, k1):
    """c0 += sum_k a0[k] * b[k, p0:p0+P] and the same for c1 with a1 (P = len(c0)).

    The body of nn_tile: 4 values of k per pass, so each pass loads 4 rows of
    b once for both rows of c, and loads and stores c once per 4 multiply-adds
    (storing c every multiply-add would cap the loop at the store port's
    rate). The inner loop runs along p, contiguous in b and c: vectorised.
    """
    P = c0.shape[0]
    kb = k1 - (k1 - k0) % 4
    for k in range(k0, kb, 4):
        s0, s1, s2, s3 = a0[k], a0[k + 1], a0[k + 2], a0[k + 3]
        t0, t1, t2, t3 = a1[k], a1[k + 1], a1[k + 2], a1[k + 3]
        b0, b1, b2, b3 = b[k, p0:p0 + P], b[k + 1, p0:p0 + P], b[k + 2, p0:p0 + P], b[k + 3, p0:p0 + P]
        for p in range(P):
            x0, x1, x2, x3 = b0[p], b1[p], b2[p], b3[p]
            c0[p] += s0 * x0 + s1 * x1 + s2 * x2 + s3 * x3
            c1[p] += t0 * x0 + t1 * x1 + t2 * x2 + t3 * x3
    if k1 - kb >= 2:  # a tail of 2 or 3: one more pass of 2, so c is stored once more, not twice
        s0, s1, t0, t1 = a0[kb], a0[kb + 1], a1[kb], a1[kb + 1]
        b0, b1 = b[kb, p0:p0 + P], b[kb + 1, p0:p0 + P]
        for p in range(P):
            c0[p] += s0 * b0[p] + s1 * b1[p]
            c1[p] += t0 * b0[p] + t1 * b1[p]
        kb += 2
    for k in range(kb, k1):
        s, t, bk = a0[k], a1[k], b[k, p0:p0 + P]
        for p in range(P):
            c0[p] += s * bk[p]
            c1[p] += t * bk[p]


@njit(**JIT)
def nn_short(a, b, c, p0, p1, k0, k1, accumulate):
    """nn_tile for a summed axis shorter than SHORT_K (a rank-1 or rank-2 update, such
    as dx of a layer with one output, or dw of a one-row batch). Serial.

    One row of c at a time: the first k is stored (added if accumulate), the
    rest added, so c is written in one pass per k and never zeroed first
    (measured against nn_tile: 2.5x on 50000 x 1 -> 50, 1.6x with a summed
    axis of 2, 0.9x with 3: config.SHORT_K).
    """
    for m in range(c.shape[0]):
        cm = c[m, p0:p1]
        for k in range(k0, k1):
            s = a[m, k]
            bk = b[k, p0:p1]
            if accumulate or k > k0:
                for p in range(p1 - p0):
                    cm[p] += s * bk[p]
            else:
                for p in range(p1 - p0):
                    cm[p] = s * bk[p]


@njit(**JIT)
def nn_tile(a, b, c, p0, p1, k0, k1, accumulate):
    """The "NN" micro-kernel: c[m, p] (+)= sum_{k0<=k<k1} a[m, k] * b[k, p].

    shapes: a (M, K) (any layout: read as scalars), b (K, P), c (M, P); updates all
    rows m and columns p0 <= p < p1.   numpy: c[:, p0:p1] (+)= a[:, k0:k1] @ b[k0:k1, p0:p1]
    Rows of c are built two at a time from broadcast scalars of a times rows of
    b (see nn_rows), so no horizontal reductions are needed: the form for a
    short summed axis, and for dw where a is a transposed view of the batch.
    An odd last row is paired with a scratch row. With accumulate False, c is
    overwritten (zeroed pair by pair, then accumulated). A summed axis shorter
    than SHORT_K goes to nn_short. Serial.
    """
    if 0 < k1 - k0 < SHORT_K:
        nn_short(a, b, c, p0, p1, k0, k1, accumulate)
        return
    M = c.shape[0]
    for m in range(0, M, 2):
        c0 = c[m, p0:p1]
        odd = m + 1 == M  # the last row of an odd count is paired with a spare row
        c1 = np.zeros(p1 - p0, c.dtype) if odd else c[m + 1, p0:p1]
        if not accumulate:  # zeroed pair by pair, while the rows are about to be used
            c0[:] = 0
            c1[:] = 0
        nn_rows(a[m], a[m if odd else m + 1], b, c0, c1, p0, k0, k1)


@njit(**JIT)
def transpose_block(a, out, j0, j1):
    """out[j, i] = a[i, j] for j0 <= j < j1 (at most TILE rows of out), all i.

    shapes: a (R, C) any layout, out (C, R).   numpy: out[j0:j1] = a[:, j0:j1].T
    Taken in TILE x TILE blocks, so the block's rows of a and of out stay in L1.
    Each strided column piece is a view indexed from range(len): no
    negative-index wraparound, so its reads stay plain loads. Serial.
    """
    R = a.shape[0]
    for i0 in range(0, R, TILE):
        n = min(TILE, R - i0)
        for j in range(j0, j1):
            col, row = a[i0:i0 + n, j], out[j, i0:i0 + n]
            for i in range(n):
                row[i] = col[i]


@njit(**JIT)
def colsum_acc(d, acc):
    """acc[j] += sum_n d[n, j]   shapes: d (N, O), acc (O,) float64   numpy: acc += d.sum(0)

    Every term is added in acc's precision (float64), so a float32 batch sum
    carries float64 rounding (about N * 1e-16 relative) however long the batch.
    Vectorised along j when O is wide (O >= 16), four rows per pass (measured
    1.6-2.5x one row per pass on float32 50000 x 50), along n when O is 1. For a
    narrow d in between, each G = 64 // O rows are one contiguous run of
    G * O values (d is C-contiguous), summed run by run into a float64 row
    of G * O (vectorised along the run) and folded into acc at the end:
    measured 5x the column-by-column loop on 50000 x 3. Serial.
    """
    N, O = d.shape
    G = 64 // max(O, 1)
    done = N  # rows summed by the branch below; any left over are added one by one
    if O >= 16:  # four rows per pass, so acc is loaded and stored once per four rows
        done = N - N % 4
        for n in range(0, done, 4):
            d0, d1, d2, d3 = d[n], d[n + 1], d[n + 2], d[n + 3]
            for j in range(O):
                acc[j] += ((np.float64(d0[j]) + np.float64(d1[j]))
                           + (np.float64(d2[j]) + np.float64(d3[j])))
    elif O == 1 or N < G:
        for j in range(O):
            t = acc.dtype.type(0)
            for n in range(N):
                t += d[n, j]
            acc[j] += t
    else:
        done = N - N % G
        flat = d.reshape(N * O)
        L = G * O
        run = np.zeros(L, acc.dtype)
        for g in range(done // G):
            for q in range(L):
                run[q] += flat[g * L + q]
        for q in range(L):
            acc[q % O] += run[q]
    for n in range(done, N):
        for j in range(O):
            acc[j] += d[n, j]
