"""lingrad: Numba kernels for the linear layer y = x @ w + b and its backward pass.

    y  = lingrad.linear(x, w, b)                 # x (N, I), w (I, O), b (O,)
    dx, dw, db = lingrad.linear_backward(x, w, dy)
    # dx = dy @ w.T     dw = x.T @ dy     db = dy.sum(0)

    layer = lingrad.Linear(w, b)                 # for training loops: buffers allocated once
    y = layer(x, relu=True); dx = layer.backward(dy); layer.step(lr)

    print(lingrad.explain(50000, 784, 50))       # what the plan runs for these shapes, in words

lingrad.dask (optional extra "lingrad[dask]") is imported on its own: import lingrad.dask
"""
from . import kernels, reference
from . import stream
from . import compile as _compile  # noqa: F401  (registers the first-compile notice)
from .api import LinearGrads, bias_grad, input_grad, linear, linear_backward, weight_grad
from .explainer import explain
from .explainer import plans as explain_plans
from .gradcheck import gradcheck
from .layer import Linear
from .threads import get_num_threads, num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = [
    "linear", "linear_backward", "input_grad", "weight_grad", "bias_grad", "LinearGrads",
    "set_num_threads", "get_num_threads", "num_threads", "reference", "kernels",
    "gradcheck", "stream", "Linear", "explain", "explain_plans",
]
