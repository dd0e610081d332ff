"""Backward pass of y = x @ w + b:  dx = dy @ w.T,  dw = x.T @ dy,  db = dy.sum(0).

With a ReLU after the layer, the gradient reaching the matmul is where(y > 0, dy, 0);
every kernel here can apply that mask on the fly ("masked"), one block of rows
at a time, so no temporary of dy's size is ever made.
"""
import numpy as np
from numba import njit, prange

from .config import JIT, NB, PANEL, PJIT, SHORT_K
from .forward import gemm_rows, task_rows
from .tile import colsum_acc, nn_tile


@njit(**JIT)
def masked_rows(dy, y, d):
    """d[:] = where(y > 0, dy, 0) for one block of rows; returns d (same shape as dy).

    As PyTorch's ReLU backward: an Inf or NaN in dy where the unit was off gives 0.
    """
    for n in range(dy.shape[0]):
        for j in range(dy.shape[1]):
            d[n, j] = dy[n, j] if y[n, j] > 0 else 0.0
    return d


@njit(**JIT)
def input_grad_rows(dy, w, wt, y, masked, nn, dx):
    """dx[n, i] = sum_j d[n, j] * w[i, j] with d = dy, or where(y > 0, dy, 0) if masked. Serial.

    shapes: dy (N, O), w (I, O), wt = w.T (O, I), y (N, O) (any array when not masked), dx (N, I)
    numpy:  dx[:] = dy @ w.T
    Why w.T: dx[n, i] sums over j, the output axis, which is w's second index.
    nn picks the form (gemm_rows): the NT form reads dy and w along j, their
    contiguous axis; the NN form builds rows of dx from rows of wt.
    """
    d = masked_rows(dy, y, np.empty_like(dy)) if masked else dy
    gemm_rows(d, wt, w, dx, nn)


@njit(**PJIT)
def input_grad(dy, w, wt, y, masked, nn, dx):
    """Parallel input_grad_rows. Parallel over blocks of task_rows(N) rows of dx (an output
    axis): each prange iteration owns its rows of dx, so it is race-free."""
    N = dy.shape[0]
    mb = task_rows(N)
    for t in prange((N + mb - 1) // mb):
        n0 = t * mb
        n1 = min(N, n0 + mb)
        input_grad_rows(dy[n0:n1], w, wt, y[n0:n1], masked, nn, dx[n0:n1])


@njit(**JIT)
def dw_transposed(I, O):
    """Whether the per-thread dw partials are stored as dw.T (O, I): when O is
    the shorter axis, so that the NN kernel vectorises along the longer, I."""
    return O < I


@njit(**JIT)
def finish_dw_row(dw_acc, dw, i, accumulate):
    """Merge row i of dw from the partials dw_acc (T, I*O), stored as dw or dw.T."""
    I, O = dw.shape
    part = dw_acc[:, i::I] if dw_transposed(I, O) else dw_acc[:, i * O:(i + 1) * O]
    finish(part, dw[i], accumulate)


@njit(**JIT)
def weight_bias_rows(x, dy, y, masked, want_dw, want_db, dw_acc, db_acc):
    """dw_acc[i, j] += sum_n x[n, i] * d[n, j];  db_acc[j] += sum_n d[n, j]. Serial.

    d = dy, or where(y > 0, dy, 0) when masked. shapes: x (N, I), dy and y (N, O),
    dw_acc (I*O,) float64 holding dw, or dw.T when dw_transposed(I, O); db_acc (O,) float64.
    numpy:  dw_acc += x.T @ d;  db_acc += d.sum(0)
    Why x.T: dw[i, j] sums over the batch n, the first index of both x and dy.
    Why .sum(0): b[j] was added to every row n, so every row sends gradient to b[j].

    The batch is walked in blocks of NB rows; each block's (masked) dy feeds db
    and dw while it is in cache. For dw the NN micro-kernel builds the block's
    dw.T = d.T @ x (or dw = x.T @ d when I is the shorter axis), reading the
    batch rows of x (or d) as they lie in memory, so nothing is packed; the
    longer of I and O is the vectorised axis. The block's result is formed in
    the data's dtype and added to the float64 accumulator once per block. For
    a wide output, the rows of dw (or dw.T) are taken in panels of about PANEL
    values, each walking the whole batch, so that the panel's block and
    accumulator stay in L2 while they are merged (at the cost of reading the
    batch once per panel). With ReLU, d is one block of scratch, masked again
    for each panel.
    """
    N, I = x.shape
    O = dy.shape[1]
    if not (want_dw or masked):  # db alone: one pass, no blocks
        colsum_acc(dy, db_acc)
        return
    tr = dw_transposed(I, O)
    R, P = (O, I) if tr else (I, O)
    if not want_dw:
        R = 0
    rp = max(2, min(R, PANEL // max(P, 1)))  # rows of the output per panel
    acc = dw_acc.reshape((R, P))
    block = np.empty((min(rp, R), P), x.dtype)
    scratch = np.empty((NB if masked else 0, O), dy.dtype)
    for r0 in range(0, max(R, 1), rp):  # one pass even when no dw is wanted, for db
        r1 = min(R, r0 + rp)
        for n0 in range(0, N, NB):
            n1 = min(N, n0 + NB)
            d = masked_rows(dy[n0:n1], y[n0:n1], scratch[:n1 - n0]) if masked else dy[n0:n1]
            if want_db and r0 == 0:
                colsum_acc(d, db_acc)
            if r1 <= r0:
                continue
            part = block[:r1 - r0]
            if tr:
                nn_tile(d.T[r0:r1], x[n0:n1], part, 0, P, 0, n1 - n0, False)
            else:
                nn_tile(x[n0:n1].T[r0:r1], d, part, 0, P, 0, n1 - n0, False)
            for r in range(r1 - r0):
                for p in range(P):
                    acc[r0 + r, p] += part[r, p]


@njit(**JIT)
def finish(acc, out, accumulate):
    """out[r] = sum_t acc[t, r] (+ out[r] when accumulate). Serial over r.

    acc (T, R) float64 per-thread partials, out (R,). Sums the T partials in
    float64 and rounds once to out's dtype.
    """
    for r in range(out.shape[0]):
        s = out[r] + 0.0 if accumulate else 0.0
        for t in range(acc.shape[0]):
            s += acc[t, r]
        out[r] = s


@njit(**JIT)
def weight_bias_chunk(x, dy, y, masked, want_dw, want_db, dw_acc, db_acc, t):
    """Chunk t of T = dw_acc.shape[0] equal slices of the batch, into partials t only."""
    N = x.shape[0]
    T = dw_acc.shape[0]
    n0 = t * N // T
    n1 = (t + 1) * N // T
    weight_bias_rows(x[n0:n1], dy[n0:n1], y[n0:n1], masked, want_dw, want_db, dw_acc[t], db_acc[t])


@njit(**PJIT)
def weight_bias_grad(x, dy, y, masked, want_dw, want_db, accumulate, dw_acc, db_acc, dw, db):
    """Parallel, fused dw = x.T @ d and db = d.sum(0) (d = dy, masked by y > 0 if asked).

    shapes: x (N, I), dy and y (N, O), dw (I, O), db (O,); with accumulate, dw += and db +=.
    dw_acc (T, I*O) and db_acc (T, O): zeroed float64 scratch, one row per chunk
    (empty along axis 1 for a gradient not wanted).
    numpy:  dw[:] = x.T @ d;  db[:] = d.sum(0)
    Parallel over the T chunks of the batch with per-thread partials: iteration
    t writes only dw_acc[t] and db_acc[t], so no element is shared. The
    partials are then merged in parallel over rows i of dw (an output axis:
    each iteration owns dw[i]).
    """
    for t in prange(dw_acc.shape[0]):
        weight_bias_chunk(x, dy, y, masked, want_dw, want_db, dw_acc, db_acc, t)
    if want_dw:
        for i in prange(dw.shape[0]):
            finish_dw_row(dw_acc, dw, i, accumulate)
    if want_db:
        finish(db_acc, db, accumulate)


@njit(**JIT)
def weight_bias_grad_serial(x, dy, y, masked, want_dw, want_db, accumulate, dw_acc, db_acc, dw, db):
    """weight_bias_grad on the calling thread, for work too small to start threads for."""
    for t in range(dw_acc.shape[0]):
        weight_bias_chunk(x, dy, y, masked, want_dw, want_db, dw_acc, db_acc, t)
    if want_dw:
        for i in range(dw.shape[0]):
            finish_dw_row(dw_acc, dw, i, accumulate)
    if want_db:
        finish(db_acc, db, accumulate)


@njit(**JIT)
def dw_columns(x, d, dwt, dw, i0, i1, accumulate):
    """dw[i0:i1] (+)= x[:, i0:i1].T @ d, built as dwt[:, i0:i1] = d.T @ x[:, i0:i1] first.

    shapes: x (N, I), d (N, O), dwt (O, I) scratch, dw (I, O). Serial.
    Rows of dw.T are I values long, so the NN kernel vectorises along the
    longer axis when O < I; the block is then transposed into dw (measured on a
    batch of 64, 784 -> 50: 2.1x float32 and 1.2x float64 against building
    dw's 50-value rows directly).
    """
    nn_tile(d.T, x, dwt, i0, i1, 0, x.shape[0], False)
    for i in range(i0, i1):
        if accumulate:
            for j in range(dw.shape[1]):
                dw[i, j] += dwt[j, i]
        else:
            for j in range(dw.shape[1]):
                dw[i, j] = dwt[j, i]


@njit(**JIT)
def direct_transposed(N, I, O):
    """Whether a small batch's dw goes through dw.T (dw_columns): when O < I, and the
    batch is long enough (N >= SHORT_K) that the transpose costs less than it saves."""
    return dw_transposed(I, O) and N >= SHORT_K


@njit(**JIT)
def bias_direct(d, db, accumulate):
    """db[:] (+)= d.sum(0) for a small batch: summed in float64, rounded once. Serial."""
    acc = np.zeros((1, db.shape[0]))
    colsum_acc(d, acc[0])
    finish(acc, db, accumulate)


@njit(**JIT)
def weight_bias_direct(x, dy, y, masked, want_dw, want_db, accumulate, dw, db):
    """weight_bias_grad for a batch of at most NB rows, written straight into dw and db.

    shapes as weight_bias_grad. numpy: dw[:] (+)= x.T @ d;  db[:] (+)= d.sum(0)
    The small-batch form: no per-thread partials and no merge. dw is built by
    the NN micro-kernel, in the data's dtype (a sum of at most NB terms), along
    its longer axis (dw_columns, when direct_transposed); db is summed in
    float64 and rounded once. Serial.
    """
    N, I = x.shape
    O = dy.shape[1]
    d = masked_rows(dy, y, np.empty_like(dy)) if masked else dy
    if want_dw and direct_transposed(N, I, O):
        dw_columns(x, d, np.empty((O, I), dw.dtype), dw, 0, I, accumulate)
    elif want_dw:
        nn_tile(x.T, d, dw, 0, O, 0, N, accumulate)
    if want_db:
        bias_direct(d, db, accumulate)


@njit(**PJIT)
def weight_bias_direct_parallel(x, dy, y, masked, want_dw, want_db, accumulate, dw, db, tasks):
    """Parallel weight_bias_direct. When dw goes through dw.T it is parallel over
    ``tasks`` blocks of columns i of dw.T (rows i of dw, an output axis): each
    prange iteration owns dwt[:, i0:i1] and dw[i0:i1], so it is race-free; db (O
    values) is then summed serially. Otherwise serial. One block per thread:
    eight blocks of 98 columns (I = 784) left the NN kernel's rows too short to
    gain anything at 2 threads; two took a batch of 64, 784 -> 50 from 80 to 54 us."""
    N, I = x.shape
    O = dy.shape[1]
    if not (want_dw and direct_transposed(N, I, O)):
        weight_bias_direct(x, dy, y, masked, want_dw, want_db, accumulate, dw, db)
        return
    d = masked_rows(dy, y, np.empty_like(dy)) if masked else dy
    dwt = np.empty((O, I), dw.dtype)
    for t in prange(tasks):
        dw_columns(x, d, dwt, dw, t * I // tasks, (t + 1) * I // tasks, accumulate)
    if want_db:
        bias_direct(d, db, accumulate)
