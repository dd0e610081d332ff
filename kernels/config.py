"""The one place for Numba flags and block sizes.

Kernels import JIT / PJIT from here and never spell ``fastmath=`` themselves.
Block sizes are true constants (Numba freezes globals at compile time), so
changing one here and clearing the cache (``__pycache__/*.nbi``) recompiles
every kernel consistently.
"""

# fastmath without "nnan" and "ninf": NaN and Inf propagate exactly as in numpy.
# "reassoc" lets LLVM vectorise reductions (k-loops and sums over the batch).
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

JIT = dict(nogil=True, cache=True, fastmath=FASTMATH, error_model="numpy", boundscheck=False)
PJIT = dict(JIT, parallel=True)

# Register tile of the "NT" dot micro-kernel (tile.py): MR rows of the output
# times NR columns held in MR*NR scalar accumulators across the k loop.
MR = 4
NR = 4

# Cache blocking: the k (summed) axis is cut into KC-long slices so that a
# row panel of both operands stays in L1/L2 while the tile kernel runs.
KC = 1024
# Columns of the output per cache block: NC rows of bt (NC * KC values) stay in L2.
NC = 64
# Rows of the output given to one parallel task in forward / dx.
MB = 64
# Rows of the batch packed at once for the weight gradient (transposed panels).
NB = 256

# Below this many multiply-adds a call runs serially: launching threads costs
# more than the work.
SERIAL_WORK = 1 << 16
# The weight gradient takes the rank-1 update path (no packing) when I or O
# is this small: such layers are memory-bound.
SMALL_K = 16
# A summed axis up to AXPY_K long, with at least 16 output columns, uses the
# "NN" axpy form (rows of the output built from broadcast scalars) instead of
# the "NT" dot form, whose per-element horizontal reductions would dominate.
AXPY_K = 16
