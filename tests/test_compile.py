"""The first ten minutes: ``python -m lingrad --version``, the one-line notice on the first
compile, and ``python -m lingrad compile`` filling Numba's cache ahead of time.

The cache test runs two fresh processes against an empty NUMBA_CACHE_DIR (so the
kernels' own __pycache__ is neither read nor written): the compile command, then a
process that calls the API on other shapes, layouts and options and must compile
nothing and print no notice. By default both run on one thread (about 30-40 s on the
2-core dev machine); LINGRAD_RUN_SLOW=1 adds the same check at all threads, where the
parallel kernels compile too (about a minute more).
"""
import glob
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys

import numba
import numpy as np
import pytest
from numba import types
from numba.core import event

import lingrad
import lingrad.kernels.ladder
from lingrad import compile as C
from lingrad.__main__ import main

NOTICE = "lingrad: compiling the"


def test_version_in_process(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"lingrad {importlib.metadata.version('lingrad')}\n"


def test_version_command():
    proc = subprocess.run([sys.executable, "-m", "lingrad", "--version"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"lingrad {importlib.metadata.version('lingrad')}\n"
    assert lingrad.__version__ == importlib.metadata.version("lingrad")


# ---- the notice, driven by synthetic "numba:compile" events (no compiler run) ----

def arr(dtype, ndim=2):
    return types.Array(dtype, ndim, "C")


def compile_starts(dispatcher, *args):
    """Broadcast the event Numba sends when it starts compiling dispatcher for args."""
    event.broadcast(event.Event("numba:compile", event.EventStatus.START,
                                data=dict(dispatcher=dispatcher, args=args, return_type=None)))


@pytest.fixture
def no_notice_yet(monkeypatch):
    monkeypatch.setattr(C, "_noticed", set())


def test_notice_once_per_dtype(no_notice_yet, capsys):
    K = lingrad.kernels
    # a float32 call: float32 data and float64 partial sums
    compile_starts(K.engine.gemm, arr(types.float32), arr(types.float32), arr(types.float64))
    err = capsys.readouterr().err
    assert err.count(NOTICE) == 1 and "float32" in err and "float64" not in err, err
    assert "python -m lingrad compile" in err and len(err.strip().splitlines()) == 1
    compile_starts(K.engine.gemm, arr(types.float32), arr(types.float32))  # float32 again: silent
    assert capsys.readouterr().err == ""
    compile_starts(K.engine.gemm, arr(types.float64), arr(types.float64))
    err = capsys.readouterr().err
    assert err.count(NOTICE) == 1 and "float64" in err, err


def test_no_notice_for_other_functions(no_notice_yet, capsys):
    @numba.njit
    def users_own(a):
        return a

    compile_starts(users_own, arr(types.float32))                   # not lingrad's
    compile_starts(lingrad.kernels.ladder.dw_naive, arr(types.float32))  # the ladder's rungs
    compile_starts(lingrad.kernels.engine.tile_shape, types.int64, types.int64)  # no data dtype
    assert capsys.readouterr().err == ""


def test_data_dtype_is_the_narrowest_float_array():
    assert C.data_dtype([arr(types.float64), arr(types.float32, 1), types.boolean]) == np.float32
    assert C.data_dtype([arr(types.float64), types.float32]) == np.float64
    assert C.data_dtype([types.int64, arr(types.int64)]) is None


# ---- the compile command against an empty cache, in fresh processes ----

# Run in the second process: shapes, layouts and options not in WARM_SHAPES; prints the
# kernels it had to compile and how many it loaded from the cache.
AFTER = r"""
import json, sys
import numpy as np
from numba.core.dispatcher import Dispatcher
import lingrad

rng = np.random.default_rng(1)
f = lambda *s: rng.standard_normal(s).astype(np.float32)
for N, I, O in [(0, 3, 4), (5, 0, 3), (5, 3, 0), (1, 1, 1), (3, 5, 7), (17, 16, 17), (33, 65, 3),
                (257, 33, 37), (600, 50, 1), (300, 1, 40), (70, 2050, 9), (70, 5, 2050),
                (64, 64, 64), (130, 400, 300), (45, 20, 2), (40, 301, 19)]:
    for x, w, dy in [(f(N, I), f(I, O), f(N, O)),
                     (np.asfortranarray(f(N, I)), np.asfortranarray(f(I, O)), f(N, O)[::-1]),
                     (f(2, N, I), f(I, O), f(2, N, O))]:
        y = lingrad.linear(x, w, f(O), relu=True)
        lingrad.linear(x, w)
        g = lingrad.linear_backward(x, w, dy, relu_out=y)
        lingrad.linear_backward(x, w, dy, need_dx=False, need_db=False)
        lingrad.linear_backward(x, w, dy, out=(None, g.dw, g.db), need_dx=False, accumulate=True)
        lingrad.input_grad(dy, w)
        lingrad.weight_grad(x, dy, relu_out=y)
        lingrad.bias_grad(dy)
kernels = [d for name, m in list(sys.modules.items()) if name.startswith("lingrad.kernels.")
           for d in vars(m).values() if isinstance(d, Dispatcher) and d.py_func.__module__ == name]
print(json.dumps(dict(
    compiled=sorted({d.py_func.__name__ for d in kernels if d.stats.cache_misses}),
    loaded=sum(sum(d.stats.cache_hits.values()) for d in kernels))))
"""

ALL = numba.config.NUMBA_NUM_THREADS


def threads_param(n):
    if n == 1:
        return pytest.param(1, id="threads1")
    marks = [pytest.mark.skipif(not os.environ.get("LINGRAD_RUN_SLOW"),
                                reason="a minute more: set LINGRAD_RUN_SLOW=1 to run it")]
    if ALL == 1:
        marks.append(pytest.mark.skip(reason="one Numba thread here: the same as threads1"))
    return pytest.param(n, id="threads-all", marks=marks)


@pytest.mark.slow
@pytest.mark.parametrize("n_threads", [threads_param(1), threads_param(ALL)])
def test_compile_command_fills_an_empty_cache(tmp_path, n_threads):
    cache = tmp_path / "numba-cache"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), NUMBA_NUM_THREADS=str(n_threads))

    first = subprocess.run([sys.executable, "-m", "lingrad", "compile", "--dtypes", "float32"],
                           env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    # cold: exactly one notice, for float32 only, and the cache written where we asked
    assert first.stderr.count(NOTICE) == 1, first.stderr[-3000:]
    assert "float32" in first.stderr and "float64" not in first.stderr, first.stderr[-3000:]
    assert f"cache: {cache}" in first.stdout, first.stdout
    index = glob.glob(str(cache / "**" / "*.nbi"), recursive=True)
    data = glob.glob(str(cache / "**" / "*.nbc"), recursive=True)
    assert index and data, f"no Numba cache files under {cache}: {os.listdir(tmp_path)}"
    assert all(os.path.getsize(p) > 0 for p in index + data)

    second = subprocess.run([sys.executable, "-c", AFTER], env=env, capture_output=True,
                            text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert NOTICE not in second.stderr, second.stderr[-3000:]
    got = json.loads(second.stdout.strip().splitlines()[-1])
    assert got["compiled"] == [], (f"compiled again after `python -m lingrad compile`: "
                                   f"{got['compiled']} (WARM_SHAPES misses a path)")
    assert got["loaded"] > 0, "nothing was loaded from the cache"


READ_ONLY_RUN = """
import json, numpy as np, lingrad
from lingrad import compile as C
lingrad.bias_grad(np.ones((3, 2), np.float32))
print(json.dumps({"file": lingrad.__file__, "cache": C.cache_dir()}))
"""


def test_unwritable_kernels_dir_falls_back_to_the_user_cache(tmp_path):
    """README, "Where the cache lives", case 3: when Numba cannot write beside the kernel
    files (a read-only site-packages), the cache goes to the user-wide directory under
    $XDG_CACHE_HOME, and `lingrad.compile.cache_dir()` says so. The package is copied, and
    its kernels/__pycache__ made a plain file, which no user (root included) can write a
    cache into."""
    src = os.path.dirname(lingrad.__file__)
    site = tmp_path / "site"
    pkg = site / "lingrad"
    shutil.copytree(src, pkg, ignore=shutil.ignore_patterns("__pycache__", "kernels"))
    shutil.copytree(os.path.dirname(lingrad.kernels.__file__), pkg / "kernels",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "kernels" / "__pycache__").write_text("not a directory\n")
    xdg = tmp_path / "xdg"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(PYTHONPATH=str(site), XDG_CACHE_HOME=str(xdg), NUMBA_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", READ_ONLY_RUN], env=env, capture_output=True,
                         text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["file"].startswith(str(pkg)), f"imported {got['file']}, not the copy"
    assert got["cache"].startswith(str(xdg / "numba")), got
    index = glob.glob(str(xdg / "numba" / "**" / "*.nbi"), recursive=True)
    assert index, f"no cache index under {xdg}: {list(xdg.rglob('*'))[:10]}"
