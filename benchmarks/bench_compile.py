"""Compile time: a fresh Python process imports lingrad and makes its first call
(a ReLU layer's forward and backward, float32), timed by asv's timeraw_.

cache="cold": NUMBA_CACHE_DIR is a new, empty directory: every kernel the call
    needs is compiled (and written there).
cache="warm": the same directory was first filled by another process running
    the same code (untimed), so the kernels are loaded from disk.
Each sample's child process makes its own directory and removes it at exit.
Thread count: the environment's (common.bench_threads); one thread compiles the
serial kernels, more compile the parallel ones.
"""
from .common import bench_threads

# timed: the import (numba's included) and the first call
_FIRST_CALL = """
import lingrad
lingrad.set_num_threads({threads})
y = lingrad.linear(x, w, b, relu=True)
lingrad.linear_backward(x, w, dy, relu_out=y)
"""

# untimed, in every process: numpy and the data
_DATA = """
import numpy as np
rng = np.random.default_rng(0)
x, w, b, dy = (rng.random(s, dtype=np.float32) - np.float32(0.5)
               for s in [(512, 784), (784, 50), (50,), (512, 50)])
"""

# untimed, in the timed process: a fresh cache directory, removed at exit; when
# warm, a child process (inheriting NUMBA_CACHE_DIR) fills it by running the
# same code. asv pastes this text into a string literal and timeit indents it,
# so the child's code travels as one line: chr(10).join([...lines...]).
_FRESH_CACHE = """
import atexit, os, shutil, subprocess, sys, tempfile
os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="lingrad-numba-cache-")
atexit.register(shutil.rmtree, os.environ["NUMBA_CACHE_DIR"], True)
if {warm}:
    subprocess.run([sys.executable, "-c", chr(10).join({fill!r})], check=True)
"""


class Compile:
    params = [["cold", "warm"]]
    param_names = ["cache"]
    number = 1
    repeat = (1, 3, 120.0)  # every sample compiles the kernels once: a few samples, not 10
    warmup_time = 0  # a warm-up sample would be one more compile
    timeout = 600

    def timeraw_import_and_first_call(self, cache):
        stmt = _FIRST_CALL.format(threads=bench_threads())
        fill = (_DATA + stmt).splitlines()
        setup = _DATA + _FRESH_CACHE.format(warm=cache == "warm", fill=fill)
        if "\\" in setup + stmt:
            raise ValueError("timeraw code must hold no backslash (asv pastes it into a literal)")
        return stmt, setup
