"""The lesson's modules (lingrad.modules) and training loop (python -m lingrad lesson).

Gradients are checked against float64 central differences (lingrad.gradcheck),
which know nothing of the backward formulas, and against PyTorch's autograd
when torch is installed. Inputs to a ReLU are kept away from 0, where the
derivative jumps and no finite difference can agree.
"""
import re

import numpy as np
import pytest

from lingrad import lesson
from lingrad.gradcheck import gradcheck
from lingrad.modules import Lin, Model, Mse, Relu, forward_and_backward, tensor


def off_zero(a, gap=0.05):
    """a with every element at least gap away from 0 (for ReLU inputs)."""
    return np.where(np.abs(a) < gap, np.sign(a + 1e-300) * gap, a)


def module_backward(module, dy, *inputs):
    """Set module.out.g = dy, run module.backward(), return the .g of each input (None if unset)."""
    module.out.g = dy
    module.backward()
    return [getattr(a, "g", None) for a in inputs]


@pytest.fixture
def params(rng):
    I, H = 6, 5
    return [rng.standard_normal((I, H)), rng.standard_normal(H), rng.standard_normal((H, 1)),
            rng.standard_normal(1)]


def test_lin_gradients(rng):
    x, w, b = rng.standard_normal((7, 4)), rng.standard_normal((4, 3)), rng.standard_normal(3)

    def f(x, w, b):
        return Lin(w, b)(tensor(x))

    def backward(dy, x, w, b):
        x, lin = tensor(x), Lin(w, b)
        lin(x)
        return module_backward(lin, dy, x, lin.w, lin.b)

    report = gradcheck(f, [x, w, b], backward, names=["x", "w", "b"])
    assert report, report


def test_relu_gradient(rng):
    x = off_zero(rng.standard_normal((5, 4)))

    def backward(dy, x):
        x, relu = tensor(x), Relu()
        relu(x)
        return module_backward(relu, dy, x)

    report = gradcheck(lambda x: Relu()(tensor(x)), [x], backward)
    assert report, report
    assert (x < 0).any() and (x > 0).any()  # both sides of the ReLU were checked


@pytest.mark.parametrize("targ_shape", ["(N,)", "(N, 1)"])
def test_mse_gradient(rng, targ_shape):
    x = rng.standard_normal((8, 1))
    t = rng.standard_normal(8) if targ_shape == "(N,)" else rng.standard_normal((8, 1))

    def backward(dy, x, t):
        x, mse = tensor(x), Mse()
        mse(x, t)
        mse.backward()  # the loss is the root: its backward gives dL/dx (dL/dL = 1), so scale by dy
        return dy * x.g, None  # no gradient wanted for the target

    report = gradcheck(lambda x, t: Mse()(tensor(x), t), [x, t], backward, names=["x", "targ"])
    assert report, report
    assert float(Mse()(tensor(x), t)) == pytest.approx(np.mean((x[:, 0] - t.reshape(-1)) ** 2))


def test_forward_and_backward_whole_model(rng, params):
    """Every parameter's .g and x.g of the lesson's MLP against finite differences of its loss."""
    x, t = rng.standard_normal((9, 6)), rng.standard_normal(9)
    w1, b1 = params[0], params[1]
    params[1] = b1 + np.where(np.abs(x @ w1 + b1) < 0.05, 0.3, 0.0).max(0)  # hidden units off the kink
    assert np.abs(x @ w1 + params[1]).min() > 1e-3

    def f(x, *params):
        return Model(*params)(tensor(x), t)

    def backward(dy, x, *params):
        x, model = tensor(x), Model(*params)
        loss = forward_and_backward(x, t, model)
        assert np.isfinite(float(loss))
        return [dy * x.g] + [dy * p.g for p in model.parameters()]

    report = gradcheck(f, [x, *params], backward, names=["x", "w1", "b1", "w2", "b2"])
    assert report, report


def test_float32_model_matches_float64(rng, params):
    x, t = rng.standard_normal((300, 6)), rng.standard_normal(300)
    grads = {}
    for dtype in (np.float32, np.float64):
        model = Model(*(p.astype(dtype) for p in params))
        xt = tensor(x.astype(dtype))
        forward_and_backward(xt, t.astype(dtype), model)
        grads[dtype] = [xt.g] + [p.g for p in model.parameters()]
    for g32, g64 in zip(grads[np.float32], grads[np.float64]):
        assert g32.dtype == np.float32 and g64.dtype == np.float64
        assert np.abs(g32 - g64).max() <= 1e-4 * np.abs(g64).max()


def test_matches_torch_autograd(rng, params):
    torch = pytest.importorskip("torch")
    x, t = rng.standard_normal((11, 6)), rng.standard_normal(11)
    model, xt = Model(*params), tensor(x)
    loss = forward_and_backward(xt, t, model)
    ours = [xt.g] + [p.g for p in model.parameters()]

    X = torch.tensor(x, requires_grad=True)
    W1, B1, W2, B2 = (torch.tensor(p, requires_grad=True) for p in params)
    out = torch.relu(X @ W1 + B1) @ W2 + B2
    L = ((out[:, 0] - torch.tensor(t)) ** 2).mean()
    L.backward()
    assert float(loss) == pytest.approx(L.item(), rel=1e-12)
    for name, g, T in zip(["x", "w1", "b1", "w2", "b2"], ours, [X, W1, B1, W2, B2]):
        np.testing.assert_allclose(g, T.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def epoch_losses(out):
    return [float(v) for v in re.findall(r"train loss (\S+)", out)]


def test_lesson_cli_synthetic_loss_decreases(capsys):
    assert lesson.main(["--data", "synthetic", "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("data: synthetic")
    losses = epoch_losses(out)
    assert len(losses) == 3
    assert losses[-1] < losses[0]
    first_valid = float(re.search(r"epoch  0  valid loss (\S+)", out).group(1))
    last_valid = float(re.findall(r"valid loss (\S+)", out)[-1])
    assert last_valid < 0.5 * first_valid


def test_lesson_cli_falls_back_to_synthetic_and_says_so(capsys, monkeypatch):
    monkeypatch.setattr(lesson, "digits", lambda: None)  # as if scikit-learn were not installed
    assert lesson.main(["--epochs", "1"]) == 0
    assert "scikit-learn not installed" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="scikit-learn is not installed"):
        lesson.main(["--data", "digits", "--epochs", "1"])


def test_lesson_cli_digits(capsys):
    pytest.importorskip("sklearn")
    assert lesson.main(["--data", "digits", "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("data: scikit-learn digits")
    losses = epoch_losses(out)
    assert len(losses) == 3 and losses[-1] < losses[0]
