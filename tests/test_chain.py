"""Finite-difference check of the lesson's chain: loss = mse(lin2(relu(lin1(x))))."""
import numpy as np

import lingrad


def loss_and_grads(x, w1, b1, w2, b2, t):
    h = lingrad.linear(x, w1, b1, relu=True)
    out = lingrad.linear(h, w2, b2)[:, 0]
    loss = ((out - t) ** 2).mean()
    dout = (2.0 * (out - t) / t.shape[0])[:, None]        # d loss / d out, shape (N, 1)
    g2 = lingrad.linear_backward(h, w2, dout)
    g1 = lingrad.linear_backward(x, w1, g2.dx, relu_out=h)  # ReLU mask on the fly
    return loss, {"x": g1.dx, "w1": g1.dw, "b1": g1.db, "w2": g2.dw, "b2": g2.db}


def test_chain_matches_central_differences():
    r = np.random.default_rng(7)
    N, I, H = 40, 13, 9
    params = {"x": r.standard_normal((N, I)), "w1": r.standard_normal((I, H)) * 0.5,
              "b1": r.standard_normal(H) * 0.1, "w2": r.standard_normal((H, 1)) * 0.5,
              "b2": r.standard_normal(1) * 0.1}
    t = r.standard_normal(N)
    f = lambda p: loss_and_grads(p["x"], p["w1"], p["b1"], p["w2"], p["b2"], t)  # noqa: E731
    _, grads = f(params)
    eps = 1e-6
    for name, a in params.items():
        num = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            old = a[idx]
            a[idx] = old + eps
            lp, _ = f(params)
            a[idx] = old - eps
            lm, _ = f(params)
            a[idx] = old
            num[idx] = (lp - lm) / (2 * eps)
        rel = np.abs(num - grads[name]).max() / max(np.abs(num).max(), 1e-12)
        assert rel < 1e-6, f"{name}: relative error {rel:.2e}"
