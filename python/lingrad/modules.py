"""The fast.ai lesson's model, module by module, on lingrad's kernels.

    model = Model(w1, b1, w2, b2)          # Lin(w1, b1) -> Relu() -> Lin(w2, b2), loss Mse()
    loss = forward_and_backward(x, targ, model)
    model.layers[0].w.g                    # dL/dw1, set by the backward pass

As in the lesson, each module's ``__call__`` stores its input(s) and output,
and ``backward()`` reads the gradient of its output (``self.out.g``, set by the
module after it) and sets ``.g`` on its input and its parameters:

    Lin:   y = x @ w + b     x.g = y.g @ w.T    w.g = x.T @ y.g    b.g = y.g.sum(0)
    Relu:  y = max(x, 0)     x.g = (x > 0) * y.g
    Mse:   L = mean((x - t)^2)    x.g = 2 (x - t) / x.size

Lin runs a lingrad.Linear layer (lingrad.linear and lingrad.linear_backward,
the GEMM engine in kernels/engine.py); docs/derivation.md
derives each line. Like torch's ``.grad``, a Lin's outputs and gradients live in
buffers that the layer reuses: ``w.g`` and ``b.g`` are the same arrays after every
backward, and the module's output and its input's ``.g`` are overwritten by the
next call on a batch of the same shape.

numpy arrays cannot take new attributes, so parameters and activations are
``Tensor`` views: ndarrays that can carry a ``.g`` as a torch tensor does in
the lesson. ``tensor(a)`` makes one without copying.
"""
from typing import Any, List

import numpy as np
import numpy.typing as npt

from .layer import Linear


class Tensor(np.ndarray):
    """An ndarray that can carry a gradient in ``.g`` (the lesson's torch tensors do)."""

    g: np.ndarray


def tensor(a: npt.ArrayLike) -> Tensor:
    """``a`` itself if it is a Tensor, else a Tensor view of it (no copy for an ndarray)."""
    return a if isinstance(a, Tensor) else np.asarray(a).view(Tensor)


class Module:
    """__call__ runs forward (which stores the inputs) and stores the output as ``self.out``."""

    out: Tensor

    def __call__(self, *args: Any) -> Tensor:
        self.out = tensor(self.forward(*args))
        return self.out

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def backward(self) -> None:
        raise NotImplementedError

    def parameters(self) -> List[Tensor]:
        return []


class Lin(Module):
    """y = x @ w + b.   x (N, I), w (I, O), b (O,) -> y (N, O)."""

    def __init__(self, w: npt.ArrayLike, b: npt.ArrayLike) -> None:
        self.w, self.b = tensor(w), tensor(b)
        self.layer = Linear(self.w, self.b)  # holds w and b themselves: updating them updates the layer

    def forward(self, x: Tensor) -> np.ndarray:
        self.inp = x
        return self.layer(x)

    def backward(self) -> None:
        """x.g = out.g @ w.T;  w.g = x.T @ out.g;  b.g = out.g.sum(0)   (one lingrad call)."""
        self.inp.g = self.layer.backward(self.out.g)
        assert self.layer.db is not None  # a Lin always has a bias
        self.w.g, self.b.g = self.layer.dw, self.layer.db

    def parameters(self) -> List[Tensor]:
        return [self.w, self.b]


class Relu(Module):
    """y = max(x, 0), elementwise."""

    def forward(self, x: Tensor) -> np.ndarray:
        self.inp = x
        return np.maximum(x, 0)

    def backward(self) -> None:
        """x.g = (x > 0) * out.g: elementwise (*), since y[n, j] depends on x[n, j] only."""
        self.inp.g = (self.inp > 0) * self.out.g


class Mse(Module):
    """L = mean((x - targ)^2), a scalar.  x (N, 1) as the model's output, targ (N,) or x's shape."""

    def forward(self, x: Tensor, targ: np.ndarray) -> Any:
        self.inp, self.targ = x, targ
        return np.mean((x - targ.reshape(x.shape)) ** 2)

    def backward(self) -> None:
        """x.g = 2 (x - targ) / x.size: every element enters the mean with weight 1 / x.size."""
        x = self.inp
        self.inp.g = (2 * (x - self.targ.reshape(x.shape)) / x.size).astype(x.dtype)


class Model:
    """The lesson's MLP: Lin(w1, b1) -> Relu -> Lin(w2, b2), with an Mse loss."""

    def __init__(self, w1: npt.ArrayLike, b1: npt.ArrayLike, w2: npt.ArrayLike,
                 b2: npt.ArrayLike) -> None:
        self.layers: List[Module] = [Lin(w1, b1), Relu(), Lin(w2, b2)]
        self.loss = Mse()

    def __call__(self, x: npt.ArrayLike, targ: np.ndarray) -> Tensor:
        h = tensor(x)
        for layer in self.layers:
            h = layer(h)
        return self.loss(h, targ)

    def backward(self) -> None:
        self.loss.backward()
        for layer in reversed(self.layers):
            layer.backward()

    def parameters(self) -> List[Tensor]:
        return [p for layer in self.layers for p in layer.parameters()]


def forward_and_backward(x: npt.ArrayLike, targ: np.ndarray, model: Model) -> Tensor:
    """One forward pass and one backward pass; returns the loss, leaves every .g set.

    Afterwards x.g is dL/dx when x is a Tensor, and each parameter p of the
    model has p.g = dL/dp, as in the lesson.
    """
    loss = model(x, targ)
    model.backward()
    return loss
