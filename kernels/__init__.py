"""lingrad.kernels: the Numba kernels, and nothing else.

No validation and no allocation policy live here: the API in ``lingrad`` checks
shapes and dtypes once, makes every array C-contiguous, allocates outputs and
calls these. Each driver comes in a serial ``*_rows`` form (used for tiny work,
where starting threads costs more than the work) and a parallel form.
"""
from .backward import (dw_transposed, finish, finish_dw_row, input_grad, input_grad_rows, masked_rows, weight_bias_chunk,
                       weight_bias_grad, weight_bias_grad_serial, weight_bias_rows)
from .config import AXPY_K, JIT, KC, MB, MR, NB, NC, NR, PJIT, SERIAL_WORK, SMALL_K
from .forward import forward, forward_rows, gemm_rows
from .tile import axpy_tile, colsum_acc, dot, dot_tile, outer_acc

__all__ = [
    "JIT", "PJIT", "MR", "NR", "KC", "NC", "MB", "NB", "SMALL_K", "AXPY_K", "SERIAL_WORK",
    "dot", "dot_tile", "axpy_tile", "outer_acc", "colsum_acc",
    "gemm_rows", "forward_rows", "forward",
    "masked_rows", "input_grad_rows", "input_grad", "weight_bias_rows", "finish", "finish_dw_row", "dw_transposed", "weight_bias_chunk",
    "weight_bias_grad", "weight_bias_grad_serial",
]
