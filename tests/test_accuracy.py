"""float32 reductions over long batches: db = dy.sum(0) with N up to 10**7, dw = x.T @ dy with N up to 10**6.

Each result is compared with an exact reference (math.fsum for one column of db, float64
sums otherwise: their own error, about log2(N) * 1e-16 relative, is far below float32's 6e-8),
and its error must be no worse than numpy's pairwise summation of the same float32 data:

    rms(lingrad - exact) <= rms(pairwise - exact) + rms(ulp(exact)) / 2

The half ulp is the rounding of the final float32 result, which neither method can avoid.
Pairwise baseline: ``np.sum`` along a contiguous 1-D axis, i.e. ``np.ascontiguousarray(dy.T).sum(1)``.
(numpy's ``dy.sum(0)`` on a C-order (N, O) array is NOT pairwise along axis 0: it adds
whole rows one after another, a running sum whose error grows like N.)
For dw the baseline forms each product x[n, i] * dy[n, j] in float32, then sums pairwise.

Two data sets: standard normal (zero mean: the sums are small, the rounding of the
partial sums is what shows) and uniform [0, 1) (all positive: a naive running sum
drifts). Seeds are fixed. Numbers measured with these tests are in docs/guarantees.md.
"""
import itertools
import math

import numpy as np
import pytest

import lingrad

SEED = 20240606


def draw(rng, shape, dist):
    if dist == "normal":
        return rng.standard_normal(shape, dtype=np.float32)
    if dist == "normal+1":
        return rng.standard_normal(shape, dtype=np.float32) + np.float32(1)
    return rng.random(shape, dtype=np.float32)


def rms(e):
    return float(np.sqrt(np.mean(np.square(e))))


def half_ulp(exact):
    """rms of half an ulp of the float32 nearest to each exact value."""
    return rms(np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)) / 2


def assert_no_worse_than_pairwise(got, pairwise, exact):
    assert got.dtype == np.float32
    e_got = rms(got.astype(np.float64) - exact)
    e_pw = rms(pairwise.astype(np.float64) - exact)
    allowed = e_pw + half_ulp(exact)
    assert e_got <= allowed, (f"rms error {e_got:.3e} above numpy pairwise {e_pw:.3e} "
                              f"+ half an ulp {half_ulp(exact):.3e}")


# ---- db = dy.sum(0) ---------------------------------------------------------------
def exact_colsum(columns):
    """Sum of each row of ``columns`` (O, N): math.fsum (exact) for a single column; for
    several, a float64 pairwise sum, whose error (about log2(N) * 1.1e-16 * sum|dy|) is
    some 10**8 times below float32's."""
    if columns.shape[0] == 1:
        c = columns[0]
        chunks = (c[k:k + (1 << 20)].tolist() for k in range(0, c.size, 1 << 20))
        return np.array([math.fsum(itertools.chain.from_iterable(chunks))])
    return columns.astype(np.float64).sum(1)


# A single zero-mean column is left out on purpose: its error is one sample of a random
# walk, so comparing it with numpy's (another sample) is a coin toss, not a test. Zero-mean
# data is compared over 8 and 32 columns, where the rms averages that noise away.
DB_CASES = [
    pytest.param(10**7, 1, "uniform", id="1e7x1-uniform"),
    pytest.param(10**7, 1, "normal+1", id="1e7x1-normal+1"),
    pytest.param(10**6, 8, "uniform", id="1e6x8-uniform"),
    pytest.param(10**6, 32, "uniform", id="1e6x32-uniform"),
    pytest.param(10**6, 8, "normal", id="1e6x8-normal"),
    pytest.param(10**6, 32, "normal", id="1e6x32-normal"),
]


@pytest.mark.parametrize("N,O,dist", DB_CASES)
def test_bias_grad_long_batch(N, O, dist):
    dy = draw(np.random.default_rng(SEED), (N, O), dist)
    columns = np.ascontiguousarray(dy.T)
    assert_no_worse_than_pairwise(lingrad.bias_grad(dy), columns.sum(1), exact_colsum(columns))


# ---- dw = x.T @ dy ----------------------------------------------------------------
def exact_weight_grad(x, dy, chunk=1 << 16):
    """x.T @ dy in float64, a chunk of rows at a time (float32 products are exact in float64)."""
    acc = np.zeros((x.shape[1], dy.shape[1]))
    for n0 in range(0, x.shape[0], chunk):
        acc += x[n0:n0 + chunk].astype(np.float64).T @ dy[n0:n0 + chunk].astype(np.float64)
    return acc


def pairwise_weight_grad(x, dy):
    """dw[i, j] = np.sum(x[:, i] * dy[:, j]) in float32, pairwise along a contiguous axis."""
    dyt = np.ascontiguousarray(dy.T)
    return np.stack([(np.ascontiguousarray(x[:, i]) * dyt).sum(1) for i in range(x.shape[1])])


# (N, I, O): batches of 4e5 to 1e6 rows, one narrow dw (16 x 4) and two wider ones (24 x 20,
# 40 x 36), from normal and from uniform data: the rms error of the float32 dw (each element
# a sum over the whole batch) must be no worse than that of numpy's pairwise sum of the same
# float32 products, plus half an ulp (assert_no_worse_than_pairwise).
DW_CASES = [
    pytest.param(10**6, 16, 4, "normal", id="1e6x16x4-normal"),
    pytest.param(10**6, 16, 4, "uniform", id="1e6x16x4-uniform"),
    pytest.param(10**6, 24, 20, "normal", id="1e6x24x20-normal"),
    pytest.param(4 * 10**5, 40, 36, "uniform", id="4e5x40x36-uniform"),
]


@pytest.mark.parametrize("N,I,O,dist", DW_CASES)
def test_weight_grad_long_batch(N, I, O, dist):
    rng = np.random.default_rng(SEED)
    x, dy = draw(rng, (N, I), dist), draw(rng, (N, O), dist)
    assert_no_worse_than_pairwise(lingrad.weight_grad(x, dy), pairwise_weight_grad(x, dy),
                                  exact_weight_grad(x, dy))


def test_fused_backward_long_batch_matches_standalone():
    """The fused dw/db pass has the same accuracy as the separate calls (same data, same sums)."""
    rng = np.random.default_rng(SEED)
    x, w, dy = draw(rng, (10**6, 4), "uniform"), draw(rng, (4, 3), "uniform"), draw(rng, (10**6, 3), "uniform")
    g = lingrad.linear_backward(x, w, dy, need_dx=False)
    columns = np.ascontiguousarray(dy.T)
    assert_no_worse_than_pairwise(g.db, columns.sum(1), exact_colsum(columns))
    assert_no_worse_than_pairwise(g.dw, pairwise_weight_grad(x, dy), exact_weight_grad(x, dy))


# A short batch (at most DW_DIRECT_ROWS rows) runs dw = x.T @ d in place: float32 sums of
# at most KF rows, in chunks of equal length added into dw. Its error must be no worse than
# numpy's own x.T @ dy (BLAS: one float32 running sum per output, the kernel numpy users
# get), and past KF rows, where two half-length sums are added, clearly smaller (a single
# running sum, or a chunk of KF rows and a short rest, would match BLAS's). Neither meets
# the pairwise bound of the long-batch tests on every row at these lengths
# (docs/guarantees.md).
@pytest.mark.parametrize("N", [16, 64, 65, 100, 128, 129, 256, 512])
@pytest.mark.parametrize("dist", ["uniform", "normal"])
def test_weight_grad_short_batch_no_worse_than_blas(N, dist):
    rng = np.random.default_rng(SEED + N)
    x, dy = draw(rng, (N, 784), dist), draw(rng, (N, 50), dist)
    exact = exact_weight_grad(x, dy)
    got = lingrad.weight_grad(x, dy)
    assert got.dtype == np.float32
    e_got, e_blas = rms(got.astype(np.float64) - exact), rms((x.T @ dy).astype(np.float64) - exact)
    bound = e_blas * (1.001 if N <= lingrad.kernels.KF else 0.9)
    assert e_got <= bound, f"rms error {e_got:.3e}, numpy's x.T @ dy {e_blas:.3e}"
