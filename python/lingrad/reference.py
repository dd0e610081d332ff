"""Slow, obviously correct references: numpy one-liners and naive loops.

The tests hold every fast kernel to these. The loops are written straight
from the element-wise formulas of y = x @ w + b (x: (N, I), w: (I, O),
b: (O,), dy: (N, O)); read them next to docs/derivation.md.
"""
from typing import Optional

import numpy as np


# ---- numpy one-liners -------------------------------------------------------
def linear(x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray] = None,
           relu: bool = False) -> np.ndarray:
    y = x @ w if b is None else x @ w + b
    return np.maximum(y, 0) if relu else y


def relu_mask(dy: np.ndarray, relu_out: Optional[np.ndarray] = None) -> np.ndarray:
    """The gradient reaching the matmul: dy, or dy where the ReLU was on (relu_out > 0), else 0."""
    return dy if relu_out is None else np.where(relu_out > 0, dy, 0).astype(dy.dtype)


def input_grad(dy: np.ndarray, w: np.ndarray, relu_out: Optional[np.ndarray] = None) -> np.ndarray:
    return relu_mask(dy, relu_out) @ w.T


def _rows(a: np.ndarray) -> np.ndarray:
    """(..., k) -> (rows, k): the batch flattened (explicit, so k == 0 works too)."""
    return a.reshape(int(np.prod(a.shape[:-1])), a.shape[-1])


def weight_grad(x: np.ndarray, dy: np.ndarray, relu_out: Optional[np.ndarray] = None) -> np.ndarray:
    return _rows(x).T @ _rows(relu_mask(dy, relu_out))


def bias_grad(dy: np.ndarray, relu_out: Optional[np.ndarray] = None) -> np.ndarray:
    return _rows(relu_mask(dy, relu_out)).sum(0)


# ---- naive loops, one line of math each --------------------------------------
def linear_loops(x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray] = None) -> np.ndarray:
    """y[n, j] = sum_i x[n, i] * w[i, j] + b[j]"""
    N, I = x.shape
    O = w.shape[1]
    y = np.zeros((N, O), dtype=x.dtype)
    for n in range(N):
        for j in range(O):
            s = 0.0
            for i in range(I):
                s += x[n, i] * w[i, j]
            y[n, j] = s + (b[j] if b is not None else 0.0)
    return y


def input_grad_loops(dy: np.ndarray, w: np.ndarray) -> np.ndarray:
    """dx[n, i] = sum_j dy[n, j] * w[i, j]      (the sum runs over j: hence w.T)"""
    N, O = dy.shape
    I = w.shape[0]
    dx = np.zeros((N, I), dtype=dy.dtype)
    for n in range(N):
        for i in range(I):
            s = 0.0
            for j in range(O):
                s += dy[n, j] * w[i, j]
            dx[n, i] = s
    return dx


def weight_grad_loops(x: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """dw[i, j] = sum_n x[n, i] * dy[n, j]      (the sum runs over the batch n: hence x.T)"""
    N, I = x.shape
    O = dy.shape[1]
    dw = np.zeros((I, O), dtype=x.dtype)
    for i in range(I):
        for j in range(O):
            s = 0.0
            for n in range(N):
                s += x[n, i] * dy[n, j]
            dw[i, j] = s
    return dw


def bias_grad_loops(dy: np.ndarray) -> np.ndarray:
    """db[j] = sum_n dy[n, j]      (b[j] was added to every row n: hence .sum(0))"""
    N, O = dy.shape
    db = np.zeros(O, dtype=dy.dtype)
    for j in range(O):
        s = 0.0
        for n in range(N):
            s += dy[n, j]
        db[j] = s
    return db
