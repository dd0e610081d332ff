"""Forward pass y = x @ w + b (optional ReLU), and the shared row-block GEMM driver."""
from numba import njit, prange

from .config import JIT, KC, MB, NC, NN_K, NR, PJIT, TASKS, TILE
from .tile import dot_strips, dot_tile, nn_tile, transpose_block


@njit(**JIT)
def use_nn(K, P):
    """Whether c = a @ b (summed axis K, P columns of c) is faster in the NN form:
    a short summed axis (K < NN_K), where the NT form's per-output horizontal
    reductions dominate, and a c wide enough to vectorise along (P >= 16)."""
    return K < NN_K and P >= 16


@njit(**JIT)
def task_rows(N):
    """Rows of the output per parallel task: MB, or fewer (not under 8) so that
    a batch of N rows still makes TASKS tasks."""
    return min(MB, max(8, (N + TASKS - 1) // TASKS))


@njit(**JIT)
def gemm_rows(a, b, bt, c, nn):
    """c = a @ b for one block of rows.   shapes: a (M, K), b (K, P), bt = b.T (P, K), c (M, P)

    numpy: c[:] = a @ b. With nn, the NN micro-kernel reads b (bt is not used
    and may be empty); otherwise the NT dot micro-kernel reads bt (b may be
    empty), on cache blocks of MB rows by NC columns of c by KC values of k,
    so that block of bt stays in L2 while the block's rows of a pass over it;
    a c narrower than the tile (P < NR) with a short summed axis (K < NN_K)
    goes to dot_strips instead. The caller picks the form once per call (see
    use_nn). Serial.
    """
    M, K = a.shape
    P = c.shape[1]
    if nn:
        nn_tile(a, b, c, 0, P, 0, K, False)
        return
    if P < NR and K < NN_K:  # a narrow c with short rows: 4 x 1 strips
        dot_strips(a, bt, c)
        return
    for m0 in range(0, M, MB):
        m1 = min(M, m0 + MB)
        for p0 in range(0, P, NC):
            for k0 in range(0, max(K, 1), KC):  # K == 0 still writes c = 0
                dot_tile(a[m0:m1], bt, c[m0:m1], p0, min(P, p0 + NC), k0, min(K, k0 + KC), k0 > 0)


@njit(**JIT)
def relu(v):
    """max(v, 0) with NaN propagated, as numpy's np.maximum(v, 0)."""
    return v if (v > 0 or v != v) else 0.0


@njit(**JIT)
def forward_rows(x, w, wt, b, relu_out, nn, y):
    """y[n, j] = sum_i x[n, i] * w[i, j] + b[j], then ReLU if relu_out. Serial.

    shapes: x (N, I), w (I, O), wt = w.T (O, I), b (O,) or (0,) for no bias, y (N, O);
    nn picks the micro-kernel (gemm_rows): the NN form reads w, the NT form wt.
    numpy:  y[:] = x @ w + b        (np.maximum(x @ w + b, 0) with relu_out)
    The bias and ReLU are an epilogue on each row block while it is in cache.
    """
    gemm_rows(x, w, wt, y, nn)
    if b.shape[0] > 0:  # one loop per case, so each is a plain vectorisable loop
        for n in range(y.shape[0]):
            for j in range(y.shape[1]):
                y[n, j] += b[j]
    if relu_out:
        for n in range(y.shape[0]):
            for j in range(y.shape[1]):
                y[n, j] = relu(y[n, j])


@njit(**PJIT)
def forward(x, w, wt, b, relu_out, nn, y):
    """Parallel forward_rows. Parallel over blocks of task_rows(N) rows of y: each prange
    iteration owns its rows of y and writes nothing else, so it is race-free."""
    N = x.shape[0]
    mb = task_rows(N)
    for t in prange((N + mb - 1) // mb):
        n0 = t * mb
        n1 = min(N, n0 + mb)
        forward_rows(x[n0:n1], w, wt, b, relu_out, nn, y[n0:n1])


@njit(**JIT)
def transpose_rows(a, out):
    """out[j, i] = a[i, j]   shapes: a (R, C) any layout, out (C, R)   numpy: out[:] = a.T

    Serial, TILE rows of out at a time (transpose_block).
    """
    C = out.shape[0]
    for j0 in range(0, C, TILE):
        transpose_block(a, out, j0, min(C, j0 + TILE))


@njit(**PJIT)
def transpose(a, out):
    """Parallel transpose_rows, for the transposed copy of w that some forms read.
    Parallel over blocks of TILE rows of out (an output axis): each prange iteration
    writes only its rows of out, so it is race-free. Measured against numpy's copy
    (ascontiguousarray(w.T), one thread): 784 x 50 1.6x at 1 thread, 2.5x at 2;
    2048 x 2048 2.9x and 5.5x."""
    C = out.shape[0]
    for t in prange((C + TILE - 1) // TILE):
        transpose_block(a, out, t * TILE, min(C, t * TILE + TILE))
