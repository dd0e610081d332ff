"""lingrad.kernels: the Numba kernels, and nothing else.

No validation and no decisions live here: the API in ``lingrad`` checks shapes
and dtypes once, lingrad.plan decides how each product runs (block sizes, what
is packed, threads), and these carry it out.

    micro.py    the register micro-kernel (an LLVM IR intrinsic) and its contract
    engine.py   packing (pack_a, pack_b, pack_whole_b), the five-loop driver (gemm_block,
                gemm), the per-thread partial sums' merge, db alone (colsum)
    config.py   JIT flags, the micro-kernel's shape and the block sizes
    ladder.py   the study path's optimisation ladder (docs/ladder.md)
"""
from . import engine
from .config import (AXPY_MAX_K, B_IN_PLACE_ROWS, BLOCKS, DOT_ACC, DOT_COLS, DOT_MAX_ROWS, DOT_REDUCE, DOT_SHARE,
                     DW_DIRECT_ROWS, DW_SPLIT_ROWS, JIT, KC_BLOCK, KC_DW, KC_MAX, KF, MC, MC_DW, MC_GROUP, MC_PACKED, GROUP_KN, MR, MR_SHORT, MR_TALL, MR_WIDE, NV, NV_TALL, NV_WIDE, PJIT, REDUCE_ROWS, SERIAL_WORK, TALL_PER_K, VECTOR_BYTES,
                     WIDE_FILL, WIDE_MIN_K, X_ALIASED_BYTES)

__all__ = ["engine", "JIT", "PJIT", "BLOCKS", "MR", "MR_SHORT", "NV", "MR_WIDE", "NV_WIDE", "MR_TALL", "NV_TALL", "WIDE_FILL", "WIDE_MIN_K", "VECTOR_BYTES", "KF", "KC_MAX", "KC_BLOCK", "MC",
           "MC_PACKED", "MC_GROUP", "GROUP_KN", "KC_DW", "MC_DW", "REDUCE_ROWS", "SERIAL_WORK",
           "DW_DIRECT_ROWS", "DW_SPLIT_ROWS", "B_IN_PLACE_ROWS", "X_ALIASED_BYTES", "DOT_SHARE", "DOT_MAX_ROWS", "DOT_REDUCE", "TALL_PER_K",
           "AXPY_MAX_K", "DOT_ACC", "DOT_COLS"]
