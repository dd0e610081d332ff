import numba
import numpy as np
import pytest

import lingrad

DTYPES = [np.float32, np.float64]


@pytest.fixture(params=[1, numba.config.NUMBA_NUM_THREADS], ids=lambda n: f"threads{n}")
def threads(request):
    """Run a test once on one thread and once on all of Numba's threads."""
    with lingrad.num_threads(request.param):
        yield request.param


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def layout(a, kind):
    """The same values as ``a`` in another memory layout."""
    if kind == "C":
        return np.ascontiguousarray(a)
    if kind == "F":
        return np.asfortranarray(a)
    if kind == "strided":  # every other column of a wider array: not contiguous
        wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        wide[..., ::2] = a
        return wide[..., ::2]
    if kind == "reversed":  # negative strides along the first axis
        return np.ascontiguousarray(a[::-1])[::-1]
    raise ValueError(kind)


def bound(dtype, k, scale):
    """Worst-case rounding bound for a k-term sum in ``dtype``: about k * eps * sum|terms|.

    Any summation order (blocked, pairwise, vectorised) stays within
    (k + 1) * eps * sum|terms|; float32 results are compared with a float64
    reference computed from the same (exactly representable) inputs.
    """
    eps = np.finfo(dtype).eps
    return (k + 2) * eps * scale + np.finfo(dtype).tiny


def assert_close(got, ref64, scale, k, dtype):
    assert got.dtype == np.dtype(dtype), f"result dtype {got.dtype}, expected {np.dtype(dtype)}"
    assert got.shape == ref64.shape, f"shape {got.shape}, expected {ref64.shape}"
    err = np.abs(got.astype(np.float64) - ref64)
    tol = bound(dtype, k, scale)
    assert np.all(err <= tol), f"max error {err.max()} above bound {tol.max()}"
