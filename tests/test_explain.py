"""lingrad.explain says what the API runs: its plans are the plans real calls make.

Each real call runs with lingrad.plan.gemm and lingrad.plan.reduction wrapped, recording
the plans the API made (the wrapped planner also keeps the call from taking a plan cached
earlier); lingrad.explain_plans must give the same plans for the same shapes, dtype,
flags, layouts and thread count, and explain's text must be the text of those recorded
plans (explainer.describe).
"""
import contextlib
import io
import subprocess
import sys
from unittest import mock

import numba
import numpy as np
import pytest
from test_kernels import SHAPES

import lingrad
from lingrad import __main__ as cli
from lingrad import explainer
from lingrad import plan as P

THREADS = sorted({1, numba.config.NUMBA_NUM_THREADS})
EXTRA = [(1, 784, 50), (16, 784, 50), (64, 784, 50), (65, 784, 50), (513, 64, 10), (2000, 40, 40)]
NEEDS = [(True, True, True), (False, True, True), (True, False, False), (False, True, False),
         (False, False, True)]


def order(a, layout):
    return np.ascontiguousarray(a) if layout == "C" else np.asfortranarray(a)


@contextlib.contextmanager
def recording():
    made = {"gemm": [], "reduction": []}
    gemm, reduction = P.gemm.__wrapped__, P.reduction.__wrapped__

    def rec_gemm(*args):
        made["gemm"].append(gemm(*args))
        return made["gemm"][-1]

    def rec_reduction(*args):
        made["reduction"].append(reduction(*args))
        return made["reduction"][-1]

    with mock.patch.object(P, "gemm", side_effect=rec_gemm), \
            mock.patch.object(P, "reduction", side_effect=rec_reduction):
        yield made


def real_plans(N, I, O, dtype, relu, needs, threads, layouts):
    """The plans a real forward and a real backward made: (forward, [dx, dw], db_threads)."""
    rng = np.random.default_rng(N * 7 + I * 3 + O)
    x, w, b, dy = (rng.standard_normal(s).astype(dtype) for s in ((N, I), (I, O), (O,), (N, O)))
    x, w, dy = order(x, layouts[0]), order(w, layouts[1]), order(dy, layouts[2])
    need_dx, need_dw, need_db = needs
    with lingrad.num_threads(threads):
        with recording() as fwd:
            y = lingrad.linear(x, w, b, relu=relu)
        with recording() as bwd:
            lingrad.linear_backward(x, w, dy, relu_out=y if relu else None, need_dx=need_dx,
                                    need_dw=need_dw, need_db=need_db)
    db_threads = bwd["reduction"][0] if bwd["reduction"] else 0
    return fwd["gemm"], bwd["gemm"], db_threads


CASES = ([(s, np.float32, relu, needs, lay) for s in SHAPES + EXTRA for relu in (False, True)
          for needs in NEEDS[:1] for lay in ("CCC", "FFF")]
         + [(s, np.float64, True, needs, lay) for s in EXTRA for needs in NEEDS[1:]
            for lay in ("CFC", "FCF")])


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("shape,dtype,relu,needs,layouts", CASES,
                         ids=[f"{s}-{np.dtype(d).name}-relu{r}-{''.join('1' if n else '0' for n in ns)}-{lay}"
                              for s, d, r, ns, lay in CASES])
def test_explain_plans_are_the_calls_plans(shape, dtype, relu, needs, layouts, threads):
    N, I, O = shape
    fwd_made, bwd_made, db_threads = real_plans(N, I, O, dtype, relu, needs, threads, layouts)
    fwd, bwd = lingrad.explain_plans(shape, dtype=dtype, relu=relu, need_dx=needs[0],
                                     need_dw=needs[1], need_db=needs[2], threads=threads,
                                     x_layout=layouts[0], w_layout=layouts[1], dy_layout=layouts[2])
    assert fwd_made == [fwd.forward]
    assert bwd_made == [p for p in (bwd.dx, bwd.dw) if p is not None]
    assert db_threads == bwd.db_threads
    # the text is the text of the plans the calls made
    text = lingrad.explain(shape, dtype=dtype, relu=relu, need_dx=needs[0], need_dw=needs[1],
                           need_db=needs[2], threads=threads, x_layout=layouts[0],
                           w_layout=layouts[1], dy_layout=layouts[2])
    dx = next((p for p in bwd_made if p.op == "dx"), None)
    dw = next((p for p in bwd_made if p.op == "dw"), None)
    made = P.Calls(None, dx, dw, db_threads, bwd.copy_x)
    assert text == explainer.describe(P.Calls(fwd_made[0], None, None, 0, False), made, N, I, O,
                                      dtype, relu, threads, tuple(layouts))


@pytest.mark.parametrize("shape", [(50000, 784, 50), (1, 784, 50), (600, 33, 37)], ids=str)
@pytest.mark.parametrize("threads", [1, 2])
def test_text_names_what_runs(shape, threads):
    fwd, bwd = lingrad.explain_plans(shape, relu=True, threads=threads)
    text = lingrad.explain(shape, relu=True, threads=threads)
    for plan in (fwd.forward, bwd.dx, bwd.dw):
        assert P.explain(plan) in "\n".join(line[2:] for line in text.splitlines())
        mc, kc = plan.blocks[:2]
        assert f"MC = {mc} rows of A, KC = {kc} values of k" in text
        if plan.threads > 1:
            assert f"parallel on {plan.threads} threads" in text
    assert "kernels/engine.py" in text and "kernels/micro.py micro" in text
    assert "ReLU applied in the micro-kernel's epilogue" in text
    assert "ReLU mask applied while packing" in text
    if bwd.dw.swap:
        assert "db summed while d.T is packed" in text and "db = d.sum(0), alone" not in text
    else:
        assert "db = d.sum(0), alone" in text


def test_lesson_shape_paths():
    fwd, bwd = lingrad.explain_plans(50000, 784, 50, threads=2)
    assert fwd.forward.threads == 2 and fwd.forward.split == 0
    assert bwd.dw.swap and bwd.dw.split == 1 and bwd.dw.want_db and bwd.db_threads == 0
    fwd, bwd = lingrad.explain_plans("1x784x50", threads=2)
    assert fwd.forward.threads == 1 and bwd.dw.swap is False and bwd.db_threads == 1


def cli_text(*args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["explain", *args]) == 0
    return out.getvalue()


def test_cli_prints_explain():
    assert cli_text("50000x784x50") == lingrad.explain(50000, 784, 50) + "\n"
    assert (cli_text("64x784x50", "--dtype", "float64", "--relu", "--threads", "2")
            == lingrad.explain((64, 784, 50), dtype="float64", relu=True, threads=2) + "\n")
    assert (cli_text("600x33x37", "--layout", "F", "--w-layout", "C", "--no-dx", "--no-bias")
            == lingrad.explain("600x33x37", layout="F", w_layout="C", need_dx=False, bias=False) + "\n")


def test_cli_subprocess():
    r = subprocess.run([sys.executable, "-m", "lingrad", "explain", "50000x784x50", "--threads", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == lingrad.explain(50000, 784, 50, threads=1) + "\n"


def test_cli_bad_shape():
    r = subprocess.run([sys.executable, "-m", "lingrad", "explain", "50000x784"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "expected NxIxO" in r.stderr


@pytest.mark.parametrize("args,kwargs,error,match", [
    (("5x5",), {}, ValueError, "expected NxIxO"),
    ((5,), {}, ValueError, "give I and O"),
    (((5, 4, 3, 2),), {}, ValueError, r"expected \(N, I, O\)"),
    (((5, -1, 3),), {}, ValueError, ">= 0"),
    (((5, 4, 3),), {"dtype": np.int32}, TypeError, "float32 or float64"),
    (((5, 4, 3),), {"layout": "K"}, ValueError, "'C' or 'F'"),
    (((5, 4, 3),), {"threads": 0}, ValueError, "threads"),
])
def test_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        lingrad.explain(*args, **kwargs)


def test_shape_forms_agree():
    want = lingrad.explain(64, 784, 50, threads=1)
    assert lingrad.explain((64, 784, 50), threads=1) == want
    assert lingrad.explain((64, 784), O=50, threads=1) == want
    assert lingrad.explain("64x784x50", threads=1) == want
