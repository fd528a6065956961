"""PROM's pointwise convs (1x1, stride 1, group 1) on the CPU's int8 dot-product instructions, where
there are some; tiles.py's additions (ternary) and taps (int8) kernels everywhere else. All give the
same int32 sums, so the same outputs bit for bit (reference.py defines them).

  vnni  AVX-512 VNNI's vpdpbusd adds to each int32 lane the four products of 4 unsigned and 4
        signed bytes: 64 multiply-adds an instruction. Ternary and int8 weights.
  avx2  x86 without it: vpmaddubsw pair sums in int16, vpmaddwd into int32 (_vector_avx2_tile);
        exact for ternary weights only, so only they run here.
The additions kernel reads each input row once per output channel that uses it (bound by loads);
here a tile of 4 output channels x 16-64 pixels holds its sums in registers and every loaded code
serves 4 output channels. With ternary weights the products are the additions and subtractions
the method counts (stats and energy.py count those); the instruction is the CPU's fastest way to
make them.

Layouts (made once per layer in ops.PreparedPromConv):
  panel  the activation codes + 128 (unsigned: 1..255) as bytes [C_in/4][P16][4]: four input
         channels of one pixel side by side, P16 = P rounded up to 16 (the padding never stored)
  w4     the weight codes as bytes [C_out rounded up to 4][C_in/4][4], zero padded, read as int32
  corr   128 * (sum of output channel o's weight codes): taken off every sum (the +128 above)
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from haste_edge.jit import env_choice, njit, prange
from haste_edge.microkernel import TARGET, _data, _lanes_below, _masked, phi_loop, x86_feature
from haste_edge.prom.tiles import SCALAR, VW, _epilogue, _splat

NO = 4                      # output channels a tile
TILE_NV = (1, 2, 3, 4)      # pixel vectors a tile (VW pixels each)
# 16 ymm registers hold one vector of int16 and int32 sums per channel on AVX2
NV_MAX = {"vnni": 4, "avx2": 1}
# quads of input channels summed in int16 lanes on AVX2: a vpmaddubsw lane is at most 2 * 255 * 1
# for ternary weights, and 64 * 510 = 32640 < 2^15
AVX2_RUN = 64

_I8, _I32, _I64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
_VI, _VF = ir.VectorType(_I32, VW), ir.VectorType(ir.FloatType(), VW)


_VNNI_CPUS = ("cascadelake", "cooperlake", "icelake", "tigerlake", "rocketlake", "sapphirerapids", "emeraldrapids",
              "graniterapids", "znver4", "znver5")


def _has_vnni() -> bool:
    """Whether the code Numba generates may use AVX-512 VNNI."""
    return TARGET["arch"] == "x86_64" and TARGET["avx512"] and x86_feature("avx512vnni", _VNNI_CPUS)


def _kind() -> str:
    """Which dot-product tiles run PROM's pointwise convs: "vnni" (AVX-512 VNNI: ternary and int8
    weights), "avx2" (x86 without it: vpmaddubsw and vpmaddwd, exact for ternary weights only, see
    _vector_avx2_tile), or "" (the additions and taps kernels). HASTE_EDGE_PROM_DOT picks one
    ("off", or "avx2" on a VNNI CPU, to compare)."""
    if SCALAR or TARGET["arch"] != "x86_64":
        return ""
    best = "vnni" if _has_vnni() else "avx2"
    want = env_choice("HASTE_EDGE_PROM_DOT", ("auto", "vnni", "avx2", "off"), "auto")
    if want == "off" or (want == "vnni" and best != "vnni"):
        return ""
    return best if want == "auto" else want


KIND = _kind()
DOT = KIND != ""
TILE_MAX = VW * NV_MAX.get(KIND, 4)     # pixels a tile


def runs_on_dot(ternary_weights: bool) -> bool:
    """Whether a pointwise PromConv with these weights runs here."""
    return DOT and (KIND == "vnni" or ternary_weights)


def pack_weights(codes: np.ndarray):
    """(w4 int32 [C_out4 * C_in4], corr int32 [C_out], k_quads) from weight codes (C_out, C_in) int8."""
    c_out, c_in = codes.shape
    kq = (c_in + 3) // 4
    w = np.zeros(((c_out + NO - 1) // NO * NO, kq * 4), np.int8)
    w[:c_out, :c_in] = codes
    corr = (128 * codes.astype(np.int32).sum(axis=1)).astype(np.int32)
    return w.view(np.int32).reshape(-1).copy(), corr, kq


def panel_size(c_in: int, p: int) -> int:
    """Bytes of the activation panel of one image."""
    return (c_in + 3) // 4 * ((p + VW - 1) // VW * VW) * 4


# ---------------------------------------------------------------------------------------------
# quad_codes: panel[out_off + 4 v + j] = code(x[x_off + j * x_stride + v]) + 128 for v < VW, j < 4;
# rows j >= rows and lanes v >= n read nothing and give code 0 (byte 128)
# ---------------------------------------------------------------------------------------------

@intrinsic
def _vector_quad_codes(typingctx, x, x_off, x_stride, rows, n, inv_scale, panel, out_off):
    sig = types.void(x, types.int64, types.int64, types.int64, types.int64, types.float32, panel, types.int64)

    def codegen(context, builder, signature, args):
        x_v, x_o, stride, rows_v, n_v, inv_v, p_v, p_o = args
        load, _ = _masked(builder, VW)
        rint = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VF, [_VF]), f"llvm.rint.v{VW}f32")
        xp = _data(context, builder, signature.args[0], x_v)
        pp = _data(context, builder, signature.args[6], p_v)
        lanes = _lanes_below(builder, VW, n_v)
        none = ir.Constant(ir.VectorType(ir.IntType(1), VW), [0] * VW)
        inv = _splat(builder, inv_v, _VF)
        lo, hi = ir.Constant(_VF, [-127.0] * VW), ir.Constant(_VF, [127.0] * VW)
        quads = []
        for j in range(4):
            mask = builder.select(builder.icmp_signed(">", rows_v, _I64(j)), lanes, none)
            ptr = builder.bitcast(builder.gep(xp, [builder.add(x_o, builder.mul(stride, _I64(j)))]), _VF.as_pointer())
            v = builder.fmul(builder.call(load, [ptr, _I32(4), mask, ir.Constant(_VF, [0.0] * VW)]), inv)
            v = builder.select(builder.fcmp_ordered("<", v, lo), lo, v)
            v = builder.select(builder.fcmp_ordered(">", v, hi), hi, v)
            code = builder.add(builder.fptosi(builder.call(rint, [v]), _VI), ir.Constant(_VI, [128] * VW))
            quads.append(builder.trunc(code, ir.VectorType(_I8, VW)))
        v32 = ir.VectorType(_I8, 2 * VW)
        i32v = lambda idx: ir.Constant(ir.VectorType(_I32, len(idx)), idx)  # noqa: E731
        lo2 = builder.shuffle_vector(quads[0], quads[1], i32v(list(range(2 * VW))))
        hi2 = builder.shuffle_vector(quads[2], quads[3], i32v(list(range(2 * VW))))
        # byte 4 v + j of the result is lane v of quad j
        order = [(j // 2) * 2 * VW + (j % 2) * VW + v for v in range(VW) for j in range(4)]
        out = builder.shuffle_vector(lo2, hi2, i32v(order))
        builder.store(out, builder.bitcast(builder.gep(pp, [p_o]), ir.VectorType(_I8, 4 * VW).as_pointer()), align=1)
        return context.get_dummy_value()

    return sig, codegen


@njit
def _scalar_quad_codes(x, x_off, x_stride, rows, n, inv_scale, panel, out_off):
    for v in range(VW):
        for j in range(4):
            code = 0
            if j < rows and v < n:
                code = int(np.rint(min(max(x[x_off + j * x_stride + v] * inv_scale, np.float32(-127)),
                                       np.float32(127))))
            panel[out_off + 4 * v + j] = np.uint8(code + 128)


# ---------------------------------------------------------------------------------------------
# dot_tile: for j < NO (channels o0 + j, only j < n_o stored), v < NV * VW:
#   sum[j][v] = sum_{q < kq} sum_{b < 4} panel[a_off + q * a_step + 4 v + b] * w4bytes[(o0 + j) * kq + q][b]
#               - corr[o0 + j]
# stored with tiles.py's epilogue at out[out_off + j * out_stride + v] for v < m
# ---------------------------------------------------------------------------------------------

def _tile(sums):
    """The dot_tile intrinsic whose int32 sums sums(builder, panel, w4, a_off, a_step, kq, w_rows)
    makes (NO * nv vectors, channel-major; w_rows: where each channel's quads start in w4)."""
    @intrinsic
    def dot_tile(typingctx, panel, a_off, a_step, w4, kq, corr, scale, bias, o0, n_o, lo, hi, out, out_off,
                 out_stride, m):
        sig = types.void(panel, types.int64, types.int64, w4, types.int64, corr, scale, bias, types.int64,
                         types.int64, types.float32, types.float32, out, types.int64, types.int64, types.int64)

        def codegen(context, builder, signature, args):
            (p_v, a_off_v, a_step_v, w_v, kq_v, corr_v, s_v, b_v, o0_v, n_o_v, lo_v, hi_v, out_v, out_off_v,
             out_stride_v, m_v) = args
            ptr = [_data(context, builder, signature.args[i], args[i]) for i in (0, 3, 5, 6, 7, 12)]
            w_rows = [builder.mul(builder.add(o0_v, _I64(j)), kq_v) for j in range(NO)]
            accs = sums(builder, ptr[0], ptr[1], a_off_v, a_step_v, kq_v, w_rows)
            nv = len(accs) // NO
            for j in range(NO):              # channel j's sums less corr, for j < n_o
                with builder.if_then(builder.icmp_signed(">", n_o_v, _I64(j))):
                    o = builder.add(o0_v, _I64(j))
                    c = _splat(builder, builder.load(builder.gep(ptr[2], [o])), _VI)
                    _epilogue(builder, [builder.sub(a, c) for a in accs[j * nv:(j + 1) * nv]], ptr[5],
                              builder.add(out_off_v, builder.mul(out_stride_v, _I64(j))), _I64(VW), m_v,
                              builder.load(builder.gep(ptr[3], [o])), builder.load(builder.gep(ptr[4], [o])),
                              lo_v, hi_v)
            return context.get_dummy_value()

        return sig, codegen

    return dot_tile


def _vector_dot_tile(nv: int):
    """dot_tile on AVX-512 VNNI: one vpdpbusd per 16 pixels, 4 input channels and output channel."""
    def sums(builder, pp, wp, a_off, a_step, kq, w_rows):
        dp = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VI, [_VI, _VI, _VI]),
                                            "llvm.x86.avx512.vpdpbusd.512")

        def body(q, accs):
            base = builder.add(a_off, builder.mul(q, a_step))
            a = [builder.load(builder.bitcast(builder.gep(pp, [builder.add(base, _I64(4 * VW * i))]),
                                              _VI.as_pointer()), align=1) for i in range(nv)]
            out = []
            for j in range(NO):
                w = _splat(builder, builder.load(builder.gep(wp, [builder.add(w_rows[j], q)])), _VI)
                out += [builder.call(dp, [accs[j * nv + i], a[i], w]) for i in range(nv)]
            return out

        return phi_loop(builder, _I64(0), kq, [ir.Constant(_VI, [0] * VW)] * (NO * nv), body)

    return _tile(sums)


def _vector_avx2_tile(nv: int):
    """dot_tile on AVX2 without VNNI, for ternary weights: per 4 input channels, vpmaddubsw makes
    int16 pair sums of unsigned codes x signed weights (exact: |w| <= 1), added in int16 lanes for
    runs of AVX2_RUN quads, then vpmaddwd by ones adds each pixel's two pairs into its int32 sum."""
    v32b, v16w, v8d = ir.VectorType(_I8, 32), ir.VectorType(ir.IntType(16), 16), ir.VectorType(_I32, 8)
    i32v = lambda idx: ir.Constant(ir.VectorType(_I32, len(idx)), idx)  # noqa: E731

    def sums(builder, pp, wp, a_off, a_step, kq, w_rows):
        maddubs = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16w, [v32b, v32b]),
                                                 "llvm.x86.avx2.pmadd.ub.sw")
        maddwd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8d, [v16w, v16w]),
                                                "llvm.x86.avx2.pmadd.wd")
        zero16, ones16 = ir.Constant(v16w, [0] * 16), ir.Constant(v16w, [1] * 16)

        def quad(q, parts):                 # parts: [channel j][vector i][half h] int16 sums
            base = builder.add(a_off, builder.mul(q, a_step))
            halves = []
            for i in range(nv):
                a = builder.load(builder.bitcast(builder.gep(pp, [builder.add(base, _I64(4 * VW * i))]),
                                                 ir.VectorType(_I8, 4 * VW).as_pointer()), align=1)
                halves.append([builder.shuffle_vector(a, a, i32v(list(range(h * 32, h * 32 + 32)))) for h in (0, 1)])
            out = []
            for j in range(NO):
                w = builder.bitcast(_splat(builder, builder.load(builder.gep(wp, [builder.add(w_rows[j], q)])), v8d),
                                    v32b)
                out += [builder.add(parts[(j * nv + i) * 2 + h], builder.call(maddubs, [halves[i][h], w]))
                        for i in range(nv) for h in (0, 1)]
            return out

        def run(r, accs):                   # quads [r * AVX2_RUN, ...) in int16, then widened
            q0 = builder.mul(r, _I64(AVX2_RUN))
            q1 = builder.select(builder.icmp_signed("<", builder.add(q0, _I64(AVX2_RUN)), kq),
                                builder.add(q0, _I64(AVX2_RUN)), kq)
            parts = phi_loop(builder, q0, q1, [zero16] * (NO * nv * 2), quad)
            out = []
            for k in range(NO * nv):
                lo8, hi8 = (builder.call(maddwd, [parts[2 * k + h], ones16]) for h in (0, 1))
                out.append(builder.add(accs[k], builder.shuffle_vector(lo8, hi8, i32v(list(range(16))))))
            return out

        n_runs = builder.sdiv(builder.add(kq, _I64(AVX2_RUN - 1)), _I64(AVX2_RUN))
        return phi_loop(builder, _I64(0), n_runs, [ir.Constant(_VI, [0] * VW)] * (NO * nv), run)

    return _tile(sums)


def _scalar_dot_tile(nv: int):
    n = nv * VW

    @njit
    def dot_tile(panel, a_off, a_step, w4, kq, corr, scale, bias, o0, n_o, lo, hi, out, out_off, out_stride, m):
        wb = w4.view(np.int8)
        for j in range(n_o):
            o = o0 + j
            for v in range(min(n, m)):
                acc = np.int32(0)
                for q in range(kq):
                    for b in range(4):
                        acc += np.int32(panel[a_off + q * a_step + 4 * v + b]) * np.int32(wb[(o * kq + q) * 4 + b])
                acc -= corr[o]
                out[out_off + j * out_stride + v] = min(max(np.float32(acc) * scale[o] + bias[o], lo), hi)

    return dot_tile


# without the instruction the plain loops stand in (tests run the same kernel everywhere)
_make = {"vnni": _vector_dot_tile, "avx2": _vector_avx2_tile}.get(KIND, _scalar_dot_tile)
_d1, _d2, _d3, _d4 = (_make(nv) for nv in TILE_NV)
quad_codes = _vector_quad_codes if DOT else _scalar_quad_codes


@njit(inline="always")
def dot_tile(nv, panel, a_off, a_step, w4, kq, corr, scale, bias, o0, n_o, lo, hi, out, out_off, out_stride, m):
    """The dot tile of nv pixel vectors (1 to 4)."""
    if nv == 4:
        _d4(panel, a_off, a_step, w4, kq, corr, scale, bias, o0, n_o, lo, hi, out, out_off, out_stride, m)
    elif nv == 3:
        _d3(panel, a_off, a_step, w4, kq, corr, scale, bias, o0, n_o, lo, hi, out, out_off, out_stride, m)
    elif nv == 2:
        _d2(panel, a_off, a_step, w4, kq, corr, scale, bias, o0, n_o, lo, hi, out, out_off, out_stride, m)
    else:
        _d1(panel, a_off, a_step, w4, kq, corr, scale, bias, o0, n_o, lo, hi, out, out_off, out_stride, m)


def _dot_pointwise(x, inv_scale, panel, w4, kq, corr, scale, bias, lo, hi, n_chunks, y):
    """x (N, C_in, P) float32 -> y (N, C_out, P) float32: the 1x1 conv of x's codes (int8 weights
    on "vnni", ternary on "avx2"), panel: panel_size(C_in, P) bytes, rewritten per image; w4, corr: pack_weights.
    n_chunks: how many parts the output-channel blocks are split into (one per thread)."""
    n_img, c_in, p_all = x.shape
    c_out = y.shape[1]
    p16 = (p_all + VW - 1) // VW * VW
    n_blocks = (c_out + NO - 1) // NO
    for n in range(n_img):
        xf, yf = x[n].ravel(), y[n].ravel()
        for q in range(kq):
            for p0 in range(0, p_all, VW):
                quad_codes(xf, 4 * q * p_all + p0, p_all, c_in - 4 * q, p_all - p0, inv_scale, panel, (q * p16 + p0) * 4)
        for chunk in prange(n_chunks):
            for blk in range(chunk, n_blocks, n_chunks):
                o0 = blk * NO
                n_o = min(NO, c_out - o0)
                for p0 in range(0, p_all, TILE_MAX):
                    m = min(TILE_MAX, p_all - p0)
                    dot_tile((m + VW - 1) // VW, panel, 4 * p0, 4 * p16, w4, kq, corr, scale, bias, o0, n_o, lo, hi,
                             yf, o0 * p_all + p0, p_all, m)


dot_pointwise = njit(_dot_pointwise)
dot_pointwise_parallel = njit(_dot_pointwise, parallel=True)
