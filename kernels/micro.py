"""The one register micro-kernel, written in LLVM IR through a Numba intrinsic (and the
register tile transpose that packing w.T uses).

Contract (BLIS's gemm micro-kernel, with the layer's epilogue):

    C[r, p] := beta * C[r, p] + sum_{k < kc} A[r, k] * B[k, p]  (+ bias[p])  (then ReLU)
    for 0 <= r < m <= rows and 0 <= p < n <= NR = nv * (VECTOR_BYTES / itemsize)

    A[r, k] = a[ia + r * rsa + k * csa]   any strides: one scalar per (r, k), broadcast
    B[k, p] = b[ib + k * ldb + p]         contiguous lanes per k: a packed micro-panel, or
                                          B read in place; lanes p >= n are never read
    C[r, p] = c[ic + r * ldc + p]         row-major, unit column stride
    bias[p] = bias[ibias + p]             read only when use_bias

    offs = (ia, rsa, csa, ib, ldb, ic, ldc, ibias), dims = (kc, m, n), or (kc, m, n,
    tiles, astep, cstep) for a column of tiles down C in one call (tile t: A from ia + t *
    astep, C from ic + t * cstep, each of m rows), flags = (beta, use_bias, relu), all
    scalars; rows and nv, constants, are the height and the width in vectors of the
    register block (config.BLOCKS: MR x NV, the wide MR_WIDE x NV_WIDE or the tall MR_TALL
    x 1; MR_SHORT or 1 rows for the short tiles of a short M). micro_tile chooses among
    them at run time for the engine.

- With beta False C is never read (BLIS's beta = 0).
- C may be float64 while A and B are float32: the block is converted once,
  after the k loop, and added in float64.
- Rows r >= m read row 0 of A (valid memory) and are never stored. An edge
  tile (n < NR) runs its own copy of the k loop, with masked loads of B, and
  stores with masked stores; full tiles use plain loads and stores (masked
  ones are slower on some CPUs). An edge tile runs only the u = ceil(n / vl)
  vectors its columns reach, the first u - 1 with plain loads, the last masked,
  or at half width when it holds at most half a vector of columns (n = 50 in
  float32: 3 x 16 + 2): on Zen 4 a 256-bit FMA costs half a 512-bit one, so 50
  columns cost 3.5 vectors a row, not 4 (lesson-1's forward, float32, 1 thread:
  48.4 -> 43.3 ms), and 40 columns of a 12 x 2 block's tiles (32 + 8) 2.5, not
  4 (docs/performance.md). One copy of the k loop per (u, half or masked), and
  one for full tiles.
- ReLU keeps NaN, as np.maximum(v, 0): "v > 0 or v unordered".
- Each k prefetches B's row k + PREFETCH (a hint, never a fault): B read in
  place has rows far apart, which the hardware prefetchers do not follow.
- Serial; no state. One function per (A, B, C, bias dtype, rows, nv), out of line
  (``_outlined``: linkonce_odr, noinline), so every call site runs the same
  machine code whatever the constants of its caller: inlined, LLVM propagated
  a caller's constants into the k loop, unrolled it at some sites and spilled
  accumulators there (ladder rung 4 at 0.65x of rung 6 on the same tiles).

Why an intrinsic: Numba has no vector types, and a block of the output kept
in scalar or array accumulators is streamed through memory by LLVM (loads and
stores of C inside the k loop). Here the MR x NV accumulators are SSA vector
values (phi nodes of the k loop), so they can only live in registers. The k
loop compiles to NV vector loads of B, MR broadcasts of A and MR * NV FMAs,
with no load or store of C: checked in the assembly (tests/test_micro.py
reads it from ``inspect_asm`` and counts the instructions of the loop).
"""
import llvmlite.ir as ir
from numba import types
from numba.extending import intrinsic

from .config import BLOCKS, DOT_ACC, MR_SHORT, PREFETCH, VECTOR_BYTES

I32 = ir.IntType(32)
I64 = ir.IntType(64)


def _call(builder, name, ret, args):
    """Call the LLVM intrinsic ``name``, declared in this module on first use."""
    fn = builder.module.globals.get(name)
    if fn is None:
        fn = ir.Function(builder.module, ir.FunctionType(ret, [a.type for a in args]), name=name)
    return builder.call(fn, args)


def _suffix(vt):
    """LLVM's overload suffix of a float vector type: v8f32, v4f64, ..."""
    return f"v{vt.count}{'f32' if isinstance(vt.element, ir.FloatType) else 'f64'}"


def _splat(builder, scalar, vt):
    """A vector of type vt with every lane set to scalar."""
    one = builder.insert_element(ir.Constant(vt, ir.Undefined), scalar, I32(0))
    return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(I32, vt.count), [0] * vt.count))


def _lane_mask(builder, count, vl):
    """<vl x i1> with lane p set for p < count (count clamped to [0, vl]), from the scalar
    bits (1 << count) - 1: AVX-512 moves them into a mask register (kmov). The compare of a
    <vl x i64> lane index with a splat of count that this replaces takes four zmm registers
    for a float32 mask, and LLVM recomputed it inside the k loop, spilling accumulators to
    the stack (docs/performance.md, "Edge tiles")."""
    lt = builder.icmp_signed
    c = builder.select(lt("<", count, I64(0)), I64(0),
                       builder.select(lt(">", count, I64(vl)), I64(vl), count))
    bits = builder.sub(builder.shl(I64(1), c), I64(1))
    return builder.bitcast(builder.trunc(bits, ir.IntType(vl)), ir.VectorType(ir.IntType(1), vl))


def _outlined(builder, name, body, args):
    """Call body(builder, *args)'s code as a function of its own: defined once per LLVM
    module under name (linkonce_odr: the modules Numba links together keep one copy;
    noinline), then called. Inlined instead, every call site of a kernel got its own copy
    of the k loop, which LLVM optimised again (compile time) and specialised on the
    caller's constants: unrolled at some sites, with accumulators spilled to the stack
    (docs/performance.md, "The out-of-line micro-kernel"). linkonce_odr, unlike internal,
    also keeps LLVM from propagating a caller's constants into the function. A call costs
    a few cycles per tile, against kc iterations of MR * NV FMAs inside."""
    fn = builder.module.globals.get(name)
    if fn is None:
        fn = ir.Function(builder.module, ir.FunctionType(ir.VoidType(), [v.type for v in args]),
                         name=name)
        fn.linkage = "linkonce_odr"
        fn.attributes.add("noinline")
        inner = ir.IRBuilder(fn.append_basic_block("entry"))
        body(inner, *fn.args)
        inner.ret_void()
    builder.call(fn, args)


def _loop_back(builder, k, step, acc, new, first, loop, kc, done):
    """The back edge of a k loop whose counter k and accumulators acc are phi nodes: they
    enter from block first as 0 and come round from loop as k + step and the new sums;
    the loop runs while k + step < kc, then goes to done."""
    k1 = builder.add(k, I64(step))
    k.add_incoming(I64(0), first)
    k.add_incoming(k1, loop)
    for row, row_new in zip(acc, new):
        for a, a_new in zip(row, row_new):
            a.add_incoming(ir.Constant(a.type, None), first)  # zeros of its own width
            a.add_incoming(a_new, loop)
    builder.cbranch(builder.icmp_signed("<", k1, kc), loop, done)


def _scalars(context, builder, tup, tupty, to):
    """The members of a tuple of scalars, each cast to the Numba type ``to``."""
    return [context.cast(builder, builder.extract_value(tup, i), tupty[i], to)
            for i in range(len(tupty))]


@intrinsic
def micro(typingctx, a, b, c, bias, offs, dims, flags, rows, nv):
    """C[:m, :n] := beta * C + A @ B (+ bias) (ReLU): see the module docstring. rows and nv,
    constants, are the block's height (MR, MR_WIDE, MR_SHORT or 1) and its width in vectors
    (NV or NV_WIDE): the copy compiled for them."""
    if not (isinstance(rows, types.IntegerLiteral) and isinstance(nv, types.IntegerLiteral)):
        return None  # Numba then retries with the constants' literal types

    def codegen(context, builder, sig, args):
        _emit(context, builder, sig, args, rows.literal_value, nv.literal_value)
        return context.get_dummy_value()

    return types.void(a, b, c, bias, offs, dims, flags, rows, nv), codegen


@intrinsic
def micro_tile(typingctx, a, b, c, bias, offs, dims, flags, block):
    """micro's call for one tile of the engine (engine.gemm_block): the copy for its shape,
    chosen at run time by a branch in LLVM IR, not in Python: the register block
    config.BLOCKS[block] (plan.register_block's choice: 0 MR x NV, 1 the wide block, 2 the
    tall one); a tile of at most MR_SHORT rows (a batch of 1 to 4 rows, the last rows of a
    short M) the MR_SHORT-row copy of the same width, and a single row (a batch of 1, the
    d.T of a layer with one output) the one-row copy: 1 broadcast, NV loads and NV FMAs per
    k (Zen 5, 2026-12-04, a 1 x 32 tile of K = 64: 79 ns with the 4-row copy, 49 with the
    1-row one).

    An intrinsic, because the same choice in @njit functions inlined into the tile loop
    made Numba count references to the four arrays around every call (four NRT_incref and
    four NRT_decref, atomic, per tile; found by sampling with gdb): 50000 x 784 -> 50 dx
    at 1 thread (Zen 4) ran 6% slower than the ladder's rung 7, which calls micro alone."""

    def codegen(context, builder, sig, args):
        m = context.cast(builder, builder.extract_value(args[5], 1), sig.args[5][1], types.int64)
        code = context.cast(builder, args[7], sig.args[7], types.int64)
        for index, (rows, nv) in enumerate(BLOCKS):
            with builder.if_then(builder.icmp_signed("==", code, I64(index))):
                with builder.if_else(builder.icmp_signed("==", m, I64(1))) as (one, more):
                    with one:
                        _emit(context, builder, sig, args, 1, nv)
                    with more:
                        short = builder.icmp_signed("<=", m, I64(MR_SHORT))
                        with builder.if_else(short) as (few, many):
                            with few:
                                _emit(context, builder, sig, args, MR_SHORT, nv)
                            with many:
                                _emit(context, builder, sig, args, rows, nv)
        return context.get_dummy_value()

    return types.void(a, b, c, bias, offs, dims, flags, block), codegen


def _emit(context, builder, sig, args, MR, NV):
    """A call of micro's out-of-line copy for an MR x NV block (defined on first use), on
    the arguments (a, b, c, bias, offs, dims, flags) of an intrinsic's call."""
    aty, bty, cty, biasty = sig.args[:4]
    ia, rsa, csa, ib, ldb, ic, ldc, ibias = _scalars(context, builder, args[4], sig.args[4],
                                                     types.int64)
    dims = _scalars(context, builder, args[5], sig.args[5], types.int64)
    kc, m, n = dims[:3]
    tiles, astep, cstep = dims[3:] if len(dims) == 6 else (I64(1), I64(0), I64(0))
    beta, use_bias, relu = _scalars(context, builder, args[6], sig.args[6], types.boolean)
    pa, pb, pc, pbias = (context.make_array(t)(context, builder, v).data
                         for t, v in zip(sig.args[:4], args[:4]))
    elt = context.get_data_type(bty.dtype)
    celt = context.get_data_type(cty.dtype)
    vl = VECTOR_BYTES // context.get_abi_sizeof(elt)
    vt, cvt = ir.VectorType(elt, vl), ir.VectorType(celt, vl)
    mt = ir.VectorType(ir.IntType(1), vl)
    align, calign = context.get_abi_sizeof(elt), context.get_abi_sizeof(celt)
    cload, cstore = f"llvm.masked.load.{_suffix(cvt)}.p0", f"llvm.masked.store.{_suffix(cvt)}.p0"
    zero, czero = ir.Constant(vt, [0.0] * vl), ir.Constant(cvt, [0.0] * vl)

    def body(builder, pa, pb, pc, pbias, ia0, rsa, csa, ib, ldb, ic0, ldc, ibias, kc, m, n,
             beta, use_bias, relu, tiles, astep, cstep):
        # the tiles, one after another down C: tile t at ia0 + t * astep in A, ic0 + t *
        # cstep in C, each of m rows (one call for a column of tiles: the call, its
        # arguments and the lane masks once, not per tile)
        first = builder.block
        tile = builder.append_basic_block("micro.tile")
        builder.branch(tile)
        builder.position_at_end(tile)
        t = builder.phi(I64)
        t.add_incoming(I64(0), first)
        ia = builder.add(ia0, builder.mul(t, astep))
        ic = builder.add(ic0, builder.mul(t, cstep))
        # loop-invariant: the address of each row of A (rows past m read row 0)
        arow = [builder.gep(pa, [builder.add(ia, builder.mul(
            builder.select(builder.icmp_signed("<", I64(r), m), I64(r), I64(0)), rsa))])
            for r in range(MR)]

        # lane masks of an edge tile (n < NR): B's lanes past n are not read, C's not stored
        masks = [_lane_mask(builder, builder.sub(n, I64(v * vl)), vl) for v in range(NV)]
        full = builder.icmp_signed("==", n, I64(NV * vl))
        # an edge tile runs only the u vectors its columns reach (u = ceil(n / vl)), the
        # first u - 1 whole with plain loads; the last one at half width when it holds at
        # most half a vector of columns (50 = 3 * 16 + 2), else masked. One copy of the k
        # loop per (u, half or masked), and one for full tiles (n = NR, plain loads).
        hl = vl // 2
        hvt = ir.VectorType(elt, hl)
        hmasks = [_lane_mask(builder, builder.sub(n, I64(v * vl)), hl) for v in range(NV)]
        used = builder.sdiv(builder.add(n, I64(vl - 1)), I64(vl))  # 1 to NV for 0 < n <= NR
        left = builder.sub(n, builder.mul(builder.sub(used, I64(1)), I64(vl)))
        half = builder.icmp_signed("<=", left, I64(hl))
        # the variants: (vectors run, the last one at half width); index 2 * (u - 1) + masked
        # (any other index, n = 0, takes the last: all NV vectors, masked)
        variants = [(u, last_half) for u in range(1, NV + 1) for last_half in (True, False)]
        code = builder.add(builder.mul(builder.sub(used, I64(1)), I64(2)),
                           builder.zext(builder.not_(half), I64))

        entry = builder.block
        start = builder.append_basic_block("micro.start")
        pick = builder.append_basic_block("micro.pick")
        full_loop = builder.append_basic_block("micro.k.full")
        loops = [builder.append_basic_block(f"micro.k.{u}{'h' if h else 'm'}") for u, h in variants]
        done = builder.append_basic_block("micro.done")
        builder.cbranch(builder.icmp_signed(">", kc, I64(0)), start, done)
        builder.position_at_end(start)
        builder.cbranch(full, full_loop, pick)
        builder.position_at_end(pick)
        switch = builder.switch(code, loops[-1])
        for index, loop in enumerate(loops[:-1]):
            switch.add_case(I64(index), loop)

        def k_loop(loop, first, u, last_half):
            """The k loop of one variant in block loop, entered from first: u vectors (the
            last at half width when last_half, masked when False, whole when None). Its
            accumulators are phi nodes, so they live in registers. Returns the sums as NV
            whole vectors and the block they leave from."""
            builder.position_at_end(loop)
            vts = [hvt if last_half and v == u - 1 else vt for v in range(u)]
            k = builder.phi(I64)
            acc = [[builder.phi(ty) for ty in vts] for _ in range(MR)]
            brow = builder.add(ib, builder.mul(k, ldb))
            bv = []
            for v, ty in enumerate(vts):
                ptr = builder.bitcast(builder.gep(pb, [builder.add(brow, I64(v * vl))]),
                                      ty.as_pointer())
                if last_half is None or v < u - 1:
                    bv.append(builder.load(ptr, align=align))
                else:
                    mask = hmasks[v] if last_half else masks[v]
                    bv.append(_call(builder, f"llvm.masked.load.{_suffix(ty)}.p0", ty,
                                    [ptr, I32(align), mask, ir.Constant(ty, None)]))
            ahead = builder.add(ib, builder.mul(builder.add(k, I64(PREFETCH)), ldb))
            for v in range(u):
                _call(builder, "llvm.prefetch.p0", ir.VoidType(), [
                    builder.bitcast(builder.gep(pb, [builder.add(ahead, I64(v * vl))]),
                                    ir.IntType(8).as_pointer()), I32(0), I32(3), I32(1)])
            kcol = builder.mul(k, csa)
            new = []
            for r in range(MR):
                s = _splat(builder, builder.load(builder.gep(arow[r], [kcol])), vt)
                # the half-width broadcast: the lower half of the whole one
                sh = (builder.shuffle_vector(s, s, ir.Constant(ir.VectorType(I32, hl), list(range(hl))))
                      if last_half else None)
                new.append([_call(builder, f"llvm.fma.{_suffix(ty)}", ty,
                                  [sh if ty is hvt else s, bv[v], acc[r][v]])
                            for v, ty in enumerate(vts)])
            if u == NV and not last_half:
                _loop_back(builder, k, 1, acc, new, first, loop, kc, done)
                return new, loop
            # back to NV whole vectors for the epilogue: the half one padded with zeros, the
            # vectors not run zero (their lanes are not stored)
            finish = builder.append_basic_block(f"micro.finish.{u}")
            _loop_back(builder, k, 1, acc, new, first, loop, kc, finish)
            builder.position_at_end(finish)
            pad = ir.Constant(ir.VectorType(I32, vl), list(range(hl)) + [hl] * (vl - hl))
            new = [[builder.shuffle_vector(a, ir.Constant(hvt, None), pad) if a.type == hvt
                    else a for a in row] + [zero] * (NV - u) for row in new]
            builder.branch(done)
            return new, finish

        results = [k_loop(full_loop, start, NV, None)]
        results += [k_loop(loop, pick, u, last_half) for loop, (u, last_half) in zip(loops, variants)]

        builder.position_at_end(done)
        out = [[builder.phi(vt) for _ in range(NV)] for _ in range(MR)]
        for r in range(MR):
            for v in range(NV):
                out[r][v].add_incoming(zero, entry)
                for new, loop in results:
                    out[r][v].add_incoming(new[r][v], loop)
        if celt != elt:  # float32 sums into a float64 C
            out = [[builder.fpext(p, cvt) for p in row] for row in out]

        # the epilogue: the bias, beta, ReLU, the store
        bias_on = _splat(builder, use_bias, mt)
        bvals = [_call(builder, cload, cvt, [
            builder.bitcast(builder.gep(pbias, [builder.add(ibias, I64(v * vl))]),
                            cvt.as_pointer()),
            I32(calign), builder.and_(masks[v], bias_on), czero]) for v in range(NV)]

        def store(add_old, full, with_bias):
            """Rows r < m of C: plain vector loads and stores for a full-width tile
            (masked ones are microcoded on some CPUs), masked ones at an edge; the bias
            added only in the copy for use_bias."""
            for r in range(MR):
                with builder.if_then(builder.icmp_signed("<", I64(r), m)):
                    base = builder.add(ic, builder.mul(I64(r), ldc))
                    for v in range(NV):
                        ptr = builder.bitcast(builder.gep(pc, [builder.add(base, I64(v * vl))]),
                                              cvt.as_pointer())
                        val = builder.fadd(out[r][v], bvals[v]) if with_bias else out[r][v]
                        if add_old:
                            old = (builder.load(ptr, align=calign) if full else
                                   _call(builder, cload, cvt,
                                         [ptr, I32(calign), masks[v], czero]))
                            val = builder.fadd(val, old)
                        keep = builder.fcmp_unordered(">", val, czero)
                        val = builder.select(relu, builder.select(keep, val, czero), val)
                        if full:
                            builder.store(val, ptr, align=calign)
                        else:
                            _call(builder, cstore, ir.VoidType(),
                                  [val, ptr, I32(calign), masks[v]])

        # one copy of the stores per (beta, full tile, bias): without the bias, adding
        # its zeros cost an add per vector, and the bias vectors spilled accumulators.
        # A 12 x 32 float32 call on data in L1 (Zen 4), kc = 1 / 16 / 64: 49 / 174 / 492
        # -> 33 / 134 / 456 ns; with the bias and ReLU 70 / 168 / 492 -> 46 / 146 / 463 ns.
        # Compiling the float32 kernels: 16.5-16.8 -> 17.3-17.4 s.
        for add_old in (True, False):
            with builder.if_then(beta if add_old else builder.not_(beta)):
                with builder.if_else(full) as (then, otherwise):
                    for branch, whole in ((then, True), (otherwise, False)):
                        with branch:
                            with builder.if_else(use_bias) as (biased, plain):
                                with biased:
                                    store(add_old, whole, True)
                                with plain:
                                    store(add_old, whole, False)

        t1 = builder.add(t, I64(1))
        t.add_incoming(t1, builder.block)
        after = builder.append_basic_block("micro.tiles.done")
        builder.cbranch(builder.icmp_signed("<", t1, tiles), tile, after)
        builder.position_at_end(after)

    name = f"lingrad.micro.{aty.dtype}.{bty.dtype}.{cty.dtype}.{biasty.dtype}.{MR}x{NV}.tiles"
    _outlined(builder, name, body,
              [pa, pb, pc, pbias, ia, rsa, csa, ib, ldb, ic, ldc, ibias, kc, m, n, beta,
               use_bias, relu, tiles, astep, cstep])


@intrinsic
def transpose_tile(typingctx, src, dst, offs):
    """dst[jo + k * ldd + p] = src[io + p * lds + k] for p, k < VL = VECTOR_BYTES / itemsize.

    One VL x VL tile transposed in registers, for packing w.T: VL loads of rows
    of src, log2(VL) rounds of two-input shuffles (each swaps the off-diagonal
    blocks of one size), VL stores. offs = (io, lds, jo, ldd); every row read
    and written is whole. Serial; no state.
    """
    def codegen(context, builder, sig, args):
        io, lds, jo, ldd = _scalars(context, builder, args[2], sig.args[2], types.int64)
        ps, pd = (context.make_array(t)(context, builder, v).data for t, v in zip(sig.args[:2], args[:2]))
        elt = context.get_data_type(sig.args[0].dtype)
        align = context.get_abi_sizeof(elt)
        vl = VECTOR_BYTES // align
        vt = ir.VectorType(elt, vl)
        rows = [builder.load(builder.bitcast(builder.gep(ps, [builder.add(io, builder.mul(I64(p), lds))]),
                                             vt.as_pointer()), align=align) for p in range(vl)]
        h = vl // 2
        while h:
            for r in range(vl):
                if r & h:
                    continue
                a, b = rows[r], rows[r + h]
                # (r, c) with c & h takes (r + h, c - h); (r + h, c) without takes (r, c + h)
                lo = [c if not c & h else vl + c - h for c in range(vl)]
                hi = [c + h if not c & h else vl + c for c in range(vl)]
                rows[r] = builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(I32, vl), lo))
                rows[r + h] = builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(I32, vl), hi))
            h //= 2
        for k in range(vl):
            builder.store(rows[k], builder.bitcast(builder.gep(pd, [builder.add(jo, builder.mul(I64(k), ldd))]),
                                                   vt.as_pointer()), align=align)
        return context.get_dummy_value()

    return types.void(src, dst, offs), codegen


def _hsums(builder, vecs):
    """The lane sums of several vectors, as a list of scalars: pairs of vectors folded into
    one, each half of a block of lanes added to the other half (a two-source shuffle and
    an add per pair), until one block per vector is left: 2 * (count - 1) shuffles and
    count - 1 adds for count vectors of as many lanes, where summing one vector at a time
    takes 2 * log2(lanes) shuffles and log2(lanes) adds each. The vectors are padded with zeros
    to a power of two; their order is kept (lane i of the last vector holds vector i's sum)."""
    n = vecs[0].type.count
    zero = ir.Constant(vecs[0].type, [0.0] * n)
    count = len(vecs)
    vecs = vecs + [zero] * ((1 << (count - 1).bit_length()) - count)
    block = n  # lanes per block: each block holds part of one input vector's sum
    while len(vecs) > 1 and block > 1:
        half = block // 2
        lo = [src + b0 + t for src in (0, n) for b0 in range(0, n, block) for t in range(half)]
        hi = [i + half for i in lo]
        idx = [ir.Constant(ir.VectorType(I32, n), v) for v in (lo, hi)]
        vecs = [builder.fadd(builder.shuffle_vector(u, v, idx[0]), builder.shuffle_vector(u, v, idx[1]))
                for u, v in zip(vecs[0::2], vecs[1::2])]
        block = half
    step, sums = block, []
    for v in vecs:  # one vector left with blocks of several lanes, or blocks of one lane
        while block > 1:  # fold each block's halves within the vector: each lane holds its sum
            half = block // 2
            swap = [i + half if i % block < half else i - half for i in range(n)]
            v = builder.fadd(v, builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, n), swap)))
            block = half
        sums += [builder.extract_element(v, I32(i)) for i in range(0, n, step)]
    return sums[:count]


@intrinsic
def dot(typingctx, a, b, c, bias, offs, dims, flags, cols):
    """The dot kernel, for a product with few output columns (BLIS's level-1f dotxf):

    C[r, j] := sum_{k < kc} A[r, k] * B[j, k]  (+ bias[j])  (then ReLU)
    for 0 <= r < m <= rows = DOT_ACC // cols and 0 <= j < cols

    A[r, k] = a[ia + r * rsa + k]     rows contiguous along k (x or dy in C order)
    B[j, k] = b[ib + j * rsb + k]     rows contiguous along k (w.T, packed or in place)
    C[r, j] = c[ic + r * ldc + j]     one scalar store per output
    bias[j] = bias[ibias + j]         read only when use_bias

    offs = (ia, rsa, ib, rsb, ic, ldc, ibias), dims = (kc, m), flags = (use_bias, relu);
    cols is a constant (the copy compiled for it), and so rows: DOT_ACC accumulators in
    all. C may be float64 while A and B are float32 (each sum converted once).

    - The k loop runs over whole vectors of VECTOR_BYTES, the last one by masked loads
      (lanes past kc are never read): rows * cols accumulators, phi nodes as in micro, so
      in registers; rows + cols vector loads and rows * cols FMAs per vector of k.
    - The accumulators are then summed across their lanes together (_hsums: pairs of
      vectors folded into one, halves of lanes added, until one lane per accumulator).
    - Rows r >= m read row 0 of A and are never stored.
    - ReLU keeps NaN, as in micro. Serial; no state.
    """
    if not isinstance(cols, types.IntegerLiteral):
        return None
    J = cols.literal_value
    R = DOT_ACC // J

    def codegen(context, builder, sig, args):
        ia, rsa, ib, rsb, ic, ldc, ibias = _scalars(context, builder, args[4], sig.args[4],
                                                   types.int64)
        kc, m = _scalars(context, builder, args[5], sig.args[5], types.int64)
        use_bias, relu = _scalars(context, builder, args[6], sig.args[6], types.boolean)
        pa, pb, pc, pbias = (context.make_array(t)(context, builder, v).data
                             for t, v in zip(sig.args[:4], args[:4]))
        elt = context.get_data_type(sig.args[0].dtype)
        align = context.get_abi_sizeof(elt)
        vl = VECTOR_BYTES // align
        vt = ir.VectorType(elt, vl)
        load = f"llvm.masked.load.{_suffix(vt)}.p0"
        fma = f"llvm.fma.{_suffix(vt)}"
        zero = ir.Constant(vt, [0.0] * vl)
        arow = [builder.gep(pa, [builder.add(ia, builder.mul(
            builder.select(builder.icmp_signed("<", I64(r), m), I64(r), I64(0)), rsa))])
            for r in range(R)]
        brow = [builder.gep(pb, [builder.add(ib, builder.mul(I64(j), rsb))])
                for j in range(J)]
        nextrows = builder.add(ia, builder.mul(I64(R), rsa))

        entry = builder.block
        loop = builder.append_basic_block("dot.k")
        done = builder.append_basic_block("dot.done")
        builder.cbranch(builder.icmp_signed(">", kc, I64(0)), loop, done)
        builder.position_at_end(loop)
        k = builder.phi(I64)
        acc = [[builder.phi(vt) for _ in range(J)] for _ in range(R)]
        mask = _lane_mask(builder, builder.sub(kc, k), vl)

        def vload(row):
            ptr = builder.bitcast(builder.gep(row, [k]), vt.as_pointer())
            return _call(builder, load, vt, [ptr, I32(align), mask, zero])

        bv = [vload(brow[j]) for j in range(J)]
        new = []
        # prefetch the next call's rows (from A's row R on) as one stream, R vectors per
        # vector of k: from one pointer, so the loop needs no register per row for it
        ahead = builder.add(nextrows, builder.mul(k, I64(R)))
        for r in range(R):
            _call(builder, "llvm.prefetch.p0", ir.VoidType(), [
                builder.bitcast(builder.gep(pa, [builder.add(ahead, I64(r * vl))]),
                                ir.IntType(8).as_pointer()), I32(0), I32(3), I32(1)])
        for r in range(R):
            av = vload(arow[r])
            new.append([_call(builder, fma, vt, [av, bv[j], acc[r][j]]) for j in range(J)])
        _loop_back(builder, k, vl, acc, new, entry, loop, kc, done)

        builder.position_at_end(done)
        sums = [[builder.phi(vt) for _ in range(J)] for _ in range(R)]
        for r in range(R):
            for j in range(J):
                sums[r][j].add_incoming(zero, entry)
                sums[r][j].add_incoming(new[r][j], loop)
        celt = context.get_data_type(sig.args[2].dtype)  # C's and the bias's
        czero = ir.Constant(celt, 0.0)
        # the bias, loaded only when there is one (an empty bias has nothing to read)
        with_bias = builder.append_basic_block("dot.bias")
        store = builder.append_basic_block("dot.store")
        builder.cbranch(use_bias, with_bias, store)
        builder.position_at_end(with_bias)
        loaded = [builder.load(builder.gep(pbias, [builder.add(ibias, I64(j))])) for j in range(J)]
        if loaded and loaded[0].type != celt:
            loaded = [context.cast(builder, v, sig.args[3].dtype, sig.args[2].dtype) for v in loaded]
        builder.branch(store)
        builder.position_at_end(store)
        bvals = []
        for j in range(J):
            bval = builder.phi(celt)
            bval.add_incoming(czero, done)
            bval.add_incoming(loaded[j], with_bias)
            bvals.append(bval)
        total = _hsums(builder, [sums[r][j] for r in range(R) for j in range(J)])
        for r in range(R):
            with builder.if_then(builder.icmp_signed("<", I64(r), m)):
                base = builder.add(ic, builder.mul(I64(r), ldc))
                for j in range(J):
                    val = total[r * J + j]
                    if celt != elt:  # a float64 C of float32 operands (the engine's dw scratch)
                        val = builder.fpext(val, celt)
                    val = builder.fadd(val, bvals[j])
                    keep = builder.fcmp_unordered(">", val, czero)
                    val = builder.select(relu, builder.select(keep, val, czero), val)
                    builder.store(val, builder.gep(pc, [builder.add(base, I64(j))]))
        return context.get_dummy_value()

    return types.void(a, b, c, bias, offs, dims, flags, cols), codegen
