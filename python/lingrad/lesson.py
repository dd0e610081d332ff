"""Train the lesson's MLP with lingrad's modules and plain SGD, printing the loss per epoch.

    python -m lingrad lesson [--epochs 10] [--lr 0.02] [--bs 64] [--data auto|digits|synthetic]

The model is the fast.ai lesson's: Lin(I, 50) -> Relu -> Lin(50, 1) with an
MSE loss, and, as in the lesson, the target is the digit's value as a number
(regression). Data: scikit-learn's digits (1797 8x8 images that ship inside
scikit-learn; pip install "lingrad[lesson]") when it is installed, otherwise a
synthetic regression task of the same shape (the output says which). Each
step is forward_and_backward (lingrad.modules) and p -= lr * p.g.
"""
import argparse
from typing import Optional, Sequence, Tuple

import numpy as np

from .modules import Model, forward_and_backward, tensor


Data = Tuple[np.ndarray, np.ndarray, str]


def digits() -> Optional[Data]:
    """(x, t, description) from scikit-learn's digits, or None when scikit-learn is absent."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return None
    d = load_digits()
    return d.data, d.target.astype(np.float64), "scikit-learn digits: 1797 images of 8x8 pixels, target = the digit"


def synthetic(rng: np.random.Generator, n: int = 1797, i: int = 64) -> Data:
    """(x, t, description): a random two-layer teacher network's outputs plus noise, values about 0-9."""
    x = rng.standard_normal((n, i))
    h = np.maximum(x @ rng.standard_normal((i, 20)) / np.sqrt(i), 0)
    t = h @ rng.standard_normal(20)
    t = 4.5 + 2.9 * (t - t.mean()) / t.std() + 0.1 * rng.standard_normal(n)
    return x, t, f"synthetic: {n} random inputs of {i} features, target = a random ReLU network's output"


def load(kind: str, rng: np.random.Generator) -> Data:
    """(x, t, description) for --data auto, digits or synthetic."""
    if kind in ("auto", "digits"):
        got = digits()
        if got is not None:
            return got
        if kind == "digits":
            raise SystemExit("scikit-learn is not installed: pip install 'lingrad[lesson]', or use --data synthetic")
        x, t, what = synthetic(rng)
        return x, t, what + " (scikit-learn not installed; pip install 'lingrad[lesson]' for the digits)"
    return synthetic(rng)


def init_model(i: int, hidden: int, dtype: np.dtype, rng: np.random.Generator) -> Model:
    """Kaiming-style initial weights, as in the lesson: w1 ~ N(0, 2/I), w2 ~ N(0, 1/H), biases 0."""
    w1 = rng.standard_normal((i, hidden)) * np.sqrt(2 / i)
    w2 = rng.standard_normal((hidden, 1)) * np.sqrt(1 / hidden)
    return Model(*(a.astype(dtype) for a in (w1, np.zeros(hidden), w2, np.zeros(1))))


def sgd_step(model: Model, lr: float) -> None:
    """p -= lr * p.g for every parameter, in place (the modules keep their references)."""
    for p in model.parameters():
        p -= lr * p.g


def train_epoch(model: Model, x: np.ndarray, t: np.ndarray, lr: float, bs: int,
                rng: np.random.Generator) -> float:
    """One pass over (x, t) in shuffled mini-batches; returns the mean of the batches' losses."""
    order = rng.permutation(len(x))
    losses = []
    for k in range(0, len(x), bs):
        batch = order[k:k + bs]
        losses.append(float(forward_and_backward(tensor(x[batch]), t[batch], model)))
        sgd_step(model, lr)
    return float(np.mean(losses))


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lingrad lesson", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.02, help="SGD learning rate (default 0.02)")
    p.add_argument("--bs", type=int, default=64, help="mini-batch size (default 64)")
    p.add_argument("--hidden", type=int, default=50, help="hidden units (default 50, the lesson's)")
    p.add_argument("--data", choices=["auto", "digits", "synthetic"], default="auto",
                   help="auto: digits when scikit-learn is installed, else synthetic")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if min(a.epochs, a.bs, a.hidden) < 1 or not a.lr > 0:
        p.error("--epochs, --bs, --hidden and --lr must be positive")
    rng = np.random.default_rng(a.seed)
    x, t, what = load(a.data, rng)
    order = rng.permutation(len(x))
    n_train = int(0.8 * len(x))
    tr, va = order[:n_train], order[n_train:]
    mean, std = x[tr].mean(0), x[tr].std(0) + 1e-8  # normalise with the training split's statistics
    x = ((x - mean) / std).astype(a.dtype)
    t = t.astype(a.dtype)
    model = init_model(x.shape[1], a.hidden, np.dtype(a.dtype), rng)
    print(f"data: {what}")
    print(f"model: Lin({x.shape[1]}, {a.hidden}) -> Relu -> Lin({a.hidden}, 1) -> Mse; "
          f"SGD lr={a.lr}, batch {a.bs}, {a.dtype}; {len(tr)} train / {len(va)} valid")
    print(f"epoch  0  valid loss {float(model(x[va], t[va])):.4f}  (before training)")
    for epoch in range(1, a.epochs + 1):
        train_loss = train_epoch(model, x[tr], t[tr], a.lr, a.bs, rng)
        valid_loss = float(model(x[va], t[va]))
        print(f"epoch {epoch:>2}  train loss {train_loss:.4f}  valid loss {valid_loss:.4f}")
        if not np.isfinite(train_loss):
            print("the loss diverged: try a smaller --lr")
            return 1
    return 0
