"""Input validation and layout normalisation: done once, at the API boundary.

Everything here raises TypeError (wrong kind or dtype) or ValueError (wrong
shape, bad ``out=``) before any kernel runs, so a failed call writes nothing.
"""
import math
from typing import Any, Collection, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import as_strided

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_arrays(required: Collection[str], **named: Optional[npt.ArrayLike]) -> List[Any]:
    """Convert each named input to an ndarray and check that they share one float dtype.

    Names in ``required`` must not be None; other None values are passed
    through. Returns the arrays (np.ndarray, or None where None was passed) in
    the order given.
    """
    arrays: Dict[str, Any] = {}
    for name, a in named.items():
        if a is None:
            if name in required:
                raise TypeError(f"{name} is required: pass a float32 or float64 array, not None")
            arrays[name] = None
            continue
        if not isinstance(a, np.ndarray):
            try:
                a = np.asarray(a)
            except Exception as e:  # ragged lists and the like
                raise TypeError(f"{name} must be a numpy array of float32 or float64; "
                                f"np.asarray({name}) failed: {e}") from None
        if a.dtype not in FLOATS:
            raise TypeError(f"{name} has dtype {a.dtype}; lingrad works on float32 or float64 "
                            f"arrays: convert with {name}.astype(np.float32) or "
                            f"{name}.astype(np.float64)")
        arrays[name] = a
    given = {n: a.dtype for n, a in arrays.items() if a is not None}
    if len(set(given.values())) > 1:
        listed = ", ".join(f"{n} {d}" for n, d in given.items())
        raise TypeError(f"inputs must share one dtype, got {listed}; cast them all to one, "
                        f"e.g. x.astype(np.float32)")
    return list(arrays.values())


def check_ndim(a: np.ndarray, name: str, ndim: Union[int, str], meaning: str) -> None:
    """a.ndim must be ndim, or at least 1 for ndim '1+'; else ValueError."""
    if ndim == "1+":
        if a.ndim < 1:
            raise ValueError(f"{name} must have at least 1 dimension {meaning}, got a 0-d array")
    elif a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {meaning}, got shape {a.shape}")


def check_dim(a: np.ndarray, a_name: str, a_axis: int, size: int, what: str) -> None:
    """a.shape[a_axis] must equal size (the size of ``what``); else ValueError."""
    if a.shape[a_axis] != size:
        raise ValueError(f"{a_name}.shape[{a_axis}] ({a.shape[a_axis]}) must equal {what} ({size}); "
                         f"{a_name} has shape {a.shape}")


View = Tuple[np.ndarray, int, int, int]


def as_rows(a: np.ndarray, cols: int) -> np.ndarray:
    """The (rows, cols) 2-D form of a (..., cols) array, as a view whenever numpy can
    reshape without copying (any layout of a 2-D array is kept as it is)."""
    return a if a.ndim == 2 else a.reshape(n_rows(a.shape), cols)


def view(a: np.ndarray) -> View:
    """(buf, off, rs, cs) of a 2-D array: a flat array over its memory, and the offset,
    row stride and column stride of a in it, in elements (lingrad.kernels.engine's
    operand form: every layout, C, Fortran, strided or reversed, is read in place).
    A stride that is not a whole number of elements (a view into a structured
    array) is copied to C order first. C- and Fortran-ordered arrays (the common
    case) take a reshape, about ten times cheaper than the general as_strided."""
    rows, cols = a.shape
    if a.flags.c_contiguous:
        return a.reshape(-1), 0, cols, 1
    if a.flags.f_contiguous:
        return a.T.reshape(-1), 0, 1, rows
    if any(s % a.itemsize for s in a.strides):
        a = np.ascontiguousarray(a)
    rs, cs = (s // a.itemsize for s in a.strides)
    if a.size == 0:
        return a.reshape(-1)[:0], 0, rs, cs
    neg = [(n - 1) * s for n, s in zip(a.shape, (rs, cs)) if s < 0]
    span = sum((n - 1) * abs(s) for n, s in zip(a.shape, (rs, cs))) + 1
    low = a[tuple(slice(n - 1, None) if s < 0 else slice(None) for n, s in zip(a.shape, (rs, cs)))]
    return as_strided(low, shape=(span,), strides=(a.itemsize,)), -sum(neg), rs, cs


def transposed(v: View) -> View:
    """The view of a.T from the view of a."""
    return v[0], v[1], v[3], v[2]


def n_rows(shape: Sequence[int]) -> int:
    """Rows of the flattened batch: the product of all but the last axis (explicit, so
    that a zero-length last axis still reshapes)."""
    return math.prod(shape[:-1])


class Out:
    """A validated destination: ``buf`` is the C-contiguous array the kernel
    writes, viewed as (rows, shape[-1]) when ``as_rows``; ``done()`` returns the user's array, copying back when ``buf`` was
    a temporary (for an ``out=`` that is not C-contiguous)."""

    def __init__(self, out: Optional[np.ndarray], shape: Tuple[int, ...], dtype: np.dtype, name: str,
                 inputs: Mapping[str, Optional[np.ndarray]], accumulate: bool = False,
                 as_rows: bool = True) -> None:
        if out is None:
            if accumulate:
                raise ValueError(f"accumulate=True needs an existing {name} buffer to add into")
            self.user = np.empty(shape, dtype)
        else:
            if not isinstance(out, np.ndarray):
                raise TypeError(f"out for {name} must be a numpy array, got {type(out).__name__}")
            if out.shape != tuple(shape):
                raise ValueError(f"out for {name} has shape {out.shape}, expected {tuple(shape)}")
            if out.dtype != dtype:
                raise TypeError(f"out for {name} has dtype {out.dtype}, expected {dtype} "
                                f"(the inputs' dtype)")
            if not out.flags.writeable:
                raise ValueError(f"out for {name} is read-only")
            for other_name, other in inputs.items():
                if other is not None and np.may_share_memory(out, other):
                    raise ValueError(f"out for {name} overlaps {other_name}; "
                                     f"pass a separate buffer")
            self.user = out
        self.direct = self.user.flags.c_contiguous
        if self.direct:
            self.buf = self.user.reshape(n_rows(shape), shape[-1]) if as_rows else self.user
        else:
            src = np.ascontiguousarray(self.user) if accumulate else np.empty(shape, dtype)
            self.buf = src.reshape(n_rows(shape), shape[-1]) if as_rows else src

    def done(self) -> np.ndarray:
        if not self.direct:
            self.user[...] = self.buf.reshape(self.user.shape)
        return self.user
