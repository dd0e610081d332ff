"""The optimisation ladder: the same two products, six ways, from the formula to fast.

    weight gradient   dw[i, j] = sum_n x[n, i] * dy[n, j]    numpy: x.T @ dy
    forward           y[n, j]  = sum_i x[n, i] * w[i, j]     numpy: x @ w   (+ b, ReLU in rung 6)

shapes: x (N, I), w (I, O), b (O,), dy (N, O), dw (I, O), y (N, O).

    rung 1  dw_naive     y_naive       the formula's loops, as written
    rung 2  dw_rows      y_rows        loop order: the innermost loop walks contiguous memory
    rung 3  dw_register  y_register    register blocking: a 4x4 block of x held in registers
    rung 4  dw_cache     y_cache       cache blocking: a slice of the streamed operand stays in L1
    rung 5  dw_parallel  y_parallel    prange: threads, race-free by construction
    rung 6  dw_db_fused  y_fused       fusion: db from the same pass over dy; bias+ReLU epilogue

From rung 3 on, both products are the same problem, ``c += a @ b``, done by one
micro-kernel (madd4x4) and its edge loop (madd): the forward with a = x, b = w,
c = y; the weight gradient with a = x.T (a transposed *view*, no copy), b = dy,
c = dw. What differs is which axis is summed: i for the forward, the batch n
for the weight gradient. That decides which loops go outside.

Every rung overwrites its output array (it is never read first). Block sizes
are arguments (nb rows of the batch per block, kb slice of the summed axis of
the forward), so the tests can use odd ones and the CLI can experiment; see
docs/ladder.md for why each rung is faster and python -m lingrad ladder to time
them. These are study kernels: lingrad.linear / lingrad.weight_grad run the
production engine in engine.py (docs/ladder.md).
"""
import numpy as np
from numba import njit, prange

from .config import JIT, PJIT


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


@njit(**JIT)
def dw_register(x, dy, dw):
    """Rung 3. dw = x.T @ dy as rung 2 (batch outermost), 4 rows of the batch at a time.

    shapes: x (N, I), dy (N, O), dw (I, O).   numpy: dw[:] = x.T @ dy
    For each 4 rows n: dw[i:i+4, :] += x[n:n+4, i:i+4].T @ dy[n:n+4, :] for all
    i (madd4x4 on a = x.T, a view). Serial.
    """
    N, I = x.shape
    dw[:] = 0
    for n in range(0, N, 4):
        madd_tiles(x.T, dy, dw, 0, I, n, min(N, n + 4))


@njit(**JIT)
def y_register(x, w, y):
    """Rung 3. y = x @ w in 4x4 register blocks of (n, i), batch outermost.

    shapes: x (N, I), w (I, O), y (N, O).   numpy: y[:] = x @ w
    For each 4 rows n: y[n:n+4, :] += x[n:n+4, i:i+4] @ w[i:i+4, :] for all i. Serial.
    """
    N, I = x.shape
    y[:] = 0
    madd_tiles(x, w, y, 0, N, 0, I)


# ---- rung 4: cache blocking -----------------------------------------------------
@njit(**JIT)
def dw_cache(x, dy, dw, nb):
    """Rung 4. dw = x.T @ dy over blocks of nb rows of the batch.

    shapes: x (N, I), dy (N, O), dw (I, O).   numpy: dw[:] = x.T @ dy
    Rung 3 is this with nb = 4. With nb = 64, the block dy[n:n+nb] (64 x O)
    stays in L1 while madd_tiles walks all of i, and each 4-row tile of dw is
    updated nb/4 times in a row while it is in L1, instead of once per visit.
    Serial.
    """
    N, I = x.shape
    dw[:] = 0
    for n in range(0, N, nb):
        madd_tiles(x.T, dy, dw, 0, I, n, min(N, n + nb))


@njit(**JIT)
def y_rows_block(x, w, y, n0, n1, kb):
    """y[n0:n1] = x[n0:n1] @ w, with the summed axis i cut into kb-long slices. Serial.

    shapes: x (N, I), w (I, O), y (N, O). The slice w[i:i+kb] (kb x O) stays in
    L1 while every row of the block uses it. Overwrites y[n0:n1] only.
    """
    I = x.shape[1]
    y[n0:n1] = 0
    for i in range(0, I, kb):
        madd_tiles(x, w, y, n0, n1, i, min(I, i + kb))


@njit(**JIT)
def y_cache(x, w, y, nb, kb):
    """Rung 4. y = x @ w in blocks of nb rows of y times kb-long slices of i.

    shapes: x (N, I), w (I, O), y (N, O).   numpy: y[:] = x @ w
    The nb x O block of y and the kb x O slice of w both stay in L1, where
    rung 3 streamed all of w (I x O) from L2 for every 4 rows. Serial.
    """
    N = x.shape[0]
    for n in range(0, N, nb):
        y_rows_block(x, w, y, n, min(N, n + nb), kb)


# ---- rung 5: threads --------------------------------------------------------------
@njit(**JIT)
def chunk(N, T, t):
    """Rows [n0, n1) of chunk t when N rows are cut into T nearly equal chunks."""
    return t * N // T, (t + 1) * N // T


@njit(**JIT)
def merge(part, out):
    """out[r] = sum_t part[t, r].   shapes: part (T, R), out (R,).   numpy: out[:] = part.sum(0). Serial."""
    for r in range(out.shape[0]):
        s = out.dtype.type(0)
        for t in range(part.shape[0]):
            s += part[t, r]
        out[r] = s


@njit(**PJIT)
def merge_rows(part, dw):
    """dw[i, :] = sum_t part[t, i, :] with part (T, I*O) holding T partial dw's flattened.

    numpy: dw[:] = part.sum(0).reshape(dw.shape)
    Parallel over rows i of dw: each iteration owns dw[i], so it is race-free.
    """
    O = dw.shape[1]
    for i in prange(dw.shape[0]):
        merge(part[:, i * O:(i + 1) * O], dw[i])


@njit(**PJIT)
def dw_parallel(x, dy, dw, nb, T):
    """Rung 5. dw = x.T @ dy on all threads, with per-thread partial sums.

    shapes: x (N, I), dy (N, O), dw (I, O); T chunks, one per thread
    (numba.get_num_threads()).   numpy: dw[:] = x.T @ dy
    Parallel over T chunks of the batch, the summed axis: chunk t runs rung 4
    on its rows into its own partial part[t] (I x O), so no two threads write
    the same element. Writing dw[i, j] += ... from every thread instead would
    race (lost updates). The T partials are then summed by merge_rows,
    parallel over rows of dw (each iteration owns its row).
    """
    N, I = x.shape
    O = dy.shape[1]
    part = np.empty((T, I * O), dw.dtype)
    for t in prange(T):
        n0, n1 = chunk(N, T, t)
        dw_cache(x[n0:n1], dy[n0:n1], part[t].reshape((I, O)), nb)
    merge_rows(part, dw)


@njit(**PJIT)
def y_parallel(x, w, y, nb, kb):
    """Rung 5. y = x @ w on all threads.   shapes: x (N, I), w (I, O), y (N, O).

    numpy: y[:] = x @ w
    Parallel over blocks of nb rows of y, an output axis: each iteration
    computes and writes only its own rows y[n:n+nb] (rung 4's block), so it is
    race-free with no partials and no merge.
    """
    N = x.shape[0]
    for t in prange((N + nb - 1) // nb):
        y_rows_block(x, w, y, t * nb, min(N, t * nb + nb), kb)


# ---- rung 6: fusion -----------------------------------------------------------------
@njit(**JIT)
def colsum(dy, db, n0, n1):
    """db[j] += sum_{n0 <= n < n1} dy[n, j].   numpy: db += dy[n0:n1].sum(0). Serial."""
    for n in range(n0, n1):
        for j in range(dy.shape[1]):
            db[j] += dy[n, j]


@njit(**JIT)
def dw_db_cache(x, dy, dw, db, nb):
    """dw = x.T @ dy and db = dy.sum(0) in one pass over dy (rung 4 plus one line). Serial.

    shapes: x (N, I), dy (N, O), dw (I, O), db (O,). Each nb-row block of dy
    feeds db while it is in L1 for dw. Overwrites dw and db.
    """
    N, I = x.shape
    dw[:] = 0
    db[:] = 0
    for n in range(0, N, nb):
        n1 = min(N, n + nb)
        madd_tiles(x.T, dy, dw, 0, I, n, n1)
        colsum(dy, db, n, n1)


@njit(**PJIT)
def dw_db_fused(x, dy, dw, db, nb, T):
    """Rung 6. dw = x.T @ dy and db = dy.sum(0), fused, on all threads.

    shapes: x (N, I), dy (N, O), dw (I, O), db (O,); T chunks, one per thread.
    numpy:  dw[:] = x.T @ dy;  db[:] = dy.sum(0)
    As rung 5, with per-thread partials for both: chunk t writes only
    part_w[t] and part_b[t] (race-free); merge_rows sums the dw partials in
    parallel over rows of dw, and the T x O db partials are summed serially
    (too little work for threads). dy is read once for both gradients.
    """
    N, I = x.shape
    O = dy.shape[1]
    part_w = np.empty((T, I * O), dw.dtype)
    part_b = np.empty((T, O), db.dtype)
    for t in prange(T):
        n0, n1 = chunk(N, T, t)
        dw_db_cache(x[n0:n1], dy[n0:n1], part_w[t].reshape((I, O)), part_b[t], nb)
    merge_rows(part_w, dw)
    merge(part_b, db)


@njit(**PJIT)
def db_parallel(dy, db, T):
    """The unfused second pass that rung 6 saves: db = dy.sum(0) on all threads.

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
def y_fused(x, w, b, y, nb, kb):
    """Rung 6. y = max(x @ w + b, 0), the bias and ReLU as an epilogue, on all threads.

    shapes: x (N, I), w (I, O), b (O,), y (N, O).   numpy: y[:] = np.maximum(x @ w + b, 0)
    Rung 5's row blocks; right after a block of y is complete, while it is in
    L1, b is added and the ReLU applied. Parallel over blocks of nb rows of y:
    each iteration owns its rows, so it is race-free.
    """
    N = x.shape[0]
    for t in prange((N + nb - 1) // nb):
        n0, n1 = t * nb, min(N, t * nb + nb)
        y_rows_block(x, w, y, n0, n1, kb)
        bias_relu_rows(y, b, n0, n1)


@njit(**PJIT)
def bias_relu(y, b):
    """The unfused second pass that rung 6 saves: y = max(y + b, 0) in place, on all threads.

    shapes: y (N, O), b (O,).   numpy: y[:] = np.maximum(y + b, 0)
    Parallel over rows n of y: each iteration owns its row, race-free.
    """
    for n in prange(y.shape[0]):
        bias_relu_rows(y, b, n, n + 1)
