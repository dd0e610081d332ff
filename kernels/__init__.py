"""lingrad.kernels: the Numba kernels, and nothing else.

No validation and no allocation policy live here: the API in ``lingrad`` checks
shapes and dtypes once, makes every array C-contiguous, allocates outputs and
calls these. Each driver comes in a serial ``*_rows`` form (used for tiny work,
where starting threads costs more than the work) and a parallel form.

    tile.py      micro-kernels: dot_tile (NT, 4x4 register tile), dot_strips (NT, 4x1, narrow c),
                 nn_tile (NN, 2 rows x 4 k), nn_short (NN, summed axis < 4), colsum_acc
    forward.py   gemm_rows (cache blocking, form choice), forward_rows / forward,
                 transpose_rows / transpose (the copy of w.T some forms read)
    backward.py  input_grad_rows / input_grad, weight_bias_* (fused dw and db, per-thread partials)
    config.py    JIT flags and block sizes
    ladder.py    the study path's optimisation ladder (docs/ladder.md)
"""
from .backward import (bias_direct, direct_transposed, dw_columns, dw_transposed, finish,
                       finish_dw_row, input_grad, input_grad_rows, masked_rows, weight_bias_chunk,
                       weight_bias_direct, weight_bias_direct_parallel, weight_bias_grad,
                       weight_bias_grad_serial, weight_bias_rows)
from .config import (JIT, KC, KC_BLOCK, KC_DW, KC_MAX, KF, MB, MC, MC_DW, MC_PACKED, MR, NB, NC,
                     NN_K, NR, NV, PANEL, PJIT, REDUCE_ROWS, SERIAL_WORK, SHORT_K, SMALL_N, TASKS, TILE,
                     VECTOR_BYTES)
from .forward import (forward, forward_rows, gemm_rows, task_rows, transpose, transpose_rows,
                      use_nn)
from . import engine
from .tile import (colsum_acc, dot, dot_strips, dot_tile, nn_rows, nn_short, nn_tile,
                   transpose_block)

__all__ = [
    "JIT", "PJIT", "NR", "KC", "NC", "MB", "NB", "NN_K", "PANEL", "SERIAL_WORK", "SHORT_K",
    "SMALL_N", "TASKS", "TILE", "KC_BLOCK", "KC_DW", "KC_MAX", "KF", "MC", "MC_DW", "MC_PACKED", "MR", "NV", "VECTOR_BYTES", "REDUCE_ROWS", "engine",
    "dot", "dot_tile", "dot_strips", "nn_rows", "nn_tile", "nn_short", "colsum_acc",
    "transpose_block", "transpose_rows", "transpose",
    "use_nn", "task_rows", "gemm_rows", "forward_rows", "forward",
    "masked_rows", "input_grad_rows", "input_grad",
    "weight_bias_rows", "weight_bias_chunk", "finish", "finish_dw_row", "dw_transposed",
    "weight_bias_grad", "weight_bias_grad_serial", "weight_bias_direct",
    "weight_bias_direct_parallel", "dw_columns", "direct_transposed", "bias_direct",
]
