"""lingrad.Linear: a linear layer for training loops, with its buffers allocated once.

    layer = lingrad.Linear(w, b)      # w (I, O), b (O,) or None; float32 or float64
    y = layer(x, relu=True)           # y = max(x @ w + b, 0); remembers x (and y, for the mask)
    dx = layer.backward(dy)           # fills layer.dw = x.T @ dy', layer.db = dy'.sum(0);
                                      # returns dx = dy' @ w.T  (dy' = dy * (y > 0) with relu)
    layer.step(lr)                    # w -= lr * dw;  b -= lr * db   (in place)

A two-layer MLP step:

    h = l1(x, relu=True);  z = l2(h)
    dz = ...                          # d(loss)/dz
    l1.backward(l2.backward(dz), need_dx=False)
    l1.step(lr);  l2.step(lr)

Each call runs one lingrad.linear or lingrad.linear_backward, writing into the
layer's own arrays through ``out=``: dw and db are allocated once, y and dx
once per batch shape (again only when the shape changes), so a loop over
equal batches allocates nothing for the layer. The API checks the inputs; a
failed call raises as lingrad.linear does and writes no buffer.

The returned y and dx are those buffers: the layer's next forward (or
backward) on a batch of the same shape overwrites them, so copy one to keep
it. w and b are used as given, not copied: step() updates them in place. A
layer remembers only its last forward call, so use one Linear per place in the
network.
"""
from typing import Literal, Optional, Tuple, overload

import numpy as np

from . import kernels as K
from .api import _EMPTY, linear, linear_backward

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class Linear:
    """y = x @ w + b (max(y, 0) with relu=True), its backward pass into dw and db, and SGD.

    Attributes: ``w`` (I, O) and ``b`` (O,) or None: the parameters, as given;
    ``dw`` and ``db`` (None without a bias): their gradients from the last
    backward, zeros before it.
    """

    def __init__(self, w: np.ndarray, b: Optional[np.ndarray] = None):
        if not isinstance(w, np.ndarray) or w.dtype not in FLOATS:
            raise TypeError(f"w must be a float32 or float64 numpy array, got "
                            f"{getattr(w, 'dtype', type(w).__name__)}; convert with np.asarray(w, np.float32)")
        if w.ndim != 2:
            raise ValueError(f"w must be 2-D (I, O), got shape {w.shape}")
        if b is not None:
            if not isinstance(b, np.ndarray) or b.dtype != w.dtype:
                raise TypeError(f"b must be a numpy array of w's dtype ({w.dtype}), got "
                                f"{getattr(b, 'dtype', type(b).__name__)}")
            if b.shape != (w.shape[1],):
                raise ValueError(f"b has shape {b.shape}, expected (w.shape[1],) = {(w.shape[1],)}")
        self.w, self.b = w, b
        self.dw = np.zeros(w.shape, w.dtype)
        self.db: Optional[np.ndarray] = None if b is None else np.zeros(b.shape, b.dtype)
        # output buffers, reallocated when the batch shape changes
        self._y: Optional[np.ndarray] = None
        self._dx: Optional[np.ndarray] = None
        # what the backward needs from the last forward
        self._x: Optional[np.ndarray] = None
        self._relu_y: Optional[np.ndarray] = None
        self._out_shape: Optional[Tuple[int, ...]] = None

    @property
    def in_features(self) -> int:
        return self.w.shape[0]

    @property
    def out_features(self) -> int:
        return self.w.shape[1]

    def __repr__(self) -> str:
        bias = "bias" if self.b is not None else "no bias"
        return f"Linear({self.in_features} -> {self.out_features}, {self.w.dtype}, {bias})"

    def __call__(self, x: np.ndarray, relu: bool = False) -> np.ndarray:
        """y = x @ w + b (then max(y, 0) if relu) for x (..., I); returns y (..., O), the
        layer's buffer. Remembers x, and y when relu, for backward()."""
        x = np.asarray(x)
        shape = x.shape[:-1] + (self.out_features,)
        if self._y is None or self._y.shape != shape:
            self._y = np.empty(shape, self.w.dtype)
        try:
            y = linear(x, self.w, self.b, relu=relu, out=self._y)
        except ValueError:
            if not np.may_share_memory(x, self._y):
                raise
            # x is this layer's last output, fed back in (the API refuses an out= that
            # overlaps an input, before writing anything): write a fresh buffer
            self._y = np.empty(shape, self.w.dtype)
            y = linear(x, self.w, self.b, relu=relu, out=self._y)
        self._x, self._relu_y, self._out_shape = x, (y if relu else None), shape
        return y

    @overload
    def backward(self, dy: np.ndarray, need_dx: Literal[True] = ...) -> np.ndarray: ...

    @overload
    def backward(self, dy: np.ndarray, need_dx: bool) -> Optional[np.ndarray]: ...

    def backward(self, dy: np.ndarray, need_dx: bool = True) -> Optional[np.ndarray]:
        """From dy = d(loss)/dy (the shape of the last forward's y): sets self.dw and
        self.db, and returns dx = d(loss)/dx (x's shape, the layer's buffer), or None
        with need_dx=False (a first layer). With relu, dy is masked by y > 0 on the fly."""
        if self._x is None:
            raise ValueError("backward() before forward: call the layer on a batch first, "
                             "y = layer(x), then layer.backward(dy)")
        dy = np.asarray(dy)
        if dy.shape != self._out_shape:
            raise ValueError(f"dy has shape {dy.shape}, expected {self._out_shape} "
                             f"(the shape of the last forward's output y)")
        if not need_dx:
            return self._grads(dy, None)
        if self._dx is None or self._dx.shape != self._x.shape:
            self._dx = np.empty(self._x.shape, self.w.dtype)
        try:
            return self._grads(dy, self._dx)
        except ValueError:
            if not (np.may_share_memory(dy, self._dx) or np.may_share_memory(self._x, self._dx)):
                raise
            self._dx = np.empty(self._x.shape, self.w.dtype)  # dy or x is this layer's dx buffer
            return self._grads(dy, self._dx)

    def _grads(self, dy: np.ndarray, dx: Optional[np.ndarray]) -> Optional[np.ndarray]:
        return linear_backward(self._x, self.w, dy, relu_out=self._relu_y, need_dx=dx is not None,
                               need_db=self.b is not None, out=(dx, self.dw, self.db)).dx

    def step(self, lr: float) -> None:
        """One SGD step in place: w -= lr * dw, b -= lr * db (lr rounded to w's dtype).

        One kernel call (kernels/engine.py sgd) when w, dw, b and db are contiguous arrays
        of one dtype and their own shapes (as __init__ made them); numpy otherwise (a
        Fortran-ordered w, or attributes replaced since)."""
        w, dw, b, db = self.w, self.dw, self.b, self.db
        no_bias = b is None and db is None
        if (type(w) is np.ndarray and type(dw) is np.ndarray and w.dtype in FLOATS
                and dw.dtype == w.dtype and dw.shape == w.shape
                and w.flags.c_contiguous and w.flags.writeable and dw.flags.c_contiguous
                and (no_bias or type(b) is np.ndarray and type(db) is np.ndarray
                     and b.dtype == w.dtype and db.dtype == w.dtype and b.ndim == 1
                     and b.shape == db.shape and b.flags.writeable and b.flags.c_contiguous
                     and db.flags.c_contiguous)):
            empty = _EMPTY[w.dtype][0]  # the flat b and db of a layer without a bias
            K.engine.sgd(w.reshape(-1), dw.reshape(-1), empty if no_bias else b,
                         empty if no_bias else db, w.dtype.type(lr))
            return
        self.w -= lr * self.dw
        if self.b is not None:
            assert self.db is not None  # allocated with b, in __init__
            self.b -= lr * self.db
