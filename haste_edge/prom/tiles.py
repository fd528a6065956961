"""PROM's vector tiles, emitted as LLVM IR through Numba (as microkernel.py does for float32),
each with a plain-loop twin (HASTE_EDGE_MICROKERNEL=scalar) that computes the same integers.

A tile computes NV vectors of VW int32 sums, held in registers through its whole loop, then the
epilogue out[out_off + v] = clamp(float32(sum[v]) * scale + bias, lo, hi) for v < m, m in
((NV - 1) * VW, NV * VW] (the last vector's store masked: nothing past out_off + m is written).
Tiles read NV * VW codes at each offset, so callers leave room past the last real value (its
lanes are discarded).

    ternary_tile  the plus rows added, the minus rows subtracted: no multiplication. Codes are
                  int8 values held as int16; the rows are summed in int16 lanes (one 64-pixel
                  vector load and add per row: 2 AVX-512 or 4 AVX2 registers) in runs of at
                  most SUM16_ROWS, which cannot overflow, each run widened into int32 sums.
                  Reading int8 codes instead cost a sign-extending shuffle per 16 lanes, on one
                  port: that bound the loop.
    taps_tile     sum over taps t of w[t] * codes at offs[t]: any conv's taps. Codes int8,
                  sign-extended to int32 lanes (exact in int32 for any layer this engine loads).
Plain loops over NV * VW lanes did not vectorise in Numba (LLVM unrolls the constant-trip loop
before its vectoriser sees it, and a runtime trip count this short stays in the scalar tail).
One tile per (kind, NV): intrinsics are chosen when the caller compiles, hence the dispatchers.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from haste_edge.jit import njit
from haste_edge.microkernel import MASKED_MOVES, TARGET, _data, _lanes_below, _masked, phi_loop

VW = 16                     # int32 lanes per vector: LLVM splits them into what the CPU has
TILE_NV = (1, 2, 3, 4)      # tile widths in vectors; a tile covers up to 64 values
TILE_MAX = VW * TILE_NV[-1]
# rows of codes (|code| <= 127) an int16 sum holds without overflow: 258 * 127 = 32766
SUM16_ROWS = 258
SCALAR = TARGET["kind"] == "scalar"

_I8, _I16, _I32, _I64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
_VB, _VI, _VF = ir.VectorType(_I8, VW), ir.VectorType(_I32, VW), ir.VectorType(ir.FloatType(), VW)


def _masked_store(builder):
    return _masked(builder, VW)[1]


def _splat(builder, value, vt):
    undef = ir.Constant(vt, ir.Undefined)
    first = builder.insert_element(undef, value, _I64(0))
    return builder.shuffle_vector(first, undef, ir.Constant(ir.VectorType(_I32, vt.count), [0] * vt.count))


def _codes(builder, base, index):
    """VW int8 codes at base[index], sign-extended to int32 lanes."""
    ptr = builder.bitcast(builder.gep(base, [index]), _VB.as_pointer())
    return builder.sext(builder.load(ptr, align=1), _VI)


def _offset(builder, offs, t):
    """offs[t] as int64: offsets are stored as narrow as they fit (ops.offset_dtype), never negative."""
    v = builder.load(builder.gep(offs, [t]))
    return v if v.type.width == 64 else builder.zext(v, _I64)


def _min(builder, a, b):
    return builder.select(builder.icmp_signed("<", a, b), a, b)


def _max(builder, a, b):
    return builder.select(builder.icmp_signed(">", a, b), a, b)


def _epilogue(builder, accs, out, out_off, out_step, m, scale, bias, lo, hi):
    """out[out_off + j * out_step + v] = clamp(float(acc_j[v]) * scale + bias, lo, hi) for
    v < min(VW, m - j * out_step) (compare and select keep NaN): a vector short of VW lanes is
    stored masked, nothing past its lanes is written (x86 masks its moves; elsewhere LLVM makes a
    masked store a branch per lane, so full vectors take a plain store)."""
    s, c = _splat(builder, scale, _VF), _splat(builder, bias, _VF)
    lo_v, hi_v = _splat(builder, lo, _VF), _splat(builder, hi, _VF)
    for j, a in enumerate(accs):
        v = builder.fadd(builder.fmul(builder.sitofp(a, _VF), s), c)
        v = builder.select(builder.fcmp_ordered("<", v, lo_v), lo_v, v)
        v = builder.select(builder.fcmp_ordered(">", v, hi_v), hi_v, v)
        start = builder.mul(out_step, _I64(j))
        ptr = builder.bitcast(builder.gep(out, [builder.add(out_off, start)]), _VF.as_pointer())
        left = builder.sub(m, start)
        with builder.if_else(builder.icmp_signed(">=", left, _I64(VW))) as (full, part):
            with full:
                builder.store(v, ptr, align=4)
            with part:
                builder.call(_masked_store(builder), [v, ptr, _I32(4), _lanes_below(builder, VW, left)])


# ---------------------------------------------------------------------------------------------
# ternary_tile: for v < NV*VW
#   sum[v] = sum_{t in [t0, t_mid)} xq[x_off + offs[t] + v] - sum_{t in [t_mid, t1)} xq[x_off + offs[t] + v]
# stored at out[out_off + v] for v < m: runs of pixels (offs[t]: where input channel t's row starts)
# ---------------------------------------------------------------------------------------------

def _vector_ternary_tile(nv: int):
    lanes = nv * VW
    v16, v32 = ir.VectorType(_I16, lanes), ir.VectorType(_I32, lanes)

    @intrinsic
    def ternary_tile(typingctx, xq, x_off, offs, t0, t_mid, t1, out, out_off, m, scale, bias, lo, hi):
        sig = types.void(xq, types.int64, offs, types.int64, types.int64, types.int64, out, types.int64,
                         types.int64, types.float32, types.float32, types.float32, types.float32)

        def codegen(context, builder, signature, args):
            xq_v, x_off_v, offs_v, t0_v, mid_v, t1_v, out_v, out_off_v, m_v, s_v, b_v, lo_v, hi_v = args
            xp = _data(context, builder, signature.args[0], xq_v)
            fp = _data(context, builder, signature.args[2], offs_v)
            op = _data(context, builder, signature.args[6], out_v)

            def rows(combine):
                def body(t, part):
                    base = builder.add(x_off_v, _offset(builder, fp, t))
                    ptr = builder.bitcast(builder.gep(xp, [base]), v16.as_pointer())
                    return [combine(part[0], builder.load(ptr, align=2))]
                return body

            def run(r, acc):                 # rows [c0, c1): at most SUM16_ROWS, summed in int16
                c0 = builder.add(t0_v, builder.mul(r, _I64(SUM16_ROWS)))
                c1 = _min(builder, builder.add(c0, _I64(SUM16_ROWS)), t1_v)
                part = phi_loop(builder, c0, _min(builder, c1, mid_v), [ir.Constant(v16, [0] * lanes)],
                             rows(builder.add))
                part = phi_loop(builder, _max(builder, c0, mid_v), c1, part, rows(builder.sub))
                return [builder.add(acc[0], builder.sext(part[0], v32))]

            n_runs = builder.sdiv(builder.add(builder.sub(t1_v, t0_v), _I64(SUM16_ROWS - 1)), _I64(SUM16_ROWS))
            acc, = phi_loop(builder, _I64(0), n_runs, [ir.Constant(v32, [0] * lanes)], run)
            undef = ir.Constant(v32, ir.Undefined)
            accs = [builder.shuffle_vector(acc, undef, ir.Constant(ir.VectorType(_I32, VW), list(range(j * VW, (j + 1) * VW))))
                    for j in range(nv)]
            _epilogue(builder, accs, op, out_off_v, _I64(VW), m_v, s_v, b_v, lo_v, hi_v)
            return context.get_dummy_value()

        return sig, codegen

    return ternary_tile


def _scalar_ternary_tile(nv: int):
    n = nv * VW

    @njit
    def ternary_tile(xq, x_off, offs, t0, t_mid, t1, out, out_off, m, scale, bias, lo, hi):
        acc = np.zeros(n, np.int32)
        for t in range(t0, t1):
            sign = np.int32(1 if t < t_mid else -1)
            for v in range(n):
                acc[v] += sign * np.int32(xq[x_off + offs[t] + v])
        for v in range(m):
            out[out_off + v] = min(max(np.float32(acc[v]) * scale + bias, lo), hi)

    return ternary_tile


# ---------------------------------------------------------------------------------------------
# taps_tile: for j < NV, v < VW
#   sum_j[v] = sum_{t in [t0, t1)} w[t] * xq[x_off + offs[t] + j * x_step + v]
# stored at out[out_off + j * out_step + v] for v < min(VW, m - j * out_step). A conv's taps: v runs
# over consecutive positions of the padded input (offs[t] is where tap t reads); x_step = out_step =
# VW for a run of NV * VW positions, x_step = Wp and out_step = Wo for NV output rows of Wo <= VW.
# ---------------------------------------------------------------------------------------------

def _vector_taps_tile(nv: int):
    @intrinsic
    def taps_tile(typingctx, xq, x_off, x_step, offs, w, t0, t1, out, out_off, out_step, m, scale, bias, lo, hi):
        sig = types.void(xq, types.int64, types.int64, offs, w, types.int64, types.int64, out, types.int64,
                         types.int64, types.int64, types.float32, types.float32, types.float32, types.float32)

        def codegen(context, builder, signature, args):
            (xq_v, x_off_v, x_step_v, offs_v, w_v, t0_v, t1_v, out_v, out_off_v, out_step_v, m_v,
             s_v, b_v, lo_v, hi_v) = args
            xp = _data(context, builder, signature.args[0], xq_v)
            fp = _data(context, builder, signature.args[3], offs_v)
            wp = _data(context, builder, signature.args[4], w_v)
            op = _data(context, builder, signature.args[7], out_v)
            starts = [builder.mul(x_step_v, _I64(j)) for j in range(nv)]

            def body(t, accs):
                base = builder.add(x_off_v, _offset(builder, fp, t))
                w_s = _splat(builder, builder.sext(builder.load(builder.gep(wp, [t])), _I32), _VI)
                return [builder.add(a, builder.mul(w_s, _codes(builder, xp, builder.add(base, st))))
                        for a, st in zip(accs, starts)]

            accs = phi_loop(builder, t0_v, t1_v, [ir.Constant(_VI, [0] * VW)] * nv, body)
            _epilogue(builder, accs, op, out_off_v, out_step_v, m_v, s_v, b_v, lo_v, hi_v)
            return context.get_dummy_value()

        return sig, codegen

    return taps_tile


def _scalar_taps_tile(nv: int):
    @njit
    def taps_tile(xq, x_off, x_step, offs, w, t0, t1, out, out_off, out_step, m, scale, bias, lo, hi):
        acc = np.zeros((nv, VW), np.int32)
        for t in range(t0, t1):
            wt = np.int32(w[t])
            for j in range(nv):
                base = x_off + offs[t] + j * x_step
                for v in range(VW):
                    acc[j, v] += wt * np.int32(xq[base + v])
        for j in range(nv):
            for v in range(min(VW, m - j * out_step)):
                out[out_off + j * out_step + v] = min(max(np.float32(acc[j, v]) * scale + bias, lo), hi)

    return taps_tile


_make_ternary = _scalar_ternary_tile if SCALAR else _vector_ternary_tile
_make_taps = _scalar_taps_tile if SCALAR else _vector_taps_tile
_t1, _t2, _t3, _t4 = (_make_ternary(nv) for nv in TILE_NV)
_c1, _c2, _c3, _c4 = (_make_taps(nv) for nv in TILE_NV)


@njit(inline="always")
def ternary_tile(nv, xq, x_off, offs, t0, t_mid, t1, out, out_off, m, scale, bias, lo, hi):
    """The ternary tile of nv vectors (1 to 4)."""
    if nv == 4:
        _t4(xq, x_off, offs, t0, t_mid, t1, out, out_off, m, scale, bias, lo, hi)
    elif nv == 3:
        _t3(xq, x_off, offs, t0, t_mid, t1, out, out_off, m, scale, bias, lo, hi)
    elif nv == 2:
        _t2(xq, x_off, offs, t0, t_mid, t1, out, out_off, m, scale, bias, lo, hi)
    else:
        _t1(xq, x_off, offs, t0, t_mid, t1, out, out_off, m, scale, bias, lo, hi)


@njit(inline="always")
def taps_tile(nv, xq, x_off, x_step, offs, w, t0, t1, out, out_off, out_step, m, scale, bias, lo, hi):
    """The taps tile of nv vectors (1 to 4)."""
    if nv == 4:
        _c4(xq, x_off, x_step, offs, w, t0, t1, out, out_off, out_step, m, scale, bias, lo, hi)
    elif nv == 3:
        _c3(xq, x_off, x_step, offs, w, t0, t1, out, out_off, out_step, m, scale, bias, lo, hi)
    elif nv == 2:
        _c2(xq, x_off, x_step, offs, w, t0, t1, out, out_off, out_step, m, scale, bias, lo, hi)
    else:
        _c1(xq, x_off, x_step, offs, w, t0, t1, out, out_off, out_step, m, scale, bias, lo, hi)


# ---------------------------------------------------------------------------------------------
# quantize16: dst[d_off + v] = clip(rint(src[s_off + v] * inv_scale), -127, 127) as int8 for v < n <= 16
# (masked load and store: nothing outside them read or written). The padded copy of a 7x7 map's
# rows is 7 values a row: a plain loop that short stays scalar.
# ---------------------------------------------------------------------------------------------

@intrinsic
def _vector_quantize16(typingctx, src, s_off, dst, d_off, n, inv_scale):
    sig = types.void(src, types.int64, dst, types.int64, types.int64, types.float32)

    def codegen(context, builder, signature, args):
        s_v, s_o, d_v, d_o, n_v, inv_v = args
        vb = ir.VectorType(_I8, VW)
        load, _ = _masked(builder, VW)
        store = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [vb, vb.as_pointer(), _I32, ir.VectorType(ir.IntType(1), VW)]),
            f"llvm.masked.store.v{VW}i8.p0v{VW}i8")
        rint = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VF, [_VF]), f"llvm.rint.v{VW}f32")
        mask = _lanes_below(builder, VW, n_v)
        sp = _data(context, builder, signature.args[0], s_v)
        dp = _data(context, builder, signature.args[2], d_v)
        x = builder.call(load, [builder.bitcast(builder.gep(sp, [s_o]), _VF.as_pointer()), _I32(4), mask,
                                ir.Constant(_VF, [0.0] * VW)])
        x = builder.fmul(x, _splat(builder, inv_v, _VF))
        lo, hi = ir.Constant(_VF, [-127.0] * VW), ir.Constant(_VF, [127.0] * VW)
        x = builder.select(builder.fcmp_ordered("<", x, lo), lo, x)
        x = builder.select(builder.fcmp_ordered(">", x, hi), hi, x)
        codes = builder.fptosi(builder.call(rint, [x]), vb)
        builder.call(store, [codes, builder.bitcast(builder.gep(dp, [d_o]), vb.as_pointer()), _I32(1), mask])
        return context.get_dummy_value()

    return sig, codegen


@njit
def _scalar_quantize16(src, s_off, dst, d_off, n, inv_scale):
    for v in range(n):
        x = min(max(src[s_off + v] * inv_scale, np.float32(-127)), np.float32(127))
        dst[d_off + v] = np.int8(np.rint(x))


# masked moves are cheap on x86; elsewhere LLVM makes them a branch per lane: the plain loop there
quantize16 = _vector_quantize16 if MASKED_MOVES and not SCALAR else _scalar_quantize16
