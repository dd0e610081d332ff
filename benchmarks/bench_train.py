"""One SGD step of a small MLP through lingrad: the lingrad column of
``python -m lingrad train`` (784 -> 50 -> ReLU -> 10, softmax cross-entropy).

The step is written here with the public functions (lingrad.linear,
lingrad.linear_backward with out= buffers, relu_out= and need_dx=), not
lingrad.Linear or lingrad.train, so the suite runs against every commit whose
API is the same (common.py). The loss gradient and the update are numpy, as in
train.py; lingrad's kernels and the Python around them are what changes
between commits. Threads: common.pin_threads.
"""
import numpy as np

import lingrad

from .common import DTYPES, pin_threads, warm_up

MODEL = (784, 50, 10)  # inputs, hidden units, classes
LR = 0.01


def xent_grad(z, labels):
    """dz = (softmax(z) - onehot(labels)) / B, for the mean cross-entropy of softmax(z)."""
    B = z.shape[0]
    e = np.exp(z - z.max(1, keepdims=True))
    dz = e / e.sum(1, keepdims=True)
    dz[np.arange(B), labels] -= 1
    dz /= B
    return dz


class _Step:
    """Parameters, gradient and activation buffers for one batch size, allocated once."""

    def __init__(self, batch, dtype):
        I, H, C = MODEL
        r = np.random.default_rng(0)
        self.x = r.random((batch, I), dtype=dtype)  # MNIST-shaped: pixels in [0, 1)
        self.labels = r.integers(0, C, batch)
        self.p = [(r.standard_normal((I, H)) * np.sqrt(2 / I)).astype(dtype), np.zeros(H, dtype),
                  (r.standard_normal((H, C)) * np.sqrt(1 / H)).astype(dtype), np.zeros(C, dtype)]
        self.g = [np.empty_like(a) for a in self.p]
        self.h, self.z, self.dh = (np.empty((batch, n), dtype) for n in (H, C, H))

    def __call__(self):
        w1, b1, w2, b2 = self.p
        dw1, db1, dw2, db2 = self.g
        h = lingrad.linear(self.x, w1, b1, relu=True, out=self.h)
        z = lingrad.linear(h, w2, b2, out=self.z)
        dz = xent_grad(z, self.labels)
        dh = lingrad.linear_backward(h, w2, dz, out=(self.dh, dw2, db2)).dx
        lingrad.linear_backward(self.x, w1, dh, relu_out=h, need_dx=False, out=(None, dw1, db1))
        for a, g in zip(self.p, self.g):
            a -= LR * g


class TrainStep:
    """Time of one SGD step (forward, loss gradient, backward, update) per batch size.
    setup runs one step first, so no timed step includes JIT compilation."""
    params = [DTYPES, [64, 1024]]
    param_names = ["dtype", "batch"]
    timeout = 180

    def setup(self, dtype, batch):
        pin_threads()
        self.step = _Step(batch, dtype)
        warm_up(("train", dtype, batch), self.step)

    def time_step(self, dtype, batch):
        self.step()
