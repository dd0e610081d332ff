"""python -m lingrad train: one SGD step of a small MLP, lingrad against numpy, PyTorch and JAX.

The model (default 784 -> 50 -> ReLU -> 10, as an MNIST classifier) is trained
on MNIST-shaped random data: pixels uniform in [0, 1), labels uniform in 0-9.
One step on a mini-batch x (B, 784) with labels (B,):

    h = max(x @ w1 + b1, 0);  z = h @ w2 + b2;  loss = mean cross-entropy of softmax(z)
    dz = (softmax(z) - onehot) / B
    dw2 = h.T @ dz;  db2 = dz.sum(0);  dh = (dz @ w2.T) * (h > 0)
    dw1 = x.T @ dh;  db1 = dh.sum(0);  p -= lr * dp for each parameter

Implementations, each timed on the same batches from the same initial parameters:
  lingrad  two lingrad.Linear layers (python/lingrad/layer.py): linear(relu=True),
           linear, then linear_backward for layer 2 and linear_backward(relu_out=h,
           need_dx=False) for layer 1, all into buffers allocated once; the loss
           gradient and the update in numpy (xent_grad, and Linear.step).
           --lingrad functional: the same calls written out, without the layer object
  numpy    the same step written plainly in numpy (the same xent_grad)
  torch    nn.Linear -> ReLU -> nn.Linear, F.cross_entropy, autograd, and the update
           p -= lr * p.grad under no_grad (faster here than torch.optim.SGD's step)
  jax      the whole step (jax.value_and_grad, the update) under one jax.jit, parameters
           and batches already on the device, parameters donated to the step

Times are the fastest step over interleaved repeats (lingrad, numpy, torch, jax,
lingrad, ...; a 0.15 s pause before each block), compilation excluded, with BLAS
and torch pinned to lingrad's thread count. Each thread count runs in a fresh
process, pinned to one core at 1 thread (XLA_FLAGS=--xla_cpu_multi_thread_eigen=false
there too), set before JAX starts its threads. "speedup" is the fastest peer's
time over lingrad's (above 1: lingrad's step is faster than all of them).

--json FILE writes a list of rows, one per (dtype, threads, batch): batch, dtype,
threads, model ([784, 50, 10]), lr, lingrad_impl ("layer" or "functional"),
cores, cores_after (the cores the run could use at its start and end; a row with
fewer than its threads, narrowed by another program, is marked "!" in the table);
lingrad_s, numpy_s, torch_s, jax_s (seconds per step; null for a peer not run);
lingrad_samples_s, ... (samples per second = batch / seconds); speedup, peer.
"""
import argparse
import json
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt

import lingrad

from .layer import Linear
from .timing import (blas_threads, current_cores, interleaved_min, peer, per_thread_count, short_of_cores,
                     thread_setup)

BATCHES = [16, 64, 256, 1024]
MODEL = (784, 50, 10)  # inputs, hidden units, classes
IMPLS = ["lingrad", "numpy", "torch", "jax"]
PEERS = IMPLS[1:]
N_BATCHES = 4  # batches each implementation cycles through


def init_params(model: Sequence[int], dtype: npt.DTypeLike, seed: int = 0) -> List[np.ndarray]:
    """[w1, b1, w2, b2]: Kaiming-style weights (w1 ~ N(0, 2/I), w2 ~ N(0, 1/H)), biases 0."""
    I, H, C = model
    r = np.random.default_rng(seed)
    w1 = r.standard_normal((I, H)) * np.sqrt(2 / I)
    w2 = r.standard_normal((H, C)) * np.sqrt(1 / H)
    return [a.astype(dtype) for a in (w1, np.zeros(H), w2, np.zeros(C))]


def make_batches(batch: int, model: Sequence[int], dtype: npt.DTypeLike, n: int = N_BATCHES,
                 seed: int = 1) -> List[Tuple[np.ndarray, np.ndarray]]:
    """n MNIST-shaped random batches: (x (batch, I) uniform in [0, 1), labels (batch,) int64 in 0..C-1)."""
    I, _, C = model
    r = np.random.default_rng(seed)
    return [(r.random((batch, I)).astype(dtype), r.integers(0, C, batch)) for _ in range(n)]


def xent_grad(z: np.ndarray, labels: np.ndarray) -> Tuple[np.floating, np.ndarray]:
    """(loss, dz) of the mean cross-entropy of softmax(z): z (B, C), labels (B,) ints.

    loss = mean_n (logsumexp(z[n]) - z[n, labels[n]]);  dz = (softmax(z) - onehot(labels)) / B.
    The max is subtracted before exp, so no exp overflows. dz has z's dtype.
    """
    B = z.shape[0]
    rows = np.arange(B)
    m = z.max(1, keepdims=True)
    e = np.exp(z - m)
    s = e.sum(1, keepdims=True)
    loss = np.mean(np.log(s[:, 0]) + m[:, 0] - z[rows, labels])
    dz = e / s
    dz[rows, labels] -= 1
    dz /= B
    return loss, dz


class LingradStep:
    """The step on two lingrad.Linear layers (their buffers are allocated on the first step)."""

    def __init__(self, params: Sequence[np.ndarray], lr: float) -> None:
        w1, b1, w2, b2 = (p.copy() for p in params)
        self.l1, self.l2, self.lr = Linear(w1, b1), Linear(w2, b2), lr

    def prepare(self, x: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        return x, labels

    def __call__(self, x: np.ndarray, labels: np.ndarray) -> np.floating:
        h = self.l1(x, relu=True)
        z = self.l2(h)
        loss, dz = xent_grad(z, labels)
        dh = self.l2.backward(dz)
        self.l1.backward(dh, need_dx=False)
        self.l1.step(self.lr)
        self.l2.step(self.lr)
        return loss

    def params(self) -> List[Optional[np.ndarray]]:
        return [self.l1.w, self.l1.b, self.l2.w, self.l2.b]


class LingradFunctionalStep:
    """LingradStep spelled out with lingrad.linear / lingrad.linear_backward and out= buffers,
    what Linear does inside (kept to measure the layer object's cost: docs/performance.md)."""

    def __init__(self, params: Sequence[np.ndarray], lr: float) -> None:
        self.p, self.lr = [p.copy() for p in params], lr
        self.g = [np.empty_like(p) for p in self.p]
        self.buf: Dict[str, Any] = {}

    def prepare(self, x: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        return x, labels

    def __call__(self, x: np.ndarray, labels: np.ndarray) -> np.floating:
        w1, b1, w2, b2 = self.p
        dw1, db1, dw2, db2 = self.g
        B = x.shape[0]
        if self.buf.get("B") != B:
            self.buf = dict(B=B, h=np.empty((B, w1.shape[1]), x.dtype), z=np.empty((B, w2.shape[1]), x.dtype),
                            dh=np.empty((B, w1.shape[1]), x.dtype))
        h = lingrad.linear(x, w1, b1, relu=True, out=self.buf["h"])
        z = lingrad.linear(h, w2, b2, out=self.buf["z"])
        loss, dz = xent_grad(z, labels)
        dh = lingrad.linear_backward(h, w2, dz, out=(self.buf["dh"], dw2, db2)).dx
        lingrad.linear_backward(x, w1, dh, relu_out=h, need_dx=False, out=(None, dw1, db1))
        for p, g in zip(self.p, self.g):
            p -= self.lr * g
        return loss

    def params(self) -> List[np.ndarray]:
        return self.p


class NumpyStep:
    """The step written plainly in numpy."""

    def __init__(self, params: Sequence[np.ndarray], lr: float) -> None:
        self.p, self.lr = [p.copy() for p in params], lr

    def prepare(self, x: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        return x, labels

    def __call__(self, x: np.ndarray, labels: np.ndarray) -> np.floating:
        w1, b1, w2, b2 = self.p
        h = np.maximum(x @ w1 + b1, 0)
        z = h @ w2 + b2
        loss, dz = xent_grad(z, labels)
        dh = (dz @ w2.T) * (h > 0)
        grads = [x.T @ dh, dh.sum(0), h.T @ dz, dz.sum(0)]
        for p, g in zip(self.p, grads):
            p -= self.lr * g
        return loss

    def params(self) -> List[np.ndarray]:
        return self.p


class TorchStep:
    """nn.Linear -> ReLU -> nn.Linear, F.cross_entropy, loss.backward(), then p -= lr * p.grad
    in place under torch.no_grad() (torch.optim.SGD's step measured 1.1-1.4x slower for the
    whole step at 1 thread, batches 16-1024). nn.Linear keeps its weight as (O, I): w.T of ours."""

    def __init__(self, params: Sequence[np.ndarray], lr: float, torch: Any) -> None:
        self.torch = torch
        w1, b1, w2, b2 = params
        I, H = w1.shape
        C = w2.shape[1]
        dtype = getattr(torch, w1.dtype.name)
        self.model = torch.nn.Sequential(torch.nn.Linear(I, H, dtype=dtype), torch.nn.ReLU(),
                                         torch.nn.Linear(H, C, dtype=dtype))
        with torch.no_grad():
            for lin, w, b in ((self.model[0], w1, b1), (self.model[2], w2, b2)):
                lin.weight.copy_(torch.from_numpy(w.T.copy()))
                lin.bias.copy_(torch.from_numpy(b))
        self.lr, self.parameters = lr, list(self.model.parameters())

    def prepare(self, x: np.ndarray, labels: np.ndarray) -> Tuple[Any, Any]:
        return self.torch.from_numpy(x), self.torch.from_numpy(labels.astype(np.int64))

    def __call__(self, x: Any, labels: Any) -> Any:
        for p in self.parameters:
            p.grad = None
        loss = self.torch.nn.functional.cross_entropy(self.model(x), labels)
        loss.backward()
        with self.torch.no_grad():
            for p in self.parameters:
                p.sub_(p.grad, alpha=self.lr)
        return loss

    def params(self) -> List[np.ndarray]:
        m = self.model
        return [m[0].weight.detach().numpy().T, m[0].bias.detach().numpy(),
                m[2].weight.detach().numpy().T, m[2].bias.detach().numpy()]


class JaxStep:
    """The whole step under one jax.jit: value_and_grad of the loss, then p - lr * dp;
    the parameters live on the device and are donated to the step (updated in place)."""

    def __init__(self, params: Sequence[np.ndarray], lr: float, jax: Any) -> None:
        self.jax = jax
        jnp = jax.numpy

        def loss_fn(p: Sequence[Any], x: Any, labels: Any) -> Any:
            w1, b1, w2, b2 = p
            h = jnp.maximum(x @ w1 + b1, 0)
            z = h @ w2 + b2
            logp = jax.nn.log_softmax(z)
            return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

        def step(p: Sequence[Any], x: Any, labels: Any) -> Tuple[List[Any], Any]:
            loss, g = jax.value_and_grad(loss_fn)(p, x, labels)
            return [a - lr * da for a, da in zip(p, g)], loss

        self._step = jax.jit(step, donate_argnums=0)
        self.p = [jax.device_put(a) for a in params]

    def prepare(self, x: np.ndarray, labels: np.ndarray) -> Tuple[Any, Any]:
        return self.jax.device_put(x), self.jax.device_put(labels.astype(np.int32))

    def __call__(self, x: Any, labels: Any) -> Any:
        self.p, loss = self._step(self.p, x, labels)
        self.jax.block_until_ready(self.p)
        return loss

    def params(self) -> List[np.ndarray]:
        return [np.asarray(a) for a in self.p]


# (params, lr) -> a lingrad step: LingradStep or LingradFunctionalStep
StepFactory = Callable[[Sequence[np.ndarray], float], Any]
LINGRAD_STEPS: Dict[str, StepFactory] = {"layer": LingradStep, "functional": LingradFunctionalStep}


def make_steps(params: Sequence[np.ndarray], lr: float, use_torch: bool = True,
               use_jax: bool = True, lingrad_step: StepFactory = LingradStep) -> Dict[str, Any]:
    """impl name -> a step object for each implementation available (torch and jax when
    installed and asked for), each starting from its own copy of ``params``."""
    steps = {"lingrad": lingrad_step(params, lr), "numpy": NumpyStep(params, lr)}
    torch = peer("torch") if use_torch else None
    if torch is not None:
        steps["torch"] = TorchStep(params, lr, torch)
    jax = peer("jax") if use_jax else None
    if jax is not None:
        steps["jax"] = JaxStep(params, lr, jax)
    return steps


def cycling(step: Callable[..., Any], batches: Sequence[Sequence[Any]]) -> Callable[[], Any]:
    """A no-argument call of ``step`` that takes the next of ``batches`` each time."""
    state = {"k": 0}

    def call() -> Any:
        k = state["k"]
        state["k"] = (k + 1) % len(batches)
        return step(*batches[k])
    return call


def run(batches: Sequence[int], dtypes: Sequence[str], thread_counts: Sequence[int],
        model: Sequence[int] = MODEL, lr: float = 0.01, repeats: int = 5, use_torch: bool = True,
        use_jax: bool = True, progress: bool = True,
        lingrad_impl: str = "layer") -> List[Dict[str, Any]]:
    """Rows for every batch size x dtype x thread count, in this process (main runs one
    process per thread count). lingrad_impl: a key of LINGRAD_STEPS."""
    rows = []
    todo = [(b, d, t) for t in thread_counts for d in dtypes for b in batches]
    for k, (batch, dtype, threads) in enumerate(todo):
        if progress:
            print(f"[{k + 1}/{len(todo)}] batch {batch} {dtype} threads={threads}", file=sys.stderr, flush=True)
        with thread_setup(threads), lingrad.num_threads(threads):
            steps = make_steps(init_params(model, dtype), lr, use_torch, use_jax, LINGRAD_STEPS[lingrad_impl])
            data = make_batches(batch, model, dtype)
            cores = current_cores()
            with blas_threads(threads):
                calls = [cycling(s, [s.prepare(x, y) for x, y in data]) for s in steps.values()]
                t = dict(zip(steps, interleaved_min(calls, repeats=repeats)))
            cores_after = current_cores()
            for name, s in steps.items():
                if not all(np.isfinite(p).all() for p in s.params()):
                    raise RuntimeError(f"{name}'s parameters are no longer finite after the timed steps")
        best = min((p for p in PEERS if p in t), key=t.__getitem__)
        row = dict(batch=batch, dtype=dtype, threads=threads, model=list(model), lr=lr,
                   lingrad_impl=lingrad_impl, cores=cores, cores_after=cores_after)
        for impl in IMPLS:
            row[f"{impl}_s"] = t.get(impl)
            row[f"{impl}_samples_s"] = batch / t[impl] if impl in t else None
        row.update(speedup=t[best] / t["lingrad"], peer=best)
        rows.append(row)
    return rows


def fmt_us(s: Optional[float]) -> str:
    return f"{s * 1e6:9.1f}" if s is not None else f"{'-':>9}"


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    head = (f"{'dtype':<7} {'thr':>3} {'batch':>5}  {'lingrad':>9} {'numpy':>9} {'torch':>9} {'jax':>9}  "
            f"{'lingrad':>11} {'best peer':>11}  {'speedup':>7} {'vs':<5}")
    out = [f"{'':<18}  {'us per step':^39}  {'samples per second':^23}", head, "-" * len(head)]
    for r in rows:
        times = " ".join(fmt_us(r[f"{i}_s"]) for i in IMPLS)
        mark = "!" if short_of_cores(r) else " "
        out.append(f"{r['dtype']:<7} {r['threads']:>2}{mark} {r['batch']:>5}  {times}  "
                   f"{r['lingrad_samples_s']:11,.0f} {r[r['peer'] + '_samples_s']:11,.0f}  "
                   f"{r['speedup']:6.2f}x {r['peer']:<5}")
    if any(short_of_cores(r) for r in rows):
        out.append("! fewer cores than threads during the run (another program narrowed this process's "
                   "affinity): not a time on that many threads")
    return "\n".join(out)


def parse_model(text: str) -> Tuple[int, int, int]:
    """'IxHxC' -> (I, H, C), three positive ints (for --model)."""
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not IxHxC with three positive integers, e.g. 784x50x10")
    return dims


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="python -m lingrad train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", action="append", type=int, metavar="B",
                   help=f"mini-batch size; repeatable (default: {' '.join(map(str, BATCHES))})")
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    p.add_argument("--threads", nargs="+", type=int, default=sorted({1, lingrad.get_num_threads()}),
                   help="thread counts (default: 1 and all)")
    p.add_argument("--model", type=parse_model, default=MODEL, metavar="IxHxC",
                   help="inputs x hidden units x classes (default 784x50x10)")
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (default 0.01)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats, min taken (default 5)")
    p.add_argument("--lingrad", choices=list(LINGRAD_STEPS), default="layer",
                   help="lingrad's step: through lingrad.Linear (default) or the functions directly")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even when installed")
    p.add_argument("--no-jax", action="store_true", help="skip JAX even when installed")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON (fields above)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one thread count, rows to --json
    a = p.parse_args(argv)
    batches = a.batch or BATCHES
    if min(batches) < 1 or a.repeats < 1 or min(a.threads) < 1 or not a.lr > 0:
        p.error("--batch, --repeats, --threads and --lr must be positive")
    if len(a.threads) > 1 and not a.child:
        rows = per_thread_count("train", argv, a.threads)
    else:
        rows = run(batches, a.dtypes, a.threads, a.model, a.lr, a.repeats, not a.no_torch, not a.no_jax,
                   lingrad_impl=a.lingrad)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    if a.child:
        return 0
    I, H, C = a.model
    print(f"one SGD step of {I} -> {H} -> ReLU -> {C}, softmax cross-entropy, lr {a.lr}; "
          f"fastest step of {a.repeats} interleaved repeats; lingrad: {a.lingrad}")
    print(table(rows))
    return 0
