"""Check a gradient against float64 central differences.

    from lingrad.gradcheck import gradcheck

    report = gradcheck(lambda x, w, b: lingrad.linear(x, w, b),           # f(*inputs) -> y
                       [x, w, b],
                       lambda dy, x, w, b: lingrad.linear_backward(x, w, dy),  # -> (dx, dw, db)
                       names=["x", "w", "b"])
    print(report)      # one line per input: elements checked, max error, relative error
    assert report      # truthy when every input passed

How it works. f may return an array of any shape, so gradcheck reduces it to a
scalar with a fixed random direction v of y's shape (seeded):

    L(inputs) = sum(f(*inputs) * v)

The gradient of L with respect to input k is the vector-Jacobian product that
a backward function computes from dy = v, so ``backward(v, *inputs)`` is the
analytic answer. The numerical answer, element by element, is the central
difference

    dL/da[e] ~ (L(a[e] + h) - L(a[e] - h)) / (2 h)

whose error is O(h^2) (zero for the linear and quadratic pieces of a linear
layer, ReLU and MSE) plus rounding, about eps * |L| / h. Everything runs in
float64 (the inputs are copied to float64 first), so with h = 1e-6 that is
around 1e-10 relative: a correct gradient passes tol = 1e-6 by far, and a wrong
one (a missing .sum(0), w where w.T belongs, a factor of 2) fails by O(1).

The relative error of input k is max_e |numerical[e] - analytic[e]| divided by
the largest |gradient| element of that input (both ways), so elements whose
gradient is exactly 0 do not blow it up. Kinks: a ReLU input within h of 0
has a one-sided derivative and fails honestly; keep test inputs away from 0.
"""
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt


class GradcheckError(AssertionError):
    """Raised by gradcheck(..., raise_on_failure=True) when a gradient is wrong; its message is the report."""


@dataclass
class InputCheck:
    """The check of one input's gradient."""
    name: str
    shape: Tuple[int, ...]
    checked: int          # elements compared (all, or a seeded random sample)
    max_abs_err: float    # max |numerical - analytic| over those elements
    scale: float          # max |gradient| over those elements (numerical or analytic)
    rel_err: float        # max_abs_err / scale
    ok: bool
    problem: str = ""     # set when the analytic gradient is missing or has the wrong shape

    def line(self) -> str:
        if self.problem:
            return f"  {self.name:<10} {str(self.shape):<14} FAIL: {self.problem}"
        return (f"  {self.name:<10} {str(self.shape):<14} {self.checked:>8} {self.max_abs_err:>12.3e} "
                f"{self.scale:>12.3e} {self.rel_err:>10.2e}  {'ok' if self.ok else 'FAIL'}")


@dataclass
class GradcheckReport:
    """The result of gradcheck: one InputCheck per input; truthy when all passed."""
    checks: List[InputCheck]
    tol: float
    h: float

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        head = (f"gradcheck (float64 central differences, h={self.h:g}, tol={self.tol:g}): "
                f"{'passed' if self.ok else 'FAILED'}\n"
                f"  {'input':<10} {'shape':<14} {'checked':>8} {'max abs err':>12} {'max |grad|':>12} "
                f"{'rel err':>10}")
        return "\n".join([head] + [c.line() for c in self.checks])

    __repr__ = __str__


def gradcheck(f: Callable[..., npt.ArrayLike], inputs: Sequence[npt.ArrayLike],
              backward: Callable[..., Sequence[Optional[npt.ArrayLike]]], *,
              names: Optional[Sequence[str]] = None, h: float = 1e-6, tol: float = 1e-6,
              max_elements: Optional[int] = None, seed: int = 0,
              raise_on_failure: bool = False) -> GradcheckReport:
    """Compare backward's gradients of f with float64 central differences.

    f: f(*inputs) -> array (any shape; a scalar loss works too).
    inputs: a sequence of arrays (copied to float64; the originals are untouched).
    backward: backward(dy, *inputs) -> one gradient per input, each of that
        input's shape, or None for an input not to check (e.g. the data).
        dy = dL/dy has y's shape. A lingrad.LinearGrads tuple works as is.
    names: labels for the report (default input0, input1, ...).
    h: the finite-difference step. tol: the largest relative error that passes.
    max_elements: check at most this many elements per input (a seeded random
        sample); None checks them all (2 calls of f per element).
    raise_on_failure: raise GradcheckError (an AssertionError) instead of
        returning a falsy report.
    Returns a GradcheckReport: print it for the table, bool() it for pass/fail.
    """
    arrays = [np.array(a, dtype=np.float64) for a in inputs]
    labels = list(names) if names is not None else [f"input{k}" for k in range(len(arrays))]
    if len(labels) != len(arrays):
        raise ValueError(f"{len(labels)} names for {len(arrays)} inputs")
    rng = np.random.default_rng(seed)
    y = np.asarray(f(*arrays), dtype=np.float64)
    v = rng.standard_normal(y.shape)
    grads = list(backward(v.copy(), *arrays))
    if len(grads) != len(arrays):
        raise ValueError(f"backward returned {len(grads)} gradients for {len(arrays)} inputs")

    def loss() -> float:
        return float(np.sum(np.asarray(f(*arrays), dtype=np.float64) * v))

    checks = []
    for name, a, grad in zip(labels, arrays, grads):
        if grad is None:
            continue
        g = np.asarray(grad, dtype=np.float64)
        if g.shape != a.shape:
            checks.append(InputCheck(name, a.shape, 0, np.inf, np.nan, np.inf, False,
                                     f"gradient has shape {g.shape}, the input {a.shape}"))
            continue
        idx = np.arange(a.size)
        if max_elements is not None and a.size > max_elements:
            idx = np.sort(rng.choice(a.size, max_elements, replace=False))
        numerical = np.array([central_difference(loss, a, e, h) for e in idx])
        analytic = g.reshape(-1)[idx]
        err = np.abs(numerical - analytic)
        max_err = float(err.max()) if idx.size else 0.0
        scale = max(float(np.abs(numerical).max(initial=0)), float(np.abs(analytic).max(initial=0)))
        rel = max_err / scale if scale > 0 else (0.0 if max_err == 0 else np.inf)
        ok = bool(np.isfinite(rel) and rel <= tol)
        checks.append(InputCheck(name, a.shape, int(idx.size), max_err, scale, rel, ok))
    report = GradcheckReport(checks, tol, h)
    if raise_on_failure and not report.ok:
        raise GradcheckError(str(report))
    return report


def central_difference(loss: Callable[[], float], a: np.ndarray, e: Any, h: float) -> float:
    """(loss() with a.flat[e] + h  -  loss() with a.flat[e] - h) / 2h; a.flat[e] is restored."""
    flat = a.reshape(-1)  # a view: a is a fresh contiguous float64 copy
    old = flat[e]
    flat[e] = old + h
    up = loss()
    flat[e] = old - h
    down = loss()
    flat[e] = old
    return (up - down) / (2 * h)
