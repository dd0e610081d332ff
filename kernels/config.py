"""The one place for Numba flags and block sizes.

Kernels import JIT / PJIT from here and never spell ``fastmath=`` themselves.
Block sizes are true constants (Numba freezes globals at compile time), so
changing one here and clearing the cache (``kernels/__pycache__/*.nb[ic]``)
recompiles every kernel consistently.
"""

# fastmath without "nnan" and "ninf": NaN and Inf propagate exactly as in numpy.
# "reassoc" lets LLVM vectorise reductions (k-loops and sums over the batch).
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

JIT = dict(nogil=True, cache=True, fastmath=FASTMATH, error_model="numpy", boundscheck=False)
PJIT = dict(JIT, parallel=True)

# Register tile of the "NT" dot micro-kernel (tile.dot_tile): 4 x 4 (written out).
NR = 4

# Cache blocking: the k (summed) axis is cut into KC-long slices so that a
# row panel of both operands stays in L2 while the tile kernel runs. Measured on
# 2048^3 (float32, 1 thread, against OpenBLAS): KC 512 -> 0.65x, 1024 -> 0.76x,
# 2048 -> 0.83x: each slice ends in 16 horizontal reductions per 4x4 tile, and
# the hardware prefetcher streams the long rows well.
KC = 2048
# Columns of the output per cache block: NC rows of bt (NC * KC values) stay in L2.
NC = 64
# Rows of the output per cache block, and per parallel task in forward / dx:
# MB, or fewer (down to 8) so that a small batch still makes TASKS tasks.
# (2048^3: MB 64 -> 0.83x, 128 -> 0.84x of OpenBLAS with KC = 2048.)
MB = 128
TASKS = 8
# Rows of the batch per block of the weight and bias gradients. Each block's dw
# and db are summed in the data's dtype, then added to float64 partials, so the
# float32 rounding error grows with NB, not with the batch (64: no worse than
# numpy's pairwise sum, tests/test_accuracy.py). Also the batch-chunk granule.
NB = 64

# Batches up to SMALL_N rows use the form that needs no transposed copy of w
# (for I x O = 784 x 50 the tiled copy costs about 15 us at 1 thread, numpy's
# was 24). Measured on 784 -> 50, 1 thread, copy included: the forward breaks
# even at 16 rows in both dtypes, and with the copy is 1.3x faster at 24 and
# 1.5x at 32; dx with it is 1.35x faster at 24-32 rows in float32 but 1.1-1.2x
# slower in float64 (where its NT form keeps up to 48 rows). One threshold.
SMALL_N = 16
# Below this many multiply-adds a call runs serially: launching threads costs
# more than the work.
SERIAL_WORK = 1 << 16
# A summed axis shorter than NN_K, with at least 16 output columns, uses the
# "NN" micro-kernel (rows of the output built from broadcast scalars, 2 rows x
# 4 k per pass) instead of the "NT" dot form, whose per-output horizontal
# reductions dominate when k is short.
NN_K = 128
# A summed axis shorter than SHORT_K (a rank-1 or rank-2 update) goes to
# tile.nn_short, one row of the output at a time, first term stored: measured
# 2.5x nn_tile for 1 term, 1.6x for 2, 0.9x for 3.
SHORT_K = 3
# Values of dw per L2 panel in the weight gradient: the panel's block (data
# dtype) and float64 accumulator, 768 KiB for float32, stay in L2 while each
# batch block is merged in. Panels are whole rows of dw (or dw.T): 256-column
# slices ran 25% slower on 784 -> 50 than full rows.
PANEL = 65536
# The transposed copy of w (forward.transpose) moves TILE x TILE blocks, so the
# TILE source rows and TILE destination rows of a block stay in L1. Measured
# against one destination row at a time: 784 x 50 1.6x, 2048 x 2048 2.9x.
TILE = 16

# ---- the GEMM engine (micro.py, engine.py, plan.py) ----
def _vector_bytes():
    """Width of the host's vector registers: 64 bytes with AVX-512, else 32 (AVX2).
    Numba compiles for the host CPU and keys its cache on it, so the choice
    follows the machine the kernels run on."""
    import llvmlite.binding as llvm
    return 64 if "+avx512f" in llvm.get_host_cpu_features().flatten().split(",") else 32


VECTOR_BYTES = _vector_bytes()
# The micro-kernel's register block: MR rows (broadcast from A) by NV vectors
# (NR = NV * VECTOR_BYTES / itemsize columns, loaded from B): MR * NV
# accumulators, NV loads of B and MR broadcasts of A per k.
MR = 6
NV = 2
# Terms of a float32 sum over the batch (dw) added in float32 registers before
# each is added into the float64 partials: the float32 error grows with KF,
# not with the batch (tests/test_accuracy.py holds it to numpy's pairwise sum).
KF = 64
# Blocks of the forward and dx (C's rows are the batch). A summed axis up to
# KC_MAX long is taken whole: each tile of C is then stored once, and the rows
# of x it reads stay in L1 while the panels of B go by. Longer ones are cut into
# KC_BLOCK slices. MC rows of C per block when A is read in place, MC_PACKED
# when it is packed (masked or non-contiguous A), so that the packed block
# stays in L2.
KC_MAX = 1024
KC_BLOCK = 512
MC = 12
MC_PACKED = 96
# Blocks of dw: KC_DW rows of the batch by MC_DW outputs of d.T per packed block.
KC_DW = 256
MC_DW = 96
# db alone: rows of the batch per thread at least (below, the sum runs serially).
REDUCE_ROWS = 4096
