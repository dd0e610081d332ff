"""The micro-kernel's contract (kernels/micro.py), checked directly, and its assembly; and the
tile transpose that packs w.T.

C[:m, :n] := beta * C + A @ B (+ bias) (ReLU), for every edge m <= MR, n <= NR, any
strides of A, float32 or float64, and a float64 C for float32 data. The assembly
check reads the compiled k loop: MR * NV vector FMAs, NV loads of B, MR broadcasts
of A, and no store (the accumulators stay in registers).
"""
import re

import numpy as np
import pytest
from numba import njit

from lingrad.kernels import MR, MR_SHORT, MR_TALL, MR_WIDE, NV, NV_TALL, NV_WIDE, VECTOR_BYTES

from lingrad.kernels.micro import micro, transpose_tile


def compiled(rows, nv):
    """A jitted call of the micro-kernel's copy for a block of rows x nv vectors (constants of
    the closure, so the intrinsic sees them as literals, as in engine.gemm_block)."""
    @njit
    def tile_of(a, b, c, bias, offs, dims, flags):
        micro(a, b, c, bias, offs, dims, flags, rows, nv)
    return tile_of


tile = compiled(MR, NV)
# the register blocks gemm_block runs (MR x NV, the plan's wide and tall blocks, each with its
# MR_SHORT-row and one-row copies): name -> (rows, vectors, the compiled wrapper)
BLOCKS = {f"{name}{suffix}": (rows, nv, tile if (rows, nv) == (MR, NV) else compiled(rows, nv))
          for suffix, (full, nv) in (("", (MR, NV)), ("-wide", (MR_WIDE, NV_WIDE)),
                                     ("-tall", (MR_TALL, NV_TALL)))
          for name, rows in (("MR", full), ("MR_SHORT", MR_SHORT), ("1", 1))}


def lanes(dtype, nv=NV):
    return nv * VECTOR_BYTES // np.dtype(dtype).itemsize


@pytest.mark.parametrize("dtype,cdtype", [(np.float32, np.float32), (np.float64, np.float64),
                                          (np.float32, np.float64)], ids=["f32", "f64", "f32->f64"])
@pytest.mark.parametrize("rows,m_off", [
    pytest.param(rows, m_off, id=f"{rows}-{name}")
    for rows in BLOCKS
    for m_off, name in ((0, "m=rows"), (1, "m=rows-1"), (-1, "m=1"))
    if not (BLOCKS[rows][0] == 1 and m_off == 1)])  # a block of one row has no m = rows - 1
@pytest.mark.parametrize("n_off", [0, 1, -1, "half", "vl-1"],
                         ids=["n=NR", "n=NR-1", "n=1", "n=half", "n=vl-1"])
@pytest.mark.parametrize("a_layout", ["rows", "cols"])
def test_contract(dtype, cdtype, rows, m_off, n_off, a_layout):
    MR, nv, tile_of = BLOCKS[rows]
    m = {0: MR, 1: MR - 1, -1: 1}[m_off]
    rng = np.random.default_rng(7)
    nr = lanes(dtype, nv)
    # the copies of the k loop: n=NR full; n=NR-1 all vectors, the last masked; n=half all,
    # the last at half width; n=1 one vector at half width; n=vl-1 one vector, masked
    vl = lanes(dtype, 1)
    n = {0: nr, 1: nr - 1, -1: 1, "half": nr - vl // 2, "vl-1": vl - 1}[n_off]
    kc = 37
    a = rng.standard_normal((MR, kc)).astype(dtype)
    abuf = np.ascontiguousarray(a if a_layout == "rows" else a.T).reshape(-1)
    rsa, csa = (kc, 1) if a_layout == "rows" else (1, MR)
    b = rng.standard_normal((kc, nr)).astype(dtype)
    bias = rng.standard_normal(nr + 3).astype(cdtype)
    ldc = nr + 5
    want = a[:m].astype(np.float64) @ b[:, :n].astype(np.float64)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    # beta False: C is never read (NaN there would show), only C[:m, :n] is written
    c = np.full((MR + 1, ldc), np.nan, cdtype)
    tile_of(abuf, b.reshape(-1), c.reshape(-1), bias, (0, rsa, csa, 0, nr, ldc, ldc, 0),
            (kc, m, n), (False, False, False))
    np.testing.assert_allclose(c[1:m + 1, :n], want, rtol=tol, atol=tol * kc)
    assert np.isnan(c[0]).all() and np.isnan(c[m + 1:]).all() and np.isnan(c[:, n:]).all()
    # beta True adds; the bias (from offset 3) and the ReLU are applied before the store
    c[1:m + 1, :n] = 1
    tile_of(abuf, b.reshape(-1), c.reshape(-1), bias, (0, rsa, csa, 0, nr, ldc, ldc, 3),
            (kc, m, n), (True, True, True))
    expect = np.maximum(want + 1 + bias[3:3 + n], 0)
    np.testing.assert_allclose(c[1:m + 1, :n], expect, rtol=tol, atol=tol * kc)
    assert c.dtype == cdtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_off", [0, 3], ids=["n=NR", "n=NR-3"])
@pytest.mark.parametrize("beta", [False, True])
def test_a_column_of_tiles_in_one_call(dtype, n_off, beta):
    """dims (kc, m, n, tiles, astep, cstep): tile t reads A from ia + t * astep and writes C
    from ic + t * cstep, each as one call would (engine.gemm_block's columns of tiles); the
    bias is the same for every tile, and C outside the tiles is not touched."""
    tiles, kc = 3, 21
    nr = lanes(dtype)
    n = nr - n_off
    rng = np.random.default_rng(11)
    a = rng.standard_normal((tiles * MR, kc)).astype(dtype)
    b = rng.standard_normal((kc, nr)).astype(dtype)
    bias = rng.standard_normal(nr).astype(dtype)
    ldc = nr + 2
    c = np.full((tiles * MR + 1, ldc), 0.5, dtype)
    want = c.copy()
    want[1:, :n] = (0.5 if beta else 0) + a.astype(np.float64) @ b[:, :n] + bias[:n]
    tile(a.reshape(-1), b.reshape(-1), c.reshape(-1), bias, (0, kc, 1, 0, nr, ldc, ldc, 0),
         (kc, MR, n, tiles, MR * kc, MR * ldc), (beta, True, False))
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(c, want, rtol=tol, atol=tol * kc)


def test_relu_keeps_nan_and_empty_sum_writes_bias():
    nr = lanes(np.float32)
    a = np.zeros(MR, np.float32)
    b = np.zeros(nr, np.float32)
    bias = np.full(nr, -1.0, np.float32)
    bias[0] = np.nan
    c = np.full((MR, nr), 5.0, np.float32)
    tile(a, b, c.reshape(-1), bias, (0, 1, MR, 0, nr, 0, nr, 0), (0, MR, nr), (False, True, True))
    assert np.isnan(c[:, 0]).all() and (c[:, 1:] == 0).all()


def fma_loops(asm):
    """The bodies of the innermost loops holding FMAs: from the label a backward branch
    jumps to, to that branch (the micro-kernel's copies of the k loop, and any remainder
    loop LLVM made in unrolling one). A loop whose line range holds another loop's is an
    outer one (the loop over tiles)."""
    lines = [ln.strip() for ln in asm.splitlines()]
    labels = {ln[:-1]: i for i, ln in enumerate(lines) if re.match(r"^\.?L\w+:$", ln)}
    spans = []
    for i, ln in enumerate(lines):
        jump = re.match(r"^j\w+\s+(\.?L\w+)$", ln)
        if jump and jump.group(1) in labels and labels[jump.group(1)] < i:
            spans.append((labels[jump.group(1)] + 1, i))
    inner = [(a, b) for a, b in spans
             if not any((c, d) != (a, b) and a <= c and d <= b for c, d in spans)]
    return [lines[a:b] for a, b in inner if any("vfmadd" in x for x in lines[a:b])]


# the registers of a whole vector and of a half one: zmm and ymm with AVX-512, ymm and xmm
HALF = "ymm" if VECTOR_BYTES == 64 else "xmm"


@pytest.mark.parametrize("block", ["MR", "MR-wide", "MR-tall"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_k_loop_keeps_the_block_in_registers(dtype, block):
    """Each copy of the k loop, for u of the block's NV vectors: per (unrolled) step MR
    broadcasts of A from memory, u loads of B, MR * u vector FMAs and no store. The copies:
    full tiles (u = NV, plain loads), and for each u an edge copy whose last vector is
    masked and one whose last vector is half width (its MR FMAs on half registers; LLVM
    broadcasts A's value to the whole vectors from the half-width broadcast, a register
    broadcast per row, where u > 1)."""
    MR, NV, tile = BLOCKS[block]
    nr = lanes(dtype, NV)
    a, b, c = (np.zeros(s, dtype) for s in (MR * 4, nr * 4, MR * nr))
    tile(a, b, c, c, (0, 4, 1, 0, nr, 0, nr, 0), (4, MR, nr), (False, False, False))
    asm = tile.inspect_asm(tile.signatures[0])
    seen = set()
    for body in fma_loops(asm):
        broadcasts = [x for x in body if "vbroadcast" in x or "{1to" in x]
        from_memory = [x for x in broadcasts if "(" in x]
        unroll = len(from_memory) // MR
        assert unroll >= 1 and len(from_memory) == unroll * MR, body
        fmas = [x for x in body if "vfmadd" in x]
        u = len(fmas) // (MR * unroll)
        assert 1 <= u <= NV and len(fmas) == unroll * MR * u, body
        half = [x for x in fmas if re.search(rf"%{HALF}\d+$", x)]
        assert len(half) in (0, unroll * MR), body
        assert len(broadcasts) - len(from_memory) == (unroll * MR if half and u > 1 else 0), body
        loads = [x for x in body if re.match(r"^v(mask)?mov[au]?p[sd]\s+-?\w*\(", x)]
        assert len(loads) == unroll * u, body
        masked = [x for x in loads if "{%k" in x]
        assert len(masked) in (0, unroll), body  # only the last vector's loads are masked
        stores = [x for x in body if re.match(r"^v?(mask)?mov\w*\s+%[xyz]mm\d+, .*\(", x)]
        assert not stores, f"stores inside the k loop: {stores}"
        seen.add((u, "half" if half else "masked" if masked else "full"))
    want = {(NV, "full")} | {(u, kind) for u in range(1, NV + 1) for kind in ("half", "masked")}
    assert seen == want


def guarded_page(dtype):
    """A page of dtype values followed by a page the process may not read (PROT_NONE): an
    array ending there crashes a read past its end. Returns (the page, release)."""
    mmap = pytest.importorskip("mmap")
    ctypes = pytest.importorskip("ctypes")
    page = mmap.PAGESIZE
    buf = mmap.mmap(-1, 2 * page)
    libc = ctypes.CDLL(None, use_errno=True)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    if libc.mprotect(ctypes.c_void_p(addr + page), page, 0) != 0:
        pytest.skip("mprotect is not available")
    whole = np.frombuffer(buf, dtype, count=page // np.dtype(dtype).itemsize)
    return whole, lambda: libc.mprotect(ctypes.c_void_p(addr + page), page, 3)  # READ | WRITE


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_of", [lambda nr, vl: nr - 3, lambda nr, vl: nr - vl + 2,
                                  lambda nr, vl: vl - 3, lambda nr, vl: 2],
                         ids=["n=NR-3", "n=NR-vl+2", "n=vl-3", "n=2"])
def test_edge_tile_reads_no_lane_past_n(dtype, n_of):
    """B read in place: its last row ends where a page the process may not read begins, so a
    load of one lane past n would crash the test (each edge copy of the k loop: the last
    vector masked or at half width, two vectors or one)."""
    whole, release = guarded_page(dtype)
    item = np.dtype(dtype).itemsize
    nr, kc = lanes(dtype), 5
    n = n_of(nr, lanes(dtype, 1))
    b = whole[whole.size - kc * n:]  # kc rows of n lanes, ending at the guard page
    rng = np.random.default_rng(3)
    b[:] = rng.standard_normal(kc * n)
    a = rng.standard_normal(MR * kc).astype(dtype)
    c = np.full(MR * n, np.nan, dtype)
    tile(a, b, c, c, (0, kc, 1, 0, n, 0, n, 0), (kc, MR, n), (False, False, False))
    want = a.reshape(MR, kc).astype(np.float64) @ b.reshape(kc, n).astype(np.float64)
    np.testing.assert_allclose(c.reshape(MR, n), want, rtol=1e-4 if item == 4 else 1e-12)
    del whole, b
    release()


@njit
def transpose(src, dst, offs):
    transpose_tile(src, dst, offs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transpose_tile_writes_the_transposed_tile_and_nothing_else(dtype):
    vl = VECTOR_BYTES // np.dtype(dtype).itemsize
    src = np.arange(40 * 50, dtype=dtype)
    dst = np.full(30 * 60, -1, dtype)
    transpose(src, dst, (3 * 50 + 5, 50, 7 * 60 + 2, 60))
    np.testing.assert_array_equal(dst.reshape(30, 60)[7:7 + vl, 2:2 + vl],
                                  src.reshape(40, 50)[3:3 + vl, 5:5 + vl].T)
    assert (dst == -1).sum() == dst.size - vl * vl


# ---- the dot kernel (micro.dot): C[r, j] = A[r, :kc] . B[j, :kc] (+ bias) (ReLU) ----
from lingrad.kernels import DOT_ACC, DOT_COLS  # noqa: E402
from lingrad.kernels.micro import dot  # noqa: E402


@njit
def dot_block(a, b, c, bias, offs, dims, flags, cols):
    if cols == 1:
        dot(a, b, c, bias, offs, dims, flags, 1)
    elif cols == 2:
        dot(a, b, c, bias, offs, dims, flags, 2)
    elif cols == 3:
        dot(a, b, c, bias, offs, dims, flags, 3)
    elif cols == DOT_COLS:
        dot(a, b, c, bias, offs, dims, flags, DOT_COLS)
    else:  # the single-row copy (a batch of 1)
        dot(a, b, c, bias, offs, dims, flags, DOT_ACC)


COPIES = [1, 2, 3, DOT_COLS, DOT_ACC]  # the columns of each copy engine.dot_block compiles


@pytest.mark.parametrize("dtype,cdtype", [(np.float32, np.float32), (np.float64, np.float64),
                                          (np.float32, np.float64)], ids=["f32", "f64", "f32->f64"])
@pytest.mark.parametrize("cols,m", [(c, m) for c in COPIES  # m: all rows, one short, one
                                    for m in sorted({DOT_ACC // c, DOT_ACC // c - 1, 1} - {0})])
@pytest.mark.parametrize("kc", [0, 1, 37, 64])
def test_dot_contract(dtype, cdtype, cols, m, kc):
    rows = DOT_ACC // cols
    rng = np.random.default_rng(11)
    rsa, rsb, ldc = kc + 3, kc + 5, cols + 2
    a = rng.standard_normal((rows, rsa)).astype(dtype)
    b = rng.standard_normal((cols, rsb)).astype(dtype)
    bias = rng.standard_normal(cols + 2).astype(cdtype)
    want = a[:m, :kc].astype(np.float64) @ b[:, :kc].astype(np.float64).T
    tol = 1e-4 if dtype == np.float32 else 1e-12
    c = np.full((rows + 1, ldc), np.nan, cdtype)
    # no bias, no ReLU: only C[1:m+1, :cols] is written (NaN elsewhere would stay NaN)
    dot_block(a.reshape(-1), b.reshape(-1), c.reshape(-1), bias, (0, rsa, 0, rsb, ldc, ldc, 0),
              (kc, m), (False, False), cols)
    np.testing.assert_allclose(c[1:m + 1, :cols], want, rtol=tol, atol=tol * max(kc, 1))
    assert np.isnan(c[0]).all() and np.isnan(c[m + 1:]).all() and np.isnan(c[:, cols:]).all()
    # the bias from offset 2, then the ReLU
    dot_block(a.reshape(-1), b.reshape(-1), c.reshape(-1), bias, (0, rsa, 0, rsb, ldc, ldc, 2),
              (kc, m), (True, True), cols)
    expect = np.maximum(want + bias[2:2 + cols], 0)
    np.testing.assert_allclose(c[1:m + 1, :cols], expect, rtol=tol, atol=tol * max(kc, 1))


def test_dot_relu_keeps_nan():
    a = np.array([np.nan, 1.0, -1.0, 0.0], np.float32)
    b = np.ones(4, np.float32)
    c = np.zeros(4, np.float32)
    dot_block(a, b, c, b, (0, 1, 0, 0, 0, 1, 0), (1, 4), (False, True), 1)
    assert np.isnan(c[0]) and list(c[1:]) == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dot_reads_no_lane_past_kc(dtype):
    """A's and B's rows end where a page the process may not read begins, so a load of one
    lane past kc would crash the test."""
    whole, release = guarded_page(dtype)
    item = np.dtype(dtype).itemsize
    kc = VECTOR_BYTES // item + 3
    ab = whole[whole.size - 2 * kc:]  # one row of A, then one of B, ending at the guard page
    ab[:] = np.random.default_rng(5).standard_normal(2 * kc)
    c = np.full(1, np.nan, dtype)
    dot_block(ab, ab, c, c, (0, kc, kc, kc, 0, 1, 0), (kc, 1), (False, False), 1)
    np.testing.assert_allclose(c[0], ab[:kc].astype(np.float64) @ ab[kc:], rtol=1e-5)
    del whole, ab
    release()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dot_k_loop_keeps_its_sums_in_registers(dtype):
    """Each compiled copy (COPIES) has a k loop of rows * cols FMAs, rows + cols vector loads
    (A's rows, B's rows) and no store."""
    a, b, c = (np.zeros(s, dtype) for s in (DOT_ACC * 40, DOT_ACC * 40, DOT_ACC * DOT_ACC))
    for cols in COPIES:
        dot_block(a, b, c, c, (0, 40, 0, 40, 0, cols, 0), (40, DOT_ACC // cols), (False, False),
                  cols)
    sig = [s for s in dot_block.signatures if str(s[0].dtype) == np.dtype(dtype).name][0]
    found = set()
    for body in fma_loops(dot_block.inspect_asm(sig)):
        stores = [x for x in body if re.match(r"^v?(mask)?mov\w*\s+%[xyz]mm\d+, .*\(", x)]
        assert not stores, f"stores inside the k loop: {stores}"
        loads = sum(bool(re.match(r"^v(mask)?mov[au]?p[sd]\s+-?\w*\(", x)) for x in body)
        found.add((sum("vfmadd" in x for x in body), loads))
    want = {((DOT_ACC // cols) * cols, DOT_ACC // cols + cols) for cols in COPIES}
    assert want <= found, f"k loops (FMAs, loads) expected {want}, found {found}"
