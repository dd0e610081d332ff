"""Speed and memory of the linear layer, lingrad next to numpy.

Each benchmark takes a parameter impl, "lingrad" or "numpy": asv compare lists
both, and asv's HTML draws them as two lines of the same graph. The
operations: Forward y = x @ w + b; InputGrad dx = dy @ w.T; WeightGrad
dw = x.T @ dy; BiasGrad db = dy.sum(0); Backward all three in one call; Step a
ReLU layer's forward then its backward (common.OPS holds both versions).
"""
import functools
import tracemalloc

from numba.core.runtime import rtsys

from .common import (DTYPES, IMPLS, OPS, SHAPES, best_time, flops, layer_data, pin_threads,
                     warm_up)


def _prepare(op, dtype, shape, impl):
    """The call to measure, ready to run: threads pinned, data made, JIT warm."""
    pin_threads()
    fn = functools.partial(OPS[op][impl], layer_data(shape, dtype))
    warm_up((op, dtype, shape, impl), fn)
    return fn


class _Layer:
    """Time of one operation (the subclass's ``op``) over dtype x shape x impl.
    setup calls it once first, so no timed call includes JIT compilation."""
    op = None
    params = [DTYPES, list(SHAPES), IMPLS]
    param_names = ["dtype", "shape", "impl"]
    timeout = 180

    def setup(self, dtype, shape, impl):
        self.fn = _prepare(self.op, dtype, shape, impl)

    def time_call(self, dtype, shape, impl):
        self.fn()


class _Matmul(_Layer):
    """_Layer, plus its speed in GFLOP/s."""

    def track_gflops(self, dtype, shape, impl):
        """flops(op) / the fastest of a few calls, in 1e9 flop per second."""
        return flops(self.op, *SHAPES[shape]) / best_time(self.fn) / 1e9
    track_gflops.unit = "GFLOP/s"


class Forward(_Matmul):
    op = "forward"


class InputGrad(_Matmul):
    op = "input_grad"


class WeightGrad(_Matmul):
    op = "weight_grad"


class BiasGrad(_Layer):  # N*O additions: memory-bound, so no GFLOP/s
    op = "bias_grad"


class Backward(_Matmul):
    op = "backward"


class Step(_Matmul):
    op = "step"


class Memory:
    """Memory of one call of each operation, float32 (float64 doubles the arrays;
    lingrad's partial sums are float64 in both).

    track_peak_bytes: peak bytes allocated through Python's allocators during one
    call (tracemalloc), outputs included. numpy registers its arrays there, and
    Numba's runtime allocates through PyMem_RawMalloc, which tracemalloc traces too,
    so this counts lingrad's outputs, packed w, float64 partial sums and the kernels'
    per-thread packing buffers, and numpy's temporaries. NrtAllocs counts the
    kernels' own allocations.
    """
    params = [list(OPS), list(SHAPES), IMPLS]
    param_names = ["op", "shape", "impl"]

    def setup(self, op, shape, impl):
        self.fn = _prepare(op, "float32", shape, impl)

    def track_peak_bytes(self, op, shape, impl):
        tracemalloc.start()
        try:
            self.fn()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    track_peak_bytes.unit = "bytes"


class NrtAllocs:
    """Allocations that lingrad's kernels make through Numba's runtime (NRT) in one
    float32 call: scratch they create themselves (each thread's packing buffers
    for blocks of A and of B, in engine.gemm_task). NRT counts allocations, not bytes. Needs NUMBA_NRT_STATS=1 before
    numba is imported, which benchmarks/__init__.py sets; the counters can be
    read once the runtime has started, i.e. after the warm-up call."""
    params = [list(OPS), list(SHAPES)]
    param_names = ["op", "shape"]
    unit = "allocations"

    def setup(self, op, shape):
        self.fn = _prepare(op, "float32", shape, "lingrad")
        try:
            rtsys.get_allocation_stats()
        except RuntimeError as e:  # "NRT stats are disabled": numba imported before the switch
            raise NotImplementedError(str(e)) from e

    def track_nrt_allocs(self, op, shape):
        before = rtsys.get_allocation_stats().alloc
        self.fn()
        return rtsys.get_allocation_stats().alloc - before
