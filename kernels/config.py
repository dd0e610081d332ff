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
# A driver called from one place only: Numba inlines its IR into the caller, so it is not
# also compiled on its own (compile time: docs/performance.md, "Compile time").
INLINE = dict(JIT, inline="always")

# Below this many multiply-adds a call runs serially: launching threads costs
# more than the work.
SERIAL_WORK = 1 << 16

# ---- the GEMM engine (micro.py, engine.py, plan.py) ----
def _vector_bytes():
    """Width of the vector registers Numba compiles for: 64 bytes with AVX-512, else 32
    (AVX2). Numba compiles for the host CPU unless NUMBA_CPU_NAME / NUMBA_CPU_FEATURES
    name another (a portable cache, or a test of the AVX2 build on an AVX-512 machine),
    and keys its cache on that choice, so the block shape follows the same choice:
    the features given, else 32 bytes for a named CPU, else the host's."""
    import llvmlite.binding as llvm
    import numba
    features = numba.config.CPU_FEATURES
    if features is None:
        if numba.config.CPU_NAME not in (None, "host"):
            return 32
        features = llvm.get_host_cpu_features().flatten()
    return 64 if "+avx512f" in features.split(",") else 32


VECTOR_BYTES = _vector_bytes()
# The micro-kernel's register block: MR rows (broadcast from A) by NV vectors
# (NR = NV * VECTOR_BYTES / itemsize columns, loaded from B): MR * NV
# accumulators, NV loads of B and MR broadcasts of A per k. With AVX2's 16
# registers, 6 x 2 (12 accumulators, 2 of B, 1 broadcast): measured on packed,
# L1/L2-resident panels (Zen 3, 1 thread, against numpy's 1024^3 in the same
# run): 6 x 2 0.87-1.09x, 4 x 3 0.84-0.99x, 5 x 2 0.89x, 8 x 1 0.69x, 3 x 4
# 0.45x, 2 x 6 0.46x (the last two spill). AVX-512 has 32 registers: 12 x 2
# there is the same shape doubled. It runs on the AVX-512 Xeon of 2026-12-03 (python -m
# lingrad bench, 1 thread: mlp forward 0.98x torch, 87% of numpy's GEMM peak), but the
# other shapes were not measured there.
MR = 6 if VECTOR_BYTES == 32 else 12
# A tile of at most MR_SHORT rows (a batch of 1 to 4 rows, the last rows of a short M) runs
# a copy of the micro-kernel compiled for MR_SHORT rows instead of computing MR, and a tile
# of one row (a batch of 1, the d.T of a layer with one output) a copy compiled for one
# row: 1 broadcast, NV loads and NV FMAs per k (Zen 5, 2026-12-04, a 1 x 32 tile's call
# for K = 64: 79 ns with the 4-row copy, 49 ns with the 1-row one; forward 1 x 784 -> 50
# float32 6.2 -> 5.0 us).
MR_SHORT = 4
NV = 2
# The wide register block: MR_WIDE rows by NV_WIDE vectors (6 x 64 float32 columns with
# AVX-512, the same 24 accumulators), half the broadcasts of A per FMA. The plan
# (plan.register_block) runs a product on it when it fills at least WIDE_FILL times the share of
# its columns that the MR x NV block fills (50 columns fill 50/64 of either, 24 fill 24/64
# of the wide one and 24/32 of the other), and, where C is written in place (the forward,
# dx, the short-batch dw), when the sum is at least WIDE_MIN_K long; the long-batch dw, whose
# float32 sums go into float64 partials, gains at any length. Zen 4 (AVX-512 on 256-bit
# units, 2026-12-06), 1 thread, float32, numpy's 2048^3 at 102-105 GFLOP/s in the same runs,
# 12 x 2 / 6 x 4 GFLOP/s (alternating processes; the ranges are 2-4 runs):
#   2048^3 forward 92 / 104-107, dx 93 / 103-106, dw 75 / 79-83
#   long-batch dw of 50000 x 784 -> 50 48-54 / 65-71; 4096 x 784 -> 24 33-37 / 72-76,
#   -> 32 35-45 / 58-75, -> 40 45-48 / 68-78, -> 64 53-55 / 72-74, -> 100 62-63 / 58-74
#   forward of 4096 x 24 -> 784 (K = 24) 71-78 / 55-60, 4096 x 100 -> 784 89-93 / 81-87,
#   dx of 4096 x 784 -> 100 (K = 100) 89-94 / 81-84, -> 64 86-90 / 78-84 (short sums:
#   the 12 x 2 block is faster); forward 4096 x 784 -> 64 and -> 100 (K = 784): equal
#   with the wide block's idle columns: forward of 4096 x 784 -> 24 78 / 40, -> 32 104 / 53
# AVX2 has 16 registers: no wide block (MR_WIDE x NV_WIDE is MR x NV).
MR_WIDE = MR if VECTOR_BYTES == 32 else 6
NV_WIDE = NV if VECTOR_BYTES == 32 else 4
WIDE_FILL = 0.85
WIDE_MIN_K = 512
# The tall register block: MR_TALL rows by one vector (24 x 16 float32 with AVX-512, 12 x 8
# with AVX2: the same accumulators), for a C of at most one vector of columns, which fills
# half of the MR x NV block or less. Each broadcast of A feeds one FMA, which LLVM folds into
# it (vfmadd231ps (mem){1to16}), so no broadcast takes a vector pipe: on L1-resident panels
# (Zen 4, 1 thread, kc = 256) 24 x 1 ran 6.72 ns per k, 12 x 2 6.70 (both the FMA limit).
# Zen 4, 2026-12-06, float32, 1 thread, alternating processes, 12 x 2 / 24 x 1, ms: dw of
# 50000 x 16 -> 256 (dw.T = d.T @ x: 16 columns) 19.3-21.5 / 16.4-16.5, its dx (16 columns)
# 10.5-12.4 / 8.9-9.0; forward 10000 x 784 -> 16 5.2 / 3.4-3.6, 10000 x 256 -> 16 1.7-2.0 /
# 1.0-1.1; dx of 20000 x 12 -> 100 1.35 / 0.68-0.75, its dw 2.4 / 1.4. A tile of rows is
# then MR_TALL rows: MC is at least that (plan.gemm); at MC = 12 the 24-row copy ran 12.
MR_TALL = 2 * MR
NV_TALL = 1
# The register blocks by the code a plan gives (plan.register_block, blocks[3]): 0 MR x NV,
# 1 the wide block, 2 the tall one; (rows, vectors) each.
BLOCKS = ((MR, NV), (MR_WIDE, NV_WIDE), (MR_TALL, NV_TALL))
# The micro-kernel prefetches the row of B PREFETCH values of k ahead. AVX-512 Xeon,
# 2026-12-03, 1 thread, against numpy in the same run (none / 8 / 16 / 32 ahead):
# 2048^3 forward 0.71-0.75x / 0.78x / 0.83x / 0.82x, dx 0.62-0.74x / 0.76x / 0.82x / 0.86x;
# lesson-1 dw 0.61-0.66x / 0.77x / 0.75x / 0.70x; mlp forward 1.12-1.19x / 1.07x / 1.13x /
# 1.15x. Unrolling the k loop by 2 was tried on the same shapes: no change beyond noise.
PREFETCH = 16
# Terms of a float32 sum over the batch (dw) added in float32 registers before
# each is added into the float64 partials: the float32 error grows with KF,
# not with the batch (tests/test_accuracy.py holds it to numpy's pairwise sum).
# 2026-12-04, Zen 5: KF = 128 and 256 fail test_weight_grad_long_batch on normal data
# (1e6 x 16 x 4 and 1e6 x 24 x 20), though KF = 256 ran lesson-1's float32 dw at 1 thread
# at 134-144 against 98-126 GFLOP/s: the float64 flush of each tile is what float32 dw
# pays for its accuracy (docs/performance.md).
KF = 64
# The dot kernel (micro.dot) computes a block of C of up to DOT_COLS columns, each output
# one vector dot product along k, in DOT_ACC accumulators (half of AVX-512's 32 registers,
# of AVX2's 16): DOT_ACC // cols rows per call, a load of A per row and of B per column for
# each vector of k. The plan uses it for a forward or dx whose output has at most
# NR / DOT_SHARE columns, where the micro-kernel would fill a third of its NR-wide tile or
# less. Zen 5 (AVX-512), 2026-12-03, 1 thread, forward, dot / micro-kernel time, N = 2048:
#   float32 (NR 32): I x O = 50 x 10 0.90, 256 x 10 0.66, 784 x 4 0.33, 784 x 8 0.46,
#                    256 x 16 0.84, 784 x 16 1.35, 64 x 24 1.76, 256 x 32 1.82
#   float64 (NR 16): 50 x 10 0.61, 256 x 10 0.92, 784 x 4 0.63, 784 x 8 1.12, 784 x 16 1.95
DOT_ACC = 16 if VECTOR_BYTES == 64 else 8
DOT_COLS = 4
DOT_SHARE = 3
# Those measurements predate the tall block (MR_TALL x 1 vector): for N <= L lanes it
# does one FMA per row of C and value of k, whatever N, where the dot kernel does, per
# output, a vector FMA per L values of k plus the sum across lanes and the store. Model:
# the dot kernel pays while N * (ceil(K / L) + DOT_REDUCE) <= TALL_PER_K * K (both in
# vector FMAs per row of C). Fitted on Zen 4, 2026-12-06, 1 thread, forward of 4096 rows,
# dot / tall time (> 1: the tall block is faster):
#   float32, N =      2    3    4    6    8   10       float64, N =  2    3    4    5
#     K = 16       0.63 0.83 0.93 1.68 2.08 2.63         K = 16    0.73 0.93 1.12 1.65
#     K = 50       0.44 0.59 0.69 1.23 1.47 1.93         K = 50    0.51 0.65 0.82 1.29
#     K = 128      0.24 0.31 0.46 0.72 0.90 1.05         K = 128   0.42 0.51 0.63 1.07
#     K = 256      0.26 0.29 0.35 0.62 0.78 0.99         K = 256   0.31 0.26 0.37 0.67
#     K = 784      0.27 0.32 0.33 0.65 0.67 1.01         K = 784   0.47 0.64 0.68 0.97
# (the least-squares fit of both tables gives 1.9-2.0 and 0.69-0.78). The train step's
# 1024 x 50 -> 10 forward: 43.2 -> 23.5 us (numpy 26.4); 50000 x 50 -> 10: 1542 -> 848.
DOT_REDUCE = 2
TALL_PER_K = 0.75
# ... and for a product of at most DOT_MAX_ROWS rows whose B has contiguous columns (dx's
# w.T of a C-order w), which the micro-kernel would have packed whole for a few rows.
DOT_MAX_ROWS = 4

# A product summed over at most AXPY_MAX_K values of k (an outer product, mostly) runs as
# scaled rows of B added into each row of C (engine.axpy_block), not as micro-kernel calls
# of a k or two each. Zen 5, 2026-12-03, float32, 1 thread, dx = d @ w.T as M x K x N,
# axpy / micro-kernel path, us: 50000x1x50 179 / 718, 10000x1x256 143 / 468, 10000x2x256
# 298 / 509, 10000x4x256 513 / 559, 10000x10x256 1683 / 679; 784x1x50 (dw of a batch of
# one) 4 / 16.
AXPY_MAX_K = 2  # at most 2: axpy_block computes each row of C as two scaled rows of B
# Blocks of the forward and dx (C's rows are the batch). A summed axis up to
# KC_MAX long is taken whole: each tile of C is then stored once, and the rows
# of x it reads stay in L1 while the panels of B go by. Longer ones are cut into
# KC_BLOCK slices. MC rows of C per block when A is read in place, MC_PACKED
# when it is packed (masked or non-contiguous A). MC_PACKED was 96 (the packed
# block in L2); on the AVX-512 Xeon of 2026-12-03, 1 thread, dx 50000x784->50
# with d packed: 96 rows 97 ms, 480 rows 71 ms, 12 rows 38.5 ms (unpacked 36 ms):
# C's rows, 3 KB apart, are then written one short block at a time.
KC_MAX = 1024
KC_BLOCK = 512
MC = 12
MC_PACKED = 12
# ... except where the sum is short and B small (Kdim * N <= GROUP_KN): then MC_GROUP rows,
# so that the micro-kernel runs a column of whole tiles down C in one call (the call, its
# arguments and the lane masks once per column, not per tile: about 120 cycles a call
# against MR * NV FMAs per k). Zen 4, 2026-12-06, float32, 1 thread, us, MC 12 / 96:
#   dx 10000 x 256 -> 10 852 / 700, -> 16 1108 / 961, -> 32 2287 / 1937, 10000 x 256 -> 50
#   4558 / 4342, 2000 x 784 -> 16 801 / 725; dw 16 x 784 -> 50 24.2 / 21.4, 64 x 784 -> 50
#   66.9 / 63.6, 32 x 256 -> 512 119 / 107, 64 x 784 -> 256 288 / 271; forward 10000 x 16
#   -> 256 1583 / 1214, 10000 x 64 -> 128 2655 / 2428, 2000 x 16 -> 784 794 / 798;
#   but dx 10000 x 784 -> 50 (Kdim * N = 39200) 9165 / 10306: C's rows, 3 KB apart, are
#   then written a short block at a time.
MC_GROUP = 96
GROUP_KN = 1 << 14
# Blocks of dw: KC_DW rows of the batch by MC_DW outputs of d.T per packed block.
KC_DW = 256
MC_DW = 96
# The long-batch dw splits the batch over threads in shares of at least DW_SPLIT_ROWS rows
# (a float64 partial of dw per thread, added up afterwards). Zen 5, 2026-12-04, 2 threads,
# linear_backward(relu_out=, need_dx=False) of 784 -> 50 float32, us, shares of at least
# KC_DW = 256 / 128 rows: N = 256 153-161 / 100-132, 384 199-270 / 151-166, 511 272-316 /
# 171-189, 1024 345-361 / 345-363.
DW_SPLIT_ROWS = 128
# dw reads x in place, unless its rows are a multiple of this many bytes apart: they would
# all fall in the same L1 sets, so x is packed per block (Zen 3, 2048^3 dw: 0.36x -> 0.55x
# numpy).
X_ALIASED_BYTES = 4096
# merge_part adds per-thread partials into dw in tiles of MERGE_TILE x MERGE_TILE outputs.
MERGE_TILE = 32
# db alone: rows of the batch per thread at least (below, the sum runs serially).
REDUCE_ROWS = 4096
# db of short adjacent rows (O <= COLSUM_RUN / 4) sums their values as one run, in
# periods of COLSUM_RUN // O whole rows (engine.colsum_rows). Zen 5, 2026-12-03, float32,
# 1 thread, db of 10000 x 10, us: 21.8 rows four at a time; COLSUM_RUN 64 17.6, 128 12.8,
# 256 12.9-17.5, 512 12.0 (numpy 124, torch about 7).
COLSUM_RUN = 128
# ... rows of up to COLSUM_QUADS_MAX values four at a time (colsum_quads), longer rows one
# at a time. Zen 4, 2026-12-06, float32, 1 thread, db of N x O summed into float64, ms, four
# rows / one row at a time: 50000 x 40 0.29 / 0.55, x 64 0.42 / 0.60, x 100 1.04 / 0.84,
# 20000 x 128 0.97 / 0.38, 50000 x 256 5.04 / 2.10 (numpy 2.15: 51 MB from memory),
# 10000 x 784 2.20 / 1.55.
COLSUM_QUADS_MAX = 64
# dw on a batch of at most DW_DIRECT_ROWS rows runs as dw = x.T @ d with both read in
# place and no per-thread partials (BLIS's "sup" idea: nothing to amortise a packing or
# a partial over); longer batches are split over threads into float64 partials of dw.T.
# AVX-512 Xeon, 2026-12-03, 1 thread, 784 -> 50 float32, direct / split, us (the same
# harness for both, with its own overhead): N = 16 65 / 173, 64 103 / 226, 128 288 / 275,
# 256 438 / 386, 512 771 / 613; 50 -> 10 the same way round. Past KF rows the direct
# form sums in chunks of equal length (at most KF rows), each added into dw in float32: as
# accurate as float64 scratch for two chunks (tests/test_accuracy.py), with no scratch and
# no merge. Zen 4, 2026-12-06, 1 thread, float32 weight_grad, us, chunks / float64 scratch
# (the code before) / numpy: 65 x 784 -> 50 70.5 / 103.2 / 64, 96 x 784 -> 50 97.9 / 130.4 /
# 93, 128 x 784 -> 50 126.3 / 159.5 / 122, 128 x 784 -> 256 494 / 618 / 543, 96 x 256 -> 256
# 124 / 174 / 154. Then against the split form past 128 rows, chunks (DW_DIRECT_ROWS 512) /
# split (128) / numpy, us, 1 thread: 256 x 784 -> 50 248 / 271 / 230, 384 x 784 -> 50 369 /
# 388 / 343, 256 x 784 -> 256 975 / 1312 / 999, 512 x 64 -> 64 42 / 77 / 63, 512 x 16 -> 256
# 44 / 75 / 75; 2 threads: 160 x 784 -> 50 101 / 183 / 91, 512 x 64 -> 64 28 / 62 / 53,
# 512 x 256 -> 512 634 / 835 / 722; 1024 rows mixed (50 -> 10: 78 / 66), so 512. Up to 512
# rows, 8 chunks, the rms error of float32 dw is 2-25% above the split form's float64
# partials and below BLAS's (docs/guarantees.md).
DW_DIRECT_ROWS = 512
# With the ReLU mask, d is packed masked (pack_b) and db summed alone, where the split
# form sums db while it packs d.T; the mask kept 128 rows at first (512 x 8 -> 512 masked dw
# + db, 2 threads, us, direct / split: 192 / 132), until pack_b counted no references and
# tiles ran a column per call: then, 1 / 2 threads, 256 x 784 -> 50 261 / 284, 157 / 215;
# 512 x 8 -> 512 134 / 240, 132 / 164; 256 x 256 -> 256 350 / 491, 196 / 268; 512 x 784
# -> 50 551 / 544, 340 / 325; 384 x 50 -> 10 19.6 / 20.9, 21.1 / 20.5: one limit for both.
# The forward and dx read B (w, or a Fortran-ordered w.T) in place, not packed whole, for
# at most B_IN_PLACE_ROWS rows of the batch: packing all of w costs more than it saves
# on a short batch.
B_IN_PLACE_ROWS = 64
