"""python -m lingrad train: every implementation computes the same SGD step.

Each implementation (lingrad through Linear, lingrad through the functions,
numpy, and PyTorch and JAX where installed) takes one step from the same
parameters on the same batch; its parameters afterwards are compared with
reference_step below, a float64 step written from the formulas in this file.
PyTorch's autograd and JAX's grad derive the gradient themselves, so they
check the formulas too. The loss gradient (train.xent_grad) is also checked
against central differences.
"""
import json
import os

import numba
import numpy as np
import pytest

from lingrad import train
from lingrad.gradcheck import gradcheck

from conftest import DTYPES

LR = 0.5  # large, so that a wrong gradient moves the parameters visibly


def reference_step(params, x, labels, lr):
    """(loss, parameters after one SGD step), float64, from the formulas."""
    w1, b1, w2, b2 = (p.astype(np.float64) for p in params)
    x = x.astype(np.float64)
    B, C = len(x), w2.shape[1]
    a = x @ w1 + b1
    h = np.maximum(a, 0)
    z = h @ w2 + b2
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(C)[labels]
    loss = -np.mean(np.sum(onehot * np.log(p), 1))
    dz = (p - onehot) / B
    dh = (dz @ w2.T) * (a > 0)
    grads = [x.T @ dh, dh.sum(0), h.T @ dz, dz.sum(0)]
    return loss, [q - lr * g for q, g in zip((w1, b1, w2, b2), grads)]


def build(impl, params, lr):
    if impl == "lingrad":
        return train.LingradStep(params, lr)
    if impl == "lingrad-functional":
        return train.LingradFunctionalStep(params, lr)
    if impl == "numpy":
        return train.NumpyStep(params, lr)
    if impl == "torch":
        pytest.importorskip("torch")
        return train.TorchStep(params, lr, train.peer("torch"))
    if impl == "jax":
        pytest.importorskip("jax")
        return train.JaxStep(params, lr, train.peer("jax"))
    raise ValueError(impl)


def one_step(step, x, labels):
    loss = step(*step.prepare(x, labels))
    return float(np.asarray(loss.detach() if hasattr(loss, "detach") else loss)), step.params()


def check_params(got, expected, before, dtype):
    """Each parameter within tolerance of the reference, measured against the size of its
    update (before - expected), so a wrong gradient cannot hide behind the weights' size."""
    tol = 1e-4 if dtype == np.float32 else 1e-11
    for name, g, e, b in zip(["w1", "b1", "w2", "b2"], got, expected, before):
        assert g.dtype == np.dtype(dtype), f"{name} dtype {g.dtype}"
        assert g.shape == e.shape, f"{name} shape {g.shape}, expected {e.shape}"
        update = np.abs(e - b).max()
        assert update > 0
        err = np.abs(g.astype(np.float64) - e).max() / update
        assert err <= tol, f"{name}: error {err:.2e} of the update's size, tolerance {tol:.0e}"


IMPLS = ["lingrad", "lingrad-functional", "numpy", "torch", "jax"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 16, 65, 300])
def test_one_step_matches_reference(impl, dtype, batch, threads):
    model = (64, 12, 10)
    params = train.init_params(model, dtype)
    (x, labels), = train.make_batches(batch, model, dtype, n=1)
    before = [p.astype(np.float64) for p in params]
    ref_loss, expected = reference_step(params, x, labels, LR)
    loss, got = one_step(build(impl, params, LR), x, labels)
    for p, q in zip(params, before):
        assert np.array_equal(p, q)  # each implementation works on its own copy
    assert loss == pytest.approx(ref_loss, rel=1e-5 if dtype == np.float32 else 1e-12)
    check_params(got, expected, before, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_available_implementations_agree_on_the_default_model(dtype):
    """make_steps (what the benchmark times), default 784 -> 50 -> 10, batch 64."""
    params = train.init_params(train.MODEL, dtype)
    (x, labels), = train.make_batches(64, train.MODEL, dtype, n=1)
    before = [p.astype(np.float64) for p in params]
    _, expected = reference_step(params, x, labels, LR)
    steps = train.make_steps(params, LR)
    assert {"lingrad", "numpy"} <= set(steps)
    for name in ("torch", "jax"):
        assert (name in steps) == (train.peer(name) is not None)
    for name, step in steps.items():
        _, got = one_step(step, x, labels)
        check_params(got, expected, before, dtype)


def test_xent_grad_against_finite_differences(rng):
    z = rng.standard_normal((7, 5)) * 3
    labels = rng.integers(0, 5, 7)
    report = gradcheck(lambda z: train.xent_grad(z, labels)[0], [z],
                       lambda dy, z: [dy * train.xent_grad(z, labels)[1]])
    assert report, report


def test_xent_grad_keeps_dtype_and_does_not_overflow():
    z = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]], np.float32)
    loss, dz = train.xent_grad(z, np.array([0, 2]))
    assert dz.dtype == np.float32 and np.isfinite(dz).all()
    assert float(loss) == pytest.approx(np.log(3) / 2, rel=1e-6)  # row 0 costs 0, row 1 log 3


def test_lingrad_steps_reduce_the_loss_on_one_batch():
    params = train.init_params((64, 12, 10), np.float64)
    (x, labels), = train.make_batches(32, (64, 12, 10), np.float64, n=1)
    step = train.LingradStep(params, 0.2)
    losses = [float(step(x, labels)) for _ in range(100)]
    assert losses[-1] < 0.5 * losses[0]


def read_rows(path):
    with open(path) as f:
        return json.load(f)


def check_row(row):
    times = {i: row[f"{i}_s"] for i in train.IMPLS if row[f"{i}_s"] is not None}
    assert "lingrad" in times and "numpy" in times
    assert all(t > 0 for t in times.values())
    best = min((p for p in times if p != "lingrad"), key=times.get)
    assert row["peer"] == best
    assert row["speedup"] == pytest.approx(times[best] / times["lingrad"])
    for impl, t in times.items():
        assert row[f"{impl}_samples_s"] == pytest.approx(row["batch"] / t)


def test_cli_one_thread_count_in_process(tmp_path, capsys):
    path = tmp_path / "rows.json"
    argv = ["--batch", "8", "--batch", "32", "--dtypes", "float64", "--threads", "1", "--repeats", "1",
            "--model", "20x6x4", "--lingrad", "functional", "--json", str(path)]
    assert train.main(argv) == 0
    rows = read_rows(path)
    assert [(r["batch"], r["dtype"], r["threads"], r["model"]) for r in rows] == [
        (8, "float64", 1, [20, 6, 4]), (32, "float64", 1, [20, 6, 4])]
    for r in rows:
        check_row(r)
        assert r["lingrad_impl"] == "functional"
        if len(os.sched_getaffinity(0)) > 1:
            assert len(r["cores"]) == 1  # the 1-thread run was pinned to one core
    out = capsys.readouterr().out
    assert "20 -> 6 -> ReLU -> 4" in out and "speedup" in out


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 threads")
def test_cli_each_thread_count_in_its_own_process(tmp_path):
    path = tmp_path / "rows.json"
    assert train.main(["--batch", "8", "--dtypes", "float32", "--threads", "1", "2", "--repeats", "1",
                       "--model", "20x6x4", "--no-torch", "--no-jax", "--json", str(path)]) == 0
    rows = read_rows(path)
    assert [r["threads"] for r in rows] == [1, 2]
    for r in rows:
        check_row(r)
        assert r["lingrad_impl"] == "layer"
        assert r["torch_s"] is None and r["jax_s"] is None
    assert len(rows[0]["cores"]) == 1  # pinned; the 2-thread run is not pinned (test_timing.py)


@pytest.mark.parametrize("argv", [["--batch", "0"], ["--model", "784x50"], ["--model", "axbxc"],
                                  ["--lr", "0"], ["--repeats", "0"]])
def test_cli_rejects_bad_options(argv):
    with pytest.raises(SystemExit) as e:
        train.main(argv)
    assert e.value.code == 2


def test_table_marks_a_row_short_of_cores():
    row = dict(batch=16, dtype="float32", threads=2, cores=[0, 1], cores_after=[1], lingrad_s=1e-4,
               numpy_s=2e-4, torch_s=None, jax_s=None, lingrad_samples_s=16e4, numpy_samples_s=8e4,
               torch_samples_s=None, jax_samples_s=None, speedup=2.0, peer="numpy")
    assert train.short_of_cores(row)
    assert "!" in train.table([row]).splitlines()[3]
    assert not train.short_of_cores(dict(row, cores_after=[0, 1]))
    assert "!" not in train.table([dict(row, cores_after=[0, 1])])
