"""Register-blocked GEMM microkernel, emitted as LLVM vector IR through Numba, with its packing,
a scalar fallback and a NumPy reference.

The product every conv path reduces to:

    C[m, p] = sum_k A[m, k] * B[offs[k] + p]        m < M (output channels), p < L (pixels)

A is packed once per layer into panels of MR rows, k-major (pack_panels); B is any flat float32
array read at a per-k offset, so an im2col matrix (offs[k] = k * L), a zero-padded image split
into stride phases (offs[k] = where tap k starts: an implicit GEMM, no im2col) or a Winograd
transform all serve. One tile computes MR rows x NV vectors of VW columns, its MR * NV
accumulators held in vector registers through the whole k loop (phi nodes, llvm.fma); per k it
loads NV vectors of B and broadcasts MR values of A. The scalar fallback below, a loop nest with
the tile's sizes as compile-time constants, measured as fast on this project's AVX-512 x86 host
(54 against 52 GMAC/s on a 64 x 576 x 222 product, one thread): LLVM vectorised it there. The IR
form does not depend on the optimiser finding that on every target.

Tile shapes per target (_choose), chosen when this module is imported (numba.config CPU overrides
are honoured, so tools/x86/as_avx2.sh gets the AVX2 shapes): a wide one that fills the vector
registers with accumulators (AVX-512: 8 x 48, AVX2: 4 x 24, NEON: 8 x 12) and two narrower ones
for products with few columns (a 4x4 map has 16 pixels: a 48-wide tile would compute 2/3 junk).
choose_variant picks one by the product's shape. LLVM legalises any vector width to what
the CPU has, so every shape compiles everywhere. HASTE_EDGE_MICROKERNEL=scalar selects a plain
loop nest instead (same results up to rounding).
"""
from __future__ import annotations

import os
import platform

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from haste_edge.jit import env_choice, env_int, njit, prange

_AVX512_CPUS = ("skylake-avx512", "cascadelake", "cooperlake", "cannonlake", "icelake", "tigerlake",
                "rocketlake", "sapphirerapids", "emeraldrapids", "graniterapids", "znver4", "znver5",
                "x86-64-v4")


def x86_feature(name: str, cpus: tuple[str, ...]) -> bool:
    """Whether the x86 code Numba generates may use feature `name` (LLVM's spelling, e.g.
    "avx512f"): as Numba was told (NUMBA_CPU_FEATURES, else NUMBA_CPU_NAME, one of `cpus` having
    it), else the host's."""
    feats = numba.config.CPU_FEATURES or os.environ.get("NUMBA_CPU_FEATURES")
    if feats:
        return f"+{name}" in feats.split(",")
    if _cpu_override():
        return _cpu_override().startswith(cpus)
    import llvmlite.binding as llvm
    return bool(llvm.get_host_cpu_features().get(name))


def _features() -> tuple[str, bool]:
    """(architecture, has AVX-512) of the code Numba generates."""
    arch = platform.machine().lower()
    if arch in ("aarch64", "arm64"):
        return "aarch64", False
    if arch not in ("x86_64", "amd64"):
        return arch, False
    return "x86_64", x86_feature("avx512f", _AVX512_CPUS)


def _cpu_override() -> str | None:
    """The CPU name Numba was told to generate code for, None for the host."""
    name = numba.config.CPU_NAME or os.environ.get("NUMBA_CPU_NAME")
    return name if name and name != "host" else None


def _cpu_name() -> str:
    """The CPU Numba generates code for."""
    import llvmlite.binding as llvm
    return _cpu_override() or llvm.get_host_cpu_name()


def _choose() -> dict:
    """Tile shapes (MR rows, NV vectors, VW lanes) for this target, widest first: the first fills
    the registers best on large products; the others waste less on small ones (few columns)."""
    arch, avx512 = _features()
    if arch == "x86_64" and avx512:            # 32 zmm registers
        shapes = ((8, 3, 16), (16, 1, 16), (16, 1, 8))
    elif arch == "x86_64":                     # 16 ymm registers
        shapes = ((4, 3, 8), (8, 1, 8), (8, 1, 4))
    elif arch == "aarch64":                    # 32 q registers of 4 lanes
        shapes = ((8, 3, 4), (16, 1, 4), (8, 2, 4))
    else:
        shapes = ((4, 2, 4), (8, 1, 4), (8, 1, 4))
    # lanes tiles (MR pixels, NV vectors of output channels): MR = 7, 14, 4, 28 divide the rows of
    # the usual small maps (7, 14, 28, 56, 112 and 4 pixels wide); accumulators plus B's vectors fill
    # the registers (AVX2 has no broadcast operand: one more register for it). The fourth pads
    # fewer channels where the others pad many (AVX-512: one vector, for 16, 40, 80, 144... channels)
    if arch == "x86_64" and avx512:
        lanes = ((7, 4, 16), (14, 2, 16), (4, 4, 16), (28, 1, 16))
    elif arch == "x86_64":
        lanes = ((7, 2, 8), (14, 1, 8), (4, 3, 8), (4, 2, 8))
    elif arch == "aarch64":
        lanes = ((7, 3, 4), (14, 2, 4), (4, 6, 4), (28, 1, 4))
    else:
        lanes = ((7, 2, 4), (14, 1, 4), (4, 2, 4), (4, 1, 4))
    # cost per padded multiply-add, per lanes tile: the fourth loads one broadcast per multiply-add
    # and ran at about 2/3 of the others' rate (AVX-512: benchmarks/results/lanes_tiles_x86_64.md;
    # assumed alike elsewhere), so it is taken where the others pad much more (16-channel outputs)
    lanes_work = (1.0, 1.0, 1.0, 1.5)
    kind = env_choice("HASTE_EDGE_MICROKERNEL", ("vector", "scalar"), "vector")
    return {"arch": arch, "avx512": avx512, "shapes": shapes, "lanes": lanes, "lanes_work": lanes_work,
            "kind": kind, "fma512": avx512 and not _cpu_name().startswith("znver")}



TARGET = _choose()
# TARGET["fma512"]: AVX-512 FMAs at full width (Intel's cores); AMD's Zen 4 and 5 split them
# into two 256-bit halves, so direct convs reach half the peak there and Winograd pays sooner
SHAPES = TARGET["shapes"]                      # index = tile variant
LANES = TARGET["lanes"]                        # index = lanes tile variant
LANES_WORK = TARGET["lanes_work"]
# k steps ahead the vector tile prefetches A, 0 = not at all (32-200 measured alike on the bundled
# ResNet: benchmarks/results/prefetch_x86_64.md); past the panel's end it is a harmless hint
PREFETCH_K = env_int("HASTE_EDGE_PREFETCH_K", 64, 0, 4096)
# k steps ahead the lanes tile prefetches B (its weights: NR floats per k, from memory on a
# panel's first pixel block), 0 = not at all; read when a conv is prepared. Whole models took
# 0.93-0.98x the time with it (benchmarks/results/conv_rule_no-lanes-prefetch_x86_64.md)
LANES_PREFETCH_K = 16


def describe() -> str:
    """One line for benchmark headers: the microkernel this process runs."""
    t = TARGET
    tiles = ", ".join(f"{mr}x{nv * vw}" for mr, nv, vw in t["shapes"])
    lanes = ", ".join(f"{mr}x{nv * vw}" for mr, nv, vw in t["lanes"])
    fma = (", full-width FMAs" if t["fma512"] else ", FMAs in 256-bit halves") if t["avx512"] else ""
    return (f"microkernel {t['kind']} tiles {tiles}, lanes tiles {lanes} "
            f"({t['arch']}{', AVX-512' if t['avx512'] else ''}{fma})")


def mr_of(variant: int) -> int:
    return SHAPES[variant][0]


def nr_of(variant: int) -> int:
    return SHAPES[variant][1] * SHAPES[variant][2]


# Tile choice, measured per conv on the bundled ResNet and EfficientNet-Lite0 on AVX-512
# (benchmarks/results/tile_choice_x86_64.md): from this many columns the widest tile was fastest
# or within 3 % (on a 112x112 map 1.5x faster than 16x16, though 16x16 padded less); below, the
# least padding wins, except that the narrow tile (half-width vectors) lost even with 14 % less
# padding: its padded work counts _NARROW_COST times.
WIDE_MIN_COLS = 784
_NARROW_COST = 1.3


def choose_variant(rows: int, cols: int) -> int:
    """The tile shape for an M x L product (above)."""
    if cols >= WIDE_MIN_COLS:
        return 0

    def cost(v):
        mr, nr = mr_of(v), nr_of(v)
        return -(-rows // mr) * mr * -(-cols // nr) * nr * (_NARROW_COST if v == 2 else 1.0)
    return min(range(len(SHAPES)), key=lambda v: (cost(v), v))


# ---------------------------------------------------------------------------------------------
# IR pieces both vector tiles are made of
# ---------------------------------------------------------------------------------------------

def phi_loop(builder, first, last, accs, body):
    """for k in range(first, last): accs = body(k, accs), the accumulators (any LLVM values) carried
    in phi nodes from their values in accs; body may branch. Returns them after the loop (accs
    unchanged if first >= last)."""
    i64 = ir.IntType(64)
    entry = builder.block
    loop, done = builder.append_basic_block("mk.loop"), builder.append_basic_block("mk.done")
    builder.cbranch(builder.icmp_signed("<", first, last), loop, done)
    builder.position_at_end(loop)
    k = builder.phi(i64)
    k.add_incoming(first, entry)
    phis = [builder.phi(a.type) for a in accs]
    for p, a in zip(phis, accs):
        p.add_incoming(a, entry)
    new = body(k, phis)
    latch = builder.block                 # the body may have branched
    k_next = builder.add(k, i64(1))
    k.add_incoming(k_next, latch)
    for p, v in zip(phis, new):
        p.add_incoming(v, latch)
    builder.cbranch(builder.icmp_signed("<", k_next, last), loop, done)
    builder.position_at_end(done)
    outs = [builder.phi(a.type) for a in accs]
    for o, a, v in zip(outs, accs, new):
        o.add_incoming(a, entry)
        o.add_incoming(v, latch)
    return outs


class _IR:
    """The vector type, llvm.fma, splat and the clamped store for one tile's codegen."""

    def __init__(self, builder, vw: int):
        self.b = builder
        self.i64 = ir.IntType(64)
        self.vt = ir.VectorType(ir.FloatType(), vw)
        self.fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(self.vt, [self.vt] * 3),
                                                  f"llvm.fma.v{vw}f32")
        self.zero = ir.Constant(self.vt, [0.0] * vw)
        self._undef = ir.Constant(self.vt, ir.Undefined)
        self._mask = ir.Constant(ir.VectorType(ir.IntType(32), vw), [0] * vw)

    def prefetch(self, base, index):
        """A read prefetch of base[index] into all cache levels (a hint: past the end is harmless)."""
        fn = cgutils.get_or_insert_function(
            self.b.module, ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()] + [ir.IntType(32)] * 3),
            "llvm.prefetch.p0i8")
        ptr = self.b.bitcast(self.b.gep(base, [index]), ir.IntType(8).as_pointer())
        self.b.call(fn, [ptr, ir.IntType(32)(0), ir.IntType(32)(3), ir.IntType(32)(1)])

    def splat(self, value):
        return self.b.shuffle_vector(self.b.insert_element(self._undef, value, self.i64(0)), self._undef, self._mask)

    def load(self, base, index, vt=None):
        """The vector (of type vt, default the tile's) at base[index], unaligned."""
        ptr = self.b.bitcast(self.b.gep(base, [index]), (vt or self.vt).as_pointer())
        return self.b.load(ptr, align=4)

    def load_evens(self, base, index):
        """The vector of base[index + 2t], t < vw: one load of 2*vw floats and a shuffle (LLVM does
        not vectorise a stride-2 loop by itself)."""
        wide = ir.VectorType(ir.FloatType(), 2 * self.vt.count)
        evens = ir.Constant(ir.VectorType(ir.IntType(32), self.vt.count), list(range(0, 2 * self.vt.count, 2)))
        return self.b.shuffle_vector(self.load(base, index, wide), ir.Constant(wide, ir.Undefined), evens)

    def reduction(self, n, n_acc, body):
        """for t in range(n), n_acc vector accumulators carried in phi nodes from zero; body(t, accs)
        emits one step and returns the new accumulators. Returns them after the loop (zero if n <= 0)."""
        return phi_loop(self.b, self.i64(0), n, [self.zero] * n_acc, body)

    def store_clamped(self, v, bias_s, lo_s, hi_s, base, index, res=None, res_lo=None):
        """base[index:index+vw] = clamp(v + bias, lo, hi), then with a residual vector res
        max(that + res, res_lo); compare and select keep NaN."""
        b = self.b
        v = b.fadd(v, bias_s)
        v = b.select(b.fcmp_ordered("<", v, lo_s), lo_s, v)
        v = b.select(b.fcmp_ordered(">", v, hi_s), hi_s, v)
        if res is not None:
            v = b.fadd(v, res)
            v = b.select(b.fcmp_ordered("<", v, res_lo), res_lo, v)
        b.store(v, b.bitcast(b.gep(base, [index]), self.vt.as_pointer()), align=4)


def _data(context, builder, typ, value):
    return context.make_array(typ)(context, builder, value).data


# ---------------------------------------------------------------------------------------------
# the tile, with its epilogue:
#   C[c_off + i*ldc + j] = clamp(bias[i] + sum_k a[k*MR + i] * b[b_off + offs[k] + j], lo, hi)
# for i < MR, j < NR; bias is the tile's MR values; clamp keeps NaN (compare and select).
# ---------------------------------------------------------------------------------------------

def _make_vector_tile(mr: int, nv: int, vw: int):
    @intrinsic
    def tile(typingctx, a, b, offs, b_off, k_len, c, c_off, ldc, bias, lo, hi):
        sig = types.void(a, b, offs, types.int64, types.int64, c, types.int64, types.int64, bias,
                         types.float32, types.float32)

        def codegen(context, builder, signature, args):
            a_v, b_v, o_v, b_off_v, k_v, c_v, c_off_v, ldc_v, bias_v, lo_v, hi_v = args
            at, bt, ot, _, _, ct, _, _, biast, _, _ = signature.args
            ap, bp = _data(context, builder, at, a_v), _data(context, builder, bt, b_v)
            op = _data(context, builder, ot, o_v)
            cp, biasp = _data(context, builder, ct, c_v), _data(context, builder, biast, bias_v)
            x = _IR(builder, vw)
            i64 = x.i64

            def step(k, acc):                   # acc[i*nv + j]: row i, vector j
                base = builder.add(b_off_v, builder.load(builder.gep(op, [k])))
                bvec = [x.load(bp, builder.add(base, i64(j * vw))) for j in range(nv)]
                a_base = builder.mul(k, i64(mr))
                # A's panel streams from memory once per layer (a model's weights do not stay in
                # cache between inferences): fetch it ahead, the hardware prefetcher alone falls behind
                if PREFETCH_K:
                    x.prefetch(ap, builder.add(a_base, i64(PREFETCH_K * mr)))
                new = []
                for i in range(mr):
                    av = x.splat(builder.load(builder.gep(ap, [builder.add(a_base, i64(i))])))
                    new += [builder.call(x.fma, [av, bvec[j], acc[i * nv + j]]) for j in range(nv)]
                return new

            outs = x.reduction(k_v, mr * nv, step)
            lo_s, hi_s = x.splat(lo_v), x.splat(hi_v)
            for i in range(mr):
                row_off = builder.add(c_off_v, builder.mul(ldc_v, i64(i)))
                bias_s = x.splat(builder.load(builder.gep(biasp, [i64(i)])))
                for j in range(nv):
                    x.store_clamped(outs[i * nv + j], bias_s, lo_s, hi_s, cp, builder.add(row_off, i64(j * vw)))
            return context.get_dummy_value()

        return sig, codegen

    return tile


# ---------------------------------------------------------------------------------------------
# the lanes tile (output channels in the vector lanes, pixels broadcast), with its epilogue:
#   C[c_off + i*ldc + j] = clamp(bias[bias_off + j] + sum_k a[a_off + aoffs[k] + i] * b[b_off + k*NR + j], lo, hi)
# for i < MR pixels, j < NR channels. A is read where the pixels lie (a run of MR output pixels
# of one row in the image or its stride phases: no packing); B is a panel of NR channels' weights,
# k-major and contiguous (pack_lanes), so the weights stream as the hardware prefetcher likes.
# Made for small maps, where a pixel-wide tile pads a 7x7 map's 49 pixels to 64 and a row of
# MR = 7 pixels pads nothing.
# ---------------------------------------------------------------------------------------------

def _make_vector_lanes_tile(mr: int, nv: int, vw: int, a_step: int):
    nr = nv * vw

    @intrinsic
    def lanes_tile(typingctx, a, aoffs, a_off, b, b_off, c, c_off, ldc, c_vstep, bias, bias_off, lo, hi, b_pf):
        sig = types.void(a, aoffs, types.int64, b, types.int64, c, types.int64, types.int64,
                         types.int64, bias, types.int64, types.float32, types.float32, types.int64)

        def codegen(context, builder, signature, args):
            (a_v, o_v, a_off_v, b_v, b_off_v, c_v, c_off_v, ldc_v, vstep_v, bias_v, bias_off_v,
             lo_v, hi_v, pf_v) = args
            at, ot, _, bt, _, ct, _, _, _, biast = signature.args[:10]
            ap, op = _data(context, builder, at, a_v), _data(context, builder, ot, o_v)
            bp, cp = _data(context, builder, bt, b_v), _data(context, builder, ct, c_v)
            biasp = _data(context, builder, biast, bias_v)
            k_len = builder.extract_value(context.make_array(ot)(context, builder, o_v).shape, 0)
            x = _IR(builder, vw)
            i64 = x.i64
            prefetching = builder.icmp_signed("!=", pf_v, i64(0))
            # the pixel step is a constant: as a run-time value its multiples, one register per
            # pixel, spilled the 14-pixel tile to half speed

            def step(k, acc):                   # acc[i*nv + j]: pixel i, vector j
                a_base = builder.add(a_off_v, builder.load(builder.gep(op, [k])))
                b_base = builder.add(b_off_v, builder.mul(k, i64(nr)))
                with builder.if_then(prefetching, likely=True):
                    for line in range(0, nr, 16):       # every 64-byte line of this k's weights
                        x.prefetch(bp, builder.add(b_base, builder.add(pf_v, i64(line))))
                bvec = [x.load(bp, builder.add(b_base, i64(j * vw))) for j in range(nv)]
                new = []
                for i in range(mr):
                    av = x.splat(builder.load(builder.gep(ap, [builder.add(a_base, i64(i * a_step))])))
                    new += [builder.call(x.fma, [av, bvec[j], acc[i * nv + j]]) for j in range(nv)]
                return new

            outs = x.reduction(k_len, mr * nv, step)
            lo_s, hi_s = x.splat(lo_v), x.splat(hi_v)
            bias_v = [x.load(biasp, builder.add(bias_off_v, i64(j * vw))) for j in range(nv)]
            for i in range(mr):
                row_off = builder.add(c_off_v, builder.mul(ldc_v, i64(i)))
                for j in range(nv):
                    x.store_clamped(outs[i * nv + j], bias_v[j], lo_s, hi_s, cp,
                                    builder.add(row_off, builder.mul(vstep_v, i64(j))))
            return context.get_dummy_value()

        return sig, codegen

    return lanes_tile


def _make_scalar_lanes_tile(mr: int, nr: int, vw: int, a_step: int):
    @njit
    def lanes_tile(a, aoffs, a_off, b, b_off, c, c_off, ldc, c_vstep, bias, bias_off, lo, hi, b_pf):
        acc = np.zeros((mr, nr), dtype=np.float32)
        for k in range(aoffs.shape[0]):
            base = a_off + aoffs[k]
            for i in range(mr):
                av = a[base + i * a_step]
                for j in range(nr):
                    acc[i, j] += av * b[b_off + k * nr + j]
        for i in range(mr):
            for j in range(nr):
                v = acc[i, j] + bias[bias_off + j]
                v = lo if v < lo else v
                c[c_off + i * ldc + (j // vw) * c_vstep + j % vw] = hi if v > hi else v
    return lanes_tile


# ---------------------------------------------------------------------------------------------
# the gathered lanes tile (HASTE's reduced conv: haste/kernel.py), no epilogue:
#   C[c_off + i*ldc + j] = (C[c_off + i*ldc + j] if accumulate else 0)
#                          + sum_{k < k_len} a[a_off + aoffs[k] + i] * b[boffs[k] + j]
# for i < MR pixels, j < NR channels. Like the lanes tile, but B's rows are gathered by offset too:
# a patch's singleton channels use the layer's packed weights in place and its merged buckets a
# per-patch buffer, so no weight is copied for a singleton. Bias and activation come after the
# last call (the tile sums buckets in two calls: singletons, then merged).
# ---------------------------------------------------------------------------------------------

# (MR pixels, NV vectors) of the gathered tiles: MR = 2 or 4 (HASTE's usual tile sizes P), NV so
# that a layer's output channels pad little (NR = NV * VW); NV up to the 4-pixel lanes tile's
GATHER_SHAPES = tuple((mr, nv) for mr in (2, 4) for nv in sorted({1, 2, LANES[2][1]}))


def _make_vector_gather_tile(mr: int, nv: int, vw: int):
    @intrinsic
    def gather_tile(typingctx, a, aoffs, a_off, b, boffs, k_len, c, c_off, ldc, accumulate):
        sig = types.void(a, aoffs, types.int64, b, boffs, types.int64, c, types.int64, types.int64,
                         types.boolean)

        def codegen(context, builder, signature, args):
            a_v, ao_v, a_off_v, b_v, bo_v, k_v, c_v, c_off_v, ldc_v, accum_v = args
            at, aot, _, bt, bot, _, ct = signature.args[:7]
            ap, aop = _data(context, builder, at, a_v), _data(context, builder, aot, ao_v)
            bp, bop = _data(context, builder, bt, b_v), _data(context, builder, bot, bo_v)
            cp = _data(context, builder, ct, c_v)
            x = _IR(builder, vw)
            i64 = x.i64

            def step(k, acc):                   # acc[i*nv + j]: pixel i, vector j
                a_base = builder.add(a_off_v, builder.load(builder.gep(aop, [k])))
                b_base = builder.load(builder.gep(bop, [k]))
                bvec = [x.load(bp, builder.add(b_base, i64(j * vw))) for j in range(nv)]
                new = []
                for i in range(mr):
                    av = x.splat(builder.load(builder.gep(ap, [builder.add(a_base, i64(i))])))
                    new += [builder.call(x.fma, [av, bvec[j], acc[i * nv + j]]) for j in range(nv)]
                return new

            outs = x.reduction(k_v, mr * nv, step)
            flag = builder.trunc(accum_v, ir.IntType(1)) if accum_v.type != ir.IntType(1) else accum_v
            for i in range(mr):
                row_off = builder.add(c_off_v, builder.mul(ldc_v, i64(i)))
                for j in range(nv):
                    ptr = builder.bitcast(builder.gep(cp, [builder.add(row_off, i64(j * vw))]), x.vt.as_pointer())
                    old = builder.load(ptr, align=4)
                    v = builder.select(flag, builder.fadd(outs[i * nv + j], old), outs[i * nv + j])
                    builder.store(v, ptr, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return gather_tile


def _make_scalar_gather_tile(mr: int, nr: int):
    @njit
    def gather_tile(a, aoffs, a_off, b, boffs, k_len, c, c_off, ldc, accumulate):
        acc = np.zeros((mr, nr), dtype=np.float32)
        for k in range(k_len):
            base = a_off + aoffs[k]
            for i in range(mr):
                av = a[base + i]
                for j in range(nr):
                    acc[i, j] += av * b[boffs[k] + j]
        for i in range(mr):
            for j in range(nr):
                if accumulate:
                    c[c_off + i * ldc + j] += acc[i, j]
                else:
                    c[c_off + i * ldc + j] = acc[i, j]
    return gather_tile


def _make_gather_tile(mr, nv, vw):
    if TARGET["kind"] == "scalar":
        return _make_scalar_gather_tile(mr, nv * vw)
    return _make_vector_gather_tile(mr, nv, vw)


def _make_scalar_tile(mr: int, nr: int):
    @njit
    def tile(a, b, offs, b_off, k_len, c, c_off, ldc, bias, lo, hi):
        acc = np.zeros((mr, nr), dtype=np.float32)
        for k in range(k_len):
            base = b_off + offs[k]
            for i in range(mr):
                av = a[k * mr + i]
                for j in range(nr):
                    acc[i, j] += av * b[base + j]
        for i in range(mr):
            for j in range(nr):
                v = acc[i, j] + bias[i]
                v = lo if v < lo else v
                c[c_off + i * ldc + j] = hi if v > hi else v
    return tile


# ---------------------------------------------------------------------------------------------
# the blocked depthwise tile: DWB_VL channels in the vector lanes (their image copied into a
# zero-padded (rows, cols, DWB_VL) block), DWB_MR output pixels of one row,
#   dst[d_pos + r*VL + l] = clamp(bias[b_off + l]
#                                 + sum_t w[w_off + t*VL + l] * src[s_pos + toffs[t] + r*s_step + l], lo, hi)
# (r < DWB_MR, l < VL): one weight vector per tap serves DWB_MR pixels, every load a whole vector.
# And the square transpose that moves VL x VL blocks between a plane layout and that block:
#   dst[d_offs[d_start + j] + d_pos + i] = src[s_offs[i] + s_pos + j]      (i, j < VL)
# ---------------------------------------------------------------------------------------------

# the target's vector width (a block of channels); 7 pixels divide the rows of 7- to 112-wide maps
DWB_VL = 16 if TARGET["avx512"] else 8 if TARGET["arch"] == "x86_64" else 4
DWB_MR = 7


def _make_vector_dwb_tile(mr: int, vw: int):
    @intrinsic
    def dwb_tile(typingctx, src, s_pos, s_step, toffs, w, w_off, dst, d_pos, bias, b_off, lo, hi):
        sig = types.void(src, types.int64, types.int64, toffs, w, types.int64, dst, types.int64, bias,
                         types.int64, types.float32, types.float32)

        def codegen(context, builder, signature, args):
            s_v, s_pos_v, step_v, o_v, w_v, w_off_v, d_v, d_pos_v, bias_v, b_off_v, lo_v, hi_v = args
            st, _, _, ot, wt, _, dt, _, biast = signature.args[:9]
            sp, op = _data(context, builder, st, s_v), _data(context, builder, ot, o_v)
            wp, dp = _data(context, builder, wt, w_v), _data(context, builder, dt, d_v)
            biasp = _data(context, builder, biast, bias_v)
            n_taps = builder.extract_value(context.make_array(ot)(context, builder, o_v).shape, 0)
            x = _IR(builder, vw)
            i64 = x.i64
            pix = [builder.add(s_pos_v, builder.mul(step_v, i64(r))) for r in range(mr)]

            def step(t, acc):
                off = builder.load(builder.gep(op, [t]))
                wv = x.load(wp, builder.add(w_off_v, builder.mul(t, i64(vw))))
                return [builder.call(x.fma, [wv, x.load(sp, builder.add(pix[r], off)), acc[r]]) for r in range(mr)]

            outs = x.reduction(n_taps, mr, step)
            bias_l, lo_s, hi_s = x.load(biasp, b_off_v), x.splat(lo_v), x.splat(hi_v)
            for r in range(mr):
                x.store_clamped(outs[r], bias_l, lo_s, hi_s, dp, builder.add(d_pos_v, i64(r * vw)))
            return context.get_dummy_value()

        return sig, codegen

    return dwb_tile


def _make_scalar_dwb_tile(mr: int, vw: int):
    @njit
    def dwb_tile(src, s_pos, s_step, toffs, w, w_off, dst, d_pos, bias, b_off, lo, hi):
        for r in range(mr):
            for lane in range(vw):
                acc = np.float32(0.0)
                for t in range(toffs.shape[0]):
                    acc += w[w_off + t * vw + lane] * src[s_pos + toffs[t] + r * s_step + lane]
                v = acc + bias[b_off + lane]
                v = lo if v < lo else v
                dst[d_pos + r * vw + lane] = hi if v > hi else v
    return dwb_tile


def _transpose_stages(vw: int) -> list[tuple[list[int], list[int]]]:
    """Shuffle masks of a vw x vw transpose by swapping off-diagonal blocks of halving size b:
    rows i and i + b (i in the upper half of a 2b block) become [i's lanes, (i+b)'s first lanes]
    and [i's last lanes, (i+b)'s lanes] per 2b lanes (mask indices >= vw pick the second row)."""
    stages, b = [], vw // 2
    while b:
        first = [l if (l // b) % 2 == 0 else vw + l - b for l in range(vw)]
        second = [l + b if (l // b) % 2 == 0 else vw + l for l in range(vw)]
        stages.append((first, second))
        b //= 2
    return stages


def _make_vector_transpose(vw: int):
    stages = _transpose_stages(vw)

    @intrinsic
    def transpose(typingctx, src, s_offs, s_pos, dst, d_offs, d_start, d_pos):
        sig = types.void(src, s_offs, types.int64, dst, d_offs, types.int64, types.int64)

        def codegen(context, builder, signature, args):
            s_v, so_v, s_pos_v, d_v, do_v, d_start_v, d_pos_v = args
            st, sot, _, dt, dot = signature.args[:5]
            sp, sop = _data(context, builder, st, s_v), _data(context, builder, sot, so_v)
            dp, dop = _data(context, builder, dt, d_v), _data(context, builder, dot, do_v)
            x = _IR(builder, vw)
            i64, i32 = x.i64, ir.IntType(32)
            rows = [x.load(sp, builder.add(builder.load(builder.gep(sop, [i64(i)])), s_pos_v)) for i in range(vw)]
            b = vw // 2
            for first, second in stages:
                m1 = ir.Constant(ir.VectorType(i32, vw), first)
                m2 = ir.Constant(ir.VectorType(i32, vw), second)
                new = list(rows)
                for i in range(vw):
                    if (i // b) % 2 == 0:
                        new[i] = builder.shuffle_vector(rows[i], rows[i + b], m1)
                        new[i + b] = builder.shuffle_vector(rows[i], rows[i + b], m2)
                rows, b = new, b // 2
            for j in range(vw):
                at = builder.add(builder.load(builder.gep(dop, [builder.add(d_start_v, i64(j))])), d_pos_v)
                builder.store(rows[j], builder.bitcast(builder.gep(dp, [at]), x.vt.as_pointer()), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return transpose


def _make_scalar_transpose(vw: int):
    @njit
    def transpose(src, s_offs, s_pos, dst, d_offs, d_start, d_pos):
        for i in range(vw):
            for j in range(vw):
                dst[d_offs[d_start + j] + d_pos + i] = src[s_offs[i] + s_pos + j]
    return transpose


def transpose_reference(src, s_offs, s_pos, dst, d_offs, d_start, d_pos, vw=None):
    """transpose's effect on dst, in NumPy: the VL x VL block read row by row, written column by column."""
    vw = vw or DWB_VL
    block = np.stack([src[s_offs[i] + s_pos:s_offs[i] + s_pos + vw] for i in range(vw)])   # [i, j]
    for j in range(vw):
        at = d_offs[d_start + j] + d_pos
        dst[at:at + vw] = block[:, j]


def dwb_reference(src, s_pos, s_step, toffs, w, w_off, bias, b_off, lo=-np.inf, hi=np.inf, mr=None, vw=None):
    """dwb_tile's DWB_MR x VL outputs (rows = pixels), float64 accumulation."""
    mr, vw = mr or DWB_MR, vw or DWB_VL
    out = np.zeros((mr, vw))
    for r in range(mr):
        for t, off in enumerate(toffs):
            at = s_pos + off + r * s_step
            out[r] += np.asarray(w[w_off + t * vw:w_off + (t + 1) * vw], np.float64) * src[at:at + vw]
    out += np.asarray(bias[b_off:b_off + vw], np.float64)
    return np.clip(out, lo, hi).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# a stride-2 copy (the stride phases of stride-2 convs): dst[d_off + t] = src[s_off + 2t], t < 16,
# or t < n with masked loads and stores (a 28-pixel row has 14 per phase: no full vector)
# ---------------------------------------------------------------------------------------------

@intrinsic
def every_other16(typingctx, src, s_off, dst, d_off):
    """Both arrays unit-stride; reads 32 floats from s_off."""
    sig = types.void(src, types.int64, dst, types.int64)

    def codegen(context, builder, signature, args):
        s_v, s_o, d_v, d_o = args
        x = _IR(builder, 16)
        evens = x.load_evens(_data(context, builder, signature.args[0], s_v), s_o)
        dp = _data(context, builder, signature.args[2], d_v)
        builder.store(evens, builder.bitcast(builder.gep(dp, [d_o]), x.vt.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def window4x4(typingctx, src, s_off, pitch, dst, d_off):
    """dst[d_off + 4p + q] = src[s_off + p*pitch + q] for p, q < 4: a 4x4 window of a plane whose
    rows are pitch apart, as one vector of 16 (four 4-float loads joined, one store). Reads and
    writes nothing else."""
    sig = types.void(src, types.int64, types.int64, dst, types.int64)

    def codegen(context, builder, signature, args):
        s_v, s_o, pitch_v, d_v, d_o = args
        i32, i64 = ir.IntType(32), ir.IntType(64)
        v4, v16 = ir.VectorType(ir.FloatType(), 4), ir.VectorType(ir.FloatType(), 16)
        sp = _data(context, builder, signature.args[0], s_v)
        rows = [builder.load(builder.bitcast(builder.gep(sp, [builder.add(s_o, builder.mul(pitch_v, i64(p)))]),
                                             v4.as_pointer()), align=4) for p in range(4)]
        join8 = ir.Constant(ir.VectorType(i32, 8), list(range(8)))
        low, high = builder.shuffle_vector(rows[0], rows[1], join8), builder.shuffle_vector(rows[2], rows[3], join8)
        v = builder.shuffle_vector(low, high, ir.Constant(ir.VectorType(i32, 16), list(range(16))))
        dp = _data(context, builder, signature.args[3], d_v)
        builder.store(v, builder.bitcast(builder.gep(dp, [d_o]), v16.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def max_into(typingctx, dst, d_off, src, s_off):
    """dst[d_off + t] = dst[d_off + t] if dst[d_off + t] >= src[s_off + t] else src[s_off + t], t <
    DWB_VL: MaxPool's step on one vector of channels (a NaN in src is taken, one in dst replaced)."""
    sig = types.void(dst, types.int64, src, types.int64)

    def codegen(context, builder, signature, args):
        d_v, d_o, s_v, s_o = args
        x = _IR(builder, DWB_VL)
        dp, sp = _data(context, builder, signature.args[0], d_v), _data(context, builder, signature.args[2], s_v)
        a, b = x.load(dp, d_o), x.load(sp, s_o)
        keep = builder.fcmp_ordered(">=", a, b)
        builder.store(builder.select(keep, a, b), builder.bitcast(builder.gep(dp, [d_o]), x.vt.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


def _lanes_below(builder, count, limit):
    """<count x i1>: lane i < limit (an i64)."""
    i32 = ir.IntType(32)
    iv = ir.VectorType(ir.IntType(64), count)
    lim = builder.insert_element(ir.Constant(iv, ir.Undefined), limit, ir.IntType(64)(0))
    lim = builder.shuffle_vector(lim, ir.Constant(iv, ir.Undefined), ir.Constant(ir.VectorType(i32, count), [0] * count))
    return builder.icmp_signed("<", ir.Constant(iv, list(range(count))), lim)


def _masked(builder, count):
    """(llvm.masked.load, llvm.masked.store) of <count x float>."""
    vt, i32 = ir.VectorType(ir.FloatType(), count), ir.IntType(32)
    mt = ir.VectorType(ir.IntType(1), count)
    load = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt.as_pointer(), i32, mt, vt]),
                                          f"llvm.masked.load.v{count}f32.p0v{count}f32")
    store = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [vt, vt.as_pointer(), i32, mt]),
                                           f"llvm.masked.store.v{count}f32.p0v{count}f32")
    return load, store


# x86 has masked vector moves (AVX2 vmaskmov, AVX-512 masks); NEON has none and LLVM turns each
# masked lane into a branch: there the short runs below stay plain loops
MASKED_MOVES = TARGET["arch"] == "x86_64"


@intrinsic
def copy_upto16(typingctx, src, s_off, dst, d_off, n):
    """dst[d_off + t] = src[s_off + t] for t < n <= 16, nothing read or written outside."""
    sig = types.void(src, types.int64, dst, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        s_v, s_o, d_v, d_o, n_v = args
        vt = ir.VectorType(ir.FloatType(), 16)
        load, store = _masked(builder, 16)
        mask = _lanes_below(builder, 16, n_v)
        sp = _data(context, builder, signature.args[0], s_v)
        dp = _data(context, builder, signature.args[2], d_v)
        v = builder.call(load, [builder.bitcast(builder.gep(sp, [s_o]), vt.as_pointer()), ir.IntType(32)(4), mask,
                                ir.Constant(vt, [0.0] * 16)])
        builder.call(store, [v, builder.bitcast(builder.gep(dp, [d_o]), vt.as_pointer()), ir.IntType(32)(4), mask])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def zero_upto16(typingctx, dst, d_off, n):
    """dst[d_off + t] = 0 for t < n <= 16, nothing written outside."""
    sig = types.void(dst, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        d_v, d_o, n_v = args
        vt = ir.VectorType(ir.FloatType(), 16)
        _, store = _masked(builder, 16)
        dp = _data(context, builder, signature.args[0], d_v)
        builder.call(store, [ir.Constant(vt, [0.0] * 16), builder.bitcast(builder.gep(dp, [d_o]), vt.as_pointer()),
                             ir.IntType(32)(4), _lanes_below(builder, 16, n_v)])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def every_other_upto16(typingctx, src, s_off, dst, d_off, n):
    """every_other16 for the first n <= 16 values only: reads src[s_off : s_off + 2n - 1] and
    writes dst[d_off : d_off + n], nothing outside them (masked load and store)."""
    sig = types.void(src, types.int64, dst, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        s_v, s_o, d_v, d_o, n_v = args
        i64, i32 = ir.IntType(64), ir.IntType(32)
        wide, vt = ir.VectorType(ir.FloatType(), 32), ir.VectorType(ir.FloatType(), 16)
        load, _ = _masked(builder, 32)
        _, store = _masked(builder, 16)
        sp = _data(context, builder, signature.args[0], s_v)
        dp = _data(context, builder, signature.args[2], d_v)
        v = builder.call(load, [builder.bitcast(builder.gep(sp, [s_o]), wide.as_pointer()), i32(4),
                                _lanes_below(builder, 32, builder.sub(builder.mul(n_v, i64(2)), i64(1))),
                                ir.Constant(wide, [0.0] * 32)])
        evens = builder.shuffle_vector(v, ir.Constant(wide, ir.Undefined), ir.Constant(ir.VectorType(i32, 16), list(range(0, 32, 2))))
        builder.call(store, [evens, builder.bitcast(builder.gep(dp, [d_o]), vt.as_pointer()), i32(4),
                             _lanes_below(builder, 16, n_v)])
        return context.get_dummy_value()

    return sig, codegen


def make_tile(mr, nv, vw):
    """The tile above (MR x NV*VW), vector IR or its scalar twin (HASTE_EDGE_MICROKERNEL=scalar)."""
    return _make_scalar_tile(mr, nv * vw) if TARGET["kind"] == "scalar" else _make_vector_tile(mr, nv, vw)


def _make_lanes_tile(mr, nv, vw, a_step):
    if TARGET["kind"] == "scalar":
        return _make_scalar_lanes_tile(mr, nv * vw, vw, a_step)
    return _make_vector_lanes_tile(mr, nv, vw, a_step)


# one global per variant: a compiled kernel must see its tile as a constant
tile0 = make_tile(*SHAPES[0])
tile1 = make_tile(*SHAPES[1])
tile2 = make_tile(*SHAPES[2])
MR0, NR0 = mr_of(0), nr_of(0)
MR1, NR1 = mr_of(1), nr_of(1)
MR2, NR2 = mr_of(2), nr_of(2)
# lanes tiles 0 to N_LANES - 1 read A's pixels at a step of 1 (NCHW planes, stride phases), the next
# N_LANES at a step of VW (the channel-blocked layout: ops/conv_blocked.py)
assert all(vw == DWB_VL for _, _, vw in LANES) and len(LANES) == 4
N_LANES = len(LANES)
lanes0 = _make_lanes_tile(*LANES[0], 1)
lanes1 = _make_lanes_tile(*LANES[1], 1)
lanes2 = _make_lanes_tile(*LANES[2], 1)
lanes3 = _make_lanes_tile(*LANES[3], 1)
lanes4 = _make_lanes_tile(*LANES[0], DWB_VL)
lanes5 = _make_lanes_tile(*LANES[1], DWB_VL)
lanes6 = _make_lanes_tile(*LANES[2], DWB_VL)
lanes7 = _make_lanes_tile(*LANES[3], DWB_VL)
# gathered tiles, one global per shape (GATHER_SHAPES), and their dispatcher
GATHER_VW = LANES[2][2]
_gather = [_make_gather_tile(mr, nv, GATHER_VW) for mr, nv in GATHER_SHAPES]
gather0, gather1, gather2, gather3, gather4, gather5 = (_gather + _gather[-1:] * 6)[:6]
N_GATHER = len(GATHER_SHAPES)


@njit
def gather_tile(variant, a, aoffs, a_off, b, boffs, k_len, c, c_off, ldc, accumulate):
    """The gathered tile GATHER_SHAPES[variant] (see above its maker)."""
    if variant == 0:
        gather0(a, aoffs, a_off, b, boffs, k_len, c, c_off, ldc, accumulate)
    elif variant == 1:
        gather1(a, aoffs, a_off, b, boffs, k_len, c, c_off, ldc, accumulate)
    elif variant == 2:
        gather2(a, aoffs, a_off, b, boffs, k_len, c, c_off, ldc, accumulate)
    elif variant == 3:
        gather3(a, aoffs, a_off, b, boffs, k_len, c, c_off, ldc, accumulate)
    elif variant == 4:
        gather4(a, aoffs, a_off, b, boffs, k_len, c, c_off, ldc, accumulate)
    else:
        gather5(a, aoffs, a_off, b, boffs, k_len, c, c_off, ldc, accumulate)


def choose_gather(pixels: int, channels: int) -> int | None:
    """The gathered tile for runs of `pixels` output pixels (a HASTE tile row) and `channels`
    output channels: MR the largest of 4, 2 dividing pixels (None if neither does), then the NV
    that pads the channels least (ties to the wider, fewer calls)."""
    mrs = [mr for mr in (4, 2) if pixels % mr == 0]
    if not mrs:
        return None
    fits = [v for v, (mr, _) in enumerate(GATHER_SHAPES) if mr == mrs[0]]

    def padded(v):
        nr = GATHER_SHAPES[v][1] * GATHER_VW
        return -(-channels // nr) * nr
    return min(fits, key=lambda v: (padded(v), -GATHER_SHAPES[v][1]))


def gather_reference(a, aoffs, a_off, mr, b, boffs, k_len, nr) -> np.ndarray:
    """The gathered tile's sums (mr, nr) in float64 (no accumulate)."""
    rows = np.array([[a[a_off + aoffs[k] + i] for k in range(k_len)] for i in range(mr)], np.float64)
    w = np.array([b[boffs[k]:boffs[k] + nr] for k in range(k_len)], np.float64).reshape(k_len, nr)
    return rows @ w


dwb_tile = (_make_scalar_dwb_tile if TARGET["kind"] == "scalar" else _make_vector_dwb_tile)(DWB_MR, DWB_VL)
transpose = (_make_scalar_transpose if TARGET["kind"] == "scalar" else _make_vector_transpose)(DWB_VL)


# ---------------------------------------------------------------------------------------------
# Winograd F(4x4,3x3) tile transforms on vectors of VL channels (ops/conv_winograd4_blocked.py):
#   input:  v[v_off + (i*6 + j)*v_step : +VL] = (B^T d B)[i, j],  d[r, c] = src[s_off + r*s_row + c*VL : +VL]
#   output: y[y_off + a*y_row + b*VL : +VL] = clamp(bias[b_off : +VL] + (A^T M A)[a, b], lo, hi) for
#           a < n_rows, b < n_cols, M[i, j] = m[m_off + (i*6 + j)*m_step : +VL]; with has_r, then
#           max(that + r[same index], r_lo): a residual Add (and Relu) while the value is in a register
# Columns are transformed first (each row of d or M), then rows; winograd4_bt / winograd4_at are
# the one definition of the operations and their order: the vector form emits them (_IRValue), the
# scalar twin and the NumPy reference call them
# (winograd4_input_reference, winograd4_output_reference): they agree to rounding (the compiler
# may fuse a multiply and an add into one FMA, which rounds once).
# ---------------------------------------------------------------------------------------------

_F2, _F4, _F5, _F8 = np.float32(2), np.float32(4), np.float32(5), np.float32(8)


@njit(inline="always")
def winograd4_bt(d0, d1, d2, d3, d4, d5):
    """B^T (interpolation points 0, +-1, +-2) applied to one 6-vector."""
    return (_F4 * d0 - _F5 * d2 + d4, d3 + d4 - _F4 * (d1 + d2), _F4 * (d1 - d2) - d3 + d4,
            _F2 * (d3 - d1) - d2 + d4, _F2 * (d1 - d3) - d2 + d4, _F4 * d1 - _F5 * d3 + d5)


@njit(inline="always")
def winograd4_at(m0, m1, m2, m3, m4, m5):
    """A^T applied to one 6-vector."""
    return (m0 + m1 + m2 + m3 + m4, m1 - m2 + _F2 * (m3 - m4), m1 + m2 + _F4 * (m3 + m4),
            m1 - m2 + _F8 * (m3 - m4) + m5)


class _IRValue:
    """An LLVM vector in Python arithmetic (+, -, * by a float32 constant): winograd4_bt and
    winograd4_at called on these emit their own operations, in their order, as IR."""
    __array_ufunc__ = None                 # np.float32 * _IRValue: Python asks __rmul__, not NumPy

    def __init__(self, builder, value):
        self.b, self.v = builder, value

    def _of(self, other):
        if isinstance(other, _IRValue):
            return other.v
        return ir.Constant(self.v.type, [float(other)] * self.v.type.count)

    def __add__(self, other):
        return _IRValue(self.b, self.b.fadd(self.v, self._of(other)))

    def __sub__(self, other):
        return _IRValue(self.b, self.b.fsub(self.v, self._of(other)))

    def __rmul__(self, other):
        return _IRValue(self.b, self.b.fmul(self._of(other), self.v))


def _ir_transform(f, builder, vectors):
    """f (winograd4_bt or winograd4_at) on LLVM vectors: its outputs as LLVM vectors."""
    return [o.v for o in f.py_func(*[_IRValue(builder, v) for v in vectors])]


def _make_vector_winograd4_input(vw: int):
    @intrinsic
    def winograd4_input(typingctx, src, s_off, s_row, v, v_off, v_step):
        sig = types.void(src, types.int64, types.int64, v, types.int64, types.int64)

        def codegen(context, builder, signature, args):
            s_v, s_o, s_r, v_v, v_o, v_s = args
            x = _IR(builder, vw)
            sp, vp = _data(context, builder, signature.args[0], s_v), _data(context, builder, signature.args[3], v_v)
            d = [[x.load(sp, builder.add(builder.add(s_o, builder.mul(s_r, x.i64(r))), x.i64(c * vw)))
                  for c in range(6)] for r in range(6)]
            t = [_ir_transform(winograd4_bt, builder, d[r]) for r in range(6)]   # t[r][j]: columns first
            for j in range(6):
                col = _ir_transform(winograd4_bt, builder, [t[r][j] for r in range(6)])
                for i in range(6):
                    at = builder.add(v_o, builder.mul(v_s, x.i64(i * 6 + j)))
                    builder.store(col[i], builder.bitcast(builder.gep(vp, [at]), x.vt.as_pointer()), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return winograd4_input


def _make_vector_winograd4_output(vw: int):
    @intrinsic
    def winograd4_output(typingctx, m, m_off, m_step, y, y_off, y_row, bias, b_off, lo, hi, n_rows, n_cols, r,
                         r_lo, has_r):
        sig = types.void(m, types.int64, types.int64, y, types.int64, types.int64, bias, types.int64,
                         types.float32, types.float32, types.int64, types.int64, r, types.float32, types.boolean)

        def codegen(context, builder, signature, args):
            m_v, m_o, m_s, y_v, y_o, y_r, b_v, b_o, lo_v, hi_v, nr_v, nc_v, r_v, r_lo_v, has_r_v = args
            x = _IR(builder, vw)
            mp, yp = _data(context, builder, signature.args[0], m_v), _data(context, builder, signature.args[3], y_v)
            bp = _data(context, builder, signature.args[6], b_v)
            rp, r_lo_s = _data(context, builder, signature.args[12], r_v), x.splat(r_lo_v)
            mv = [[x.load(mp, builder.add(m_o, builder.mul(m_s, x.i64(i * 6 + j)))) for j in range(6)]
                  for i in range(6)]
            t = [_ir_transform(winograd4_at, builder, mv[i]) for i in range(6)]  # t[i][b]: columns first
            bias_v, lo_s, hi_s = x.load(bp, b_o), x.splat(lo_v), x.splat(hi_v)
            for b in range(4):
                col = _ir_transform(winograd4_at, builder, [t[i][b] for i in range(6)])
                for a in range(4):
                    inside = builder.and_(builder.icmp_signed("<", x.i64(a), nr_v),
                                          builder.icmp_signed("<", x.i64(b), nc_v))
                    with builder.if_then(inside, likely=True):
                        at = builder.add(builder.add(y_o, builder.mul(y_r, x.i64(a))), x.i64(b * vw))
                        with builder.if_else(has_r_v) as (with_r, plain):
                            with with_r:
                                x.store_clamped(col[a], bias_v, lo_s, hi_s, yp, at, x.load(rp, at), r_lo_s)
                            with plain:
                                x.store_clamped(col[a], bias_v, lo_s, hi_s, yp, at)
            return context.get_dummy_value()

        return sig, codegen

    return winograd4_output


def _make_scalar_winograd4_input(vw: int):
    @njit
    def winograd4_input(src, s_off, s_row, v, v_off, v_step):
        t = np.empty((6, 6), np.float32)
        for lane in range(vw):
            for r in range(6):
                o = s_off + r * s_row + lane
                t[r, 0], t[r, 1], t[r, 2], t[r, 3], t[r, 4], t[r, 5] = winograd4_bt(
                    src[o], src[o + vw], src[o + 2 * vw], src[o + 3 * vw], src[o + 4 * vw], src[o + 5 * vw])
            for j in range(6):
                col = winograd4_bt(t[0, j], t[1, j], t[2, j], t[3, j], t[4, j], t[5, j])
                for i in range(6):
                    v[v_off + (i * 6 + j) * v_step + lane] = col[i]
    return winograd4_input


def _make_scalar_winograd4_output(vw: int):
    @njit
    def winograd4_output(m, m_off, m_step, y, y_off, y_row, bias, b_off, lo, hi, n_rows, n_cols, r, r_lo, has_r):
        t = np.empty((6, 4), np.float32)
        for lane in range(vw):
            for i in range(6):
                o = m_off + i * 6 * m_step + lane
                t[i, 0], t[i, 1], t[i, 2], t[i, 3] = winograd4_at(
                    m[o], m[o + m_step], m[o + 2 * m_step], m[o + 3 * m_step], m[o + 4 * m_step], m[o + 5 * m_step])
            for b in range(min(4, n_cols)):
                col = winograd4_at(t[0, b], t[1, b], t[2, b], t[3, b], t[4, b], t[5, b])
                for a in range(min(4, n_rows)):
                    at = y_off + a * y_row + b * vw + lane
                    val = col[a] + bias[b_off + lane]
                    val = lo if val < lo else val
                    val = hi if val > hi else val
                    if has_r:
                        val = val + r[at]
                        val = r_lo if val < r_lo else val
                    y[at] = val
    return winograd4_output


def winograd4_input_reference(d: np.ndarray) -> np.ndarray:
    """(6, 6, VL) windows -> (36, VL) transformed, in winograd4_input's float32 operations."""
    t = np.stack(winograd4_bt.py_func(*[d[:, c] for c in range(6)]), axis=1)        # (6 rows, 6, VL)
    v = np.stack(winograd4_bt.py_func(*[t[r] for r in range(6)]), axis=0)           # (6, 6, VL)
    return v.reshape(36, -1)


def winograd4_output_reference(m: np.ndarray, bias, lo=-np.inf, hi=np.inf, r=None, r_lo=-np.inf) -> np.ndarray:
    """(36, VL) products -> (4, 4, VL) outputs, in winograd4_output's float32 operations; r: the
    (4, 4, VL) residual added after the clamp, then max(., r_lo)."""
    mm = m.reshape(6, 6, -1)
    t = np.stack(winograd4_at.py_func(*[mm[:, j] for j in range(6)]), axis=1)       # (6, 4, VL)
    y = np.stack(winograd4_at.py_func(*[t[i] for i in range(6)]), axis=0)           # (4, 4, VL)
    y = y + np.asarray(bias, np.float32)
    y = np.where(y < np.float32(lo), np.float32(lo), y)
    y = np.where(y > np.float32(hi), np.float32(hi), y).astype(np.float32)
    if r is not None:
        y = y + np.asarray(r, np.float32)
        y = np.where(y < np.float32(r_lo), np.float32(r_lo), y)
    return y.astype(np.float32)


winograd4_input = (_make_scalar_winograd4_input if TARGET["kind"] == "scalar"
                   else _make_vector_winograd4_input)(DWB_VL)
winograd4_output = (_make_scalar_winograd4_output if TARGET["kind"] == "scalar"
                    else _make_vector_winograd4_output)(DWB_VL)

# ---------------------------------------------------------------------------------------------
# packing, the tiled product, the reference
# ---------------------------------------------------------------------------------------------

def pack_panels(a: np.ndarray, mr: int, out: np.ndarray | None = None) -> np.ndarray:
    """A (M, K) -> panels (ceil(M/mr), K*mr) float32: panel[b, k*mr + i] = A[b*mr + i, k], rows
    past M zero (so a tile never needs a mask). Written into `out` (C-contiguous, that shape) if
    given: no temporary copy of A (a model's largest weights are packed while its others are held)."""
    m, k = a.shape
    blocks = -(-m // mr)
    if out is None:
        out = np.empty((blocks, k * mr), np.float32)
    panels = out.view()
    panels.shape = (blocks, k, mr)          # raises rather than reshape into a copy of a strided out
    full = m // mr
    panels[:full] = a[:full * mr].reshape(full, mr, k).transpose(0, 2, 1)
    if full < blocks:
        panels[full] = 0.0
        panels[full, :, :m - full * mr] = a[full * mr:].T
    return out


def padded_columns(length: int, variant: int) -> int:
    """Columns of C for L pixels: a multiple of the variant's NR."""
    nr = nr_of(variant)
    return -(-length // nr) * nr


@njit
def _tile(variant, panel, b, offs, b_off, c, c_off, ldc, bias, lo, hi):
    k_len = offs.shape[0]
    if variant == 0:
        tile0(panel, b, offs, b_off, k_len, c, c_off, ldc, bias, lo, hi)
    elif variant == 1:
        tile1(panel, b, offs, b_off, k_len, c, c_off, ldc, bias, lo, hi)
    else:
        tile2(panel, b, offs, b_off, k_len, c, c_off, ldc, bias, lo, hi)


@njit
def tile_dims(variant):
    if variant == 0:
        return MR0, NR0
    if variant == 1:
        return MR1, NR1
    return MR2, NR2


@njit
def gemm_tiles(variant, panels, b, offs, c, bias, lo, hi):
    """c (blocks*MR, cols) = clamp(bias + A @ B, lo, hi) as in the module docstring, cols a
    multiple of NR, bias (blocks*MR,); every tile independent. Parallel over tiles, row blocks
    innermost: consecutive tiles of a thread read the same columns of B while they are in cache."""
    gemm_strided(variant, panels, b, offs, c.reshape(-1), c.shape[1], c.shape[1] // tile_dims(variant)[1],
                 bias, lo, hi, True)


@njit
def gemm_tiles_serial(variant, panels, b, offs, c, bias, lo, hi):
    """gemm_tiles on the calling thread (small products: no wake-up of the pool)."""
    gemm_strided(variant, panels, b, offs, c.reshape(-1), c.shape[1], c.shape[1] // tile_dims(variant)[1],
                 bias, lo, hi, False)


_CHUNK_FLOATS = 1 << 16          # 256 KiB of B per column chunk (gemm_strided)


@njit(parallel=True)
def gemm_strided(variant, panels, b, offs, cf, ldc, n_col_blocks, bias, lo, hi, parallel):
    """gemm_tiles into the first n_col_blocks*NR columns of a flat C with row stride ldc (the
    columns past them are left alone: a product can be written straight into a layer's output
    whose width is not a multiple of NR). On the pool (parallel) or the calling thread."""
    mr, nr = tile_dims(variant)
    n_row_blocks = panels.shape[0]
    lo32, hi32 = np.float32(lo), np.float32(hi)
    if parallel:
        for t in prange(n_row_blocks * n_col_blocks):
            cb = t // n_row_blocks
            rb = t - cb * n_row_blocks
            _tile(variant, panels[rb], b, offs, cb * nr, cf, rb * mr * ldc + cb * nr, ldc,
                  bias[rb * mr:(rb + 1) * mr], lo32, hi32)
    else:
        # column chunks whose B (K rows of the chunk's columns) stays in L2 (_CHUNK_FLOATS), row
        # blocks outer inside a chunk: each row block writes MR output rows as long runs (few
        # write streams: a layer's output is mostly not in cache) while B is read from L2. Inside
        # MobileNetV2 (`profile`, three alternating runs) its 112x112 16 -> 96 pointwise conv took
        # 0.68-0.87 ms against 1.14-1.36 with column blocks outer; whole models moved within noise
        # (two runs of benchmarks/bench_versions.py, not kept: the tbb package was installed then)
        cbs = max(1, _CHUNK_FLOATS // max(1, offs.shape[0]) // nr)
        for c0 in range(0, n_col_blocks, cbs):
            for rb in range(n_row_blocks):
                for cb in range(c0, min(n_col_blocks, c0 + cbs)):
                    _tile(variant, panels[rb], b, offs, cb * nr, cf, rb * mr * ldc + cb * nr, ldc,
                          bias[rb * mr:(rb + 1) * mr], lo32, hi32)


@njit(parallel=True)
def gemm_batched(variant, panels, b, offs, c, bias, lo, hi, parallel):
    """For every p: c[p] = clamp(bias + A_p @ B_p), A_p's panels panels[p], B_p read at offs[p]:
    one call for a batch of products (Winograd's 16 positions), tiles spread over the threads
    (parallel) or run on the calling one."""
    mr, nr = tile_dims(variant)
    n_prod, n_row_blocks = panels.shape[0], panels.shape[1]
    ldc = c.shape[2]
    n_col_blocks = ldc // nr
    per = n_row_blocks * n_col_blocks
    lo32, hi32 = np.float32(lo), np.float32(hi)
    if parallel:
        for t in prange(n_prod * per):
            p = t // per
            r = t - p * per
            cb = r // n_row_blocks
            rb = r - cb * n_row_blocks
            _tile(variant, panels[p, rb], b, offs[p], cb * nr, c[p].reshape(-1), rb * mr * ldc + cb * nr, ldc,
                  bias[rb * mr:(rb + 1) * mr], lo32, hi32)
    else:
        for p in range(n_prod):
            cf = c[p].reshape(-1)
            for cb in range(n_col_blocks):
                for rb in range(n_row_blocks):
                    _tile(variant, panels[p, rb], b, offs[p], cb * nr, cf, rb * mr * ldc + cb * nr, ldc,
                          bias[rb * mr:(rb + 1) * mr], lo32, hi32)


def pad_rows(v: np.ndarray, rows: int) -> np.ndarray:
    """A per-row vector (bias) zero-padded to the panels' rows."""
    out = np.zeros(rows, dtype=np.float32)
    out[:len(v)] = v
    return out


def gemm_reference(a, b, offs, length, bias=None, lo=-np.inf, hi=np.inf) -> np.ndarray:
    """C (M, length) = clamp(bias + sum_k A[:, k] * B[offs[k]:offs[k] + length], lo, hi), float64
    accumulation."""
    rows = np.stack([b[o:o + length] for o in offs]).astype(np.float64)   # (K, length)
    c = a.astype(np.float64) @ rows
    if bias is not None:
        c += np.asarray(bias, np.float64)[:, None]
    return np.clip(c, lo, hi).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# the lanes product: output channels in the vector lanes, pixel blocks where they lie
# ---------------------------------------------------------------------------------------------

def lanes_dims_py(variant: int) -> tuple[int, int]:
    mr, nv, vw = LANES[variant]
    return mr, nv * vw


def choose_lanes(width: int, channels: int, divides: bool = False) -> int | None:
    """The lanes tile for rows of `width` pixels and `channels` output channels: least padded work
    (pixels per row padded to MR, channels to NR) weighed by LANES_WORK, ties to the first (most
    accumulators). With divides, only tiles whose MR divides width (None if there is none)."""
    def cost(v):
        mr, nr = lanes_dims_py(v)
        return -(-width // mr) * mr * -(-channels // nr) * nr * LANES_WORK[v]
    fits = [v for v in range(len(LANES)) if not divides or width % LANES[v][0] == 0]
    return min(fits, key=lambda v: (cost(v), v)) if fits else None


def pack_lanes(a: np.ndarray, nr: int, out: np.ndarray | None = None) -> np.ndarray:
    """A (M, K) -> B (ceil(M/nr), K*nr) float32: panel[cb, k*nr + j] = A[cb*nr + j, k], channels
    past M zero (into `out` if given, as pack_panels). Give gemm_lanes B on a 64-byte boundary
    (scratch.aligned_empty): with nr a multiple of 16 none of the tile's vector loads then
    straddles two cache lines."""
    return pack_panels(a, nr, out)


@njit
def _lanes_tile(variant, a, aoffs, a_off, b, c, c_off, ldc, c_vstep, bias, bias_off, lo, hi, b_pf):
    if variant == 0:
        lanes0(a, aoffs, a_off, b, 0, c, c_off, ldc, c_vstep, bias, bias_off, lo, hi, b_pf)
    elif variant == 1:
        lanes1(a, aoffs, a_off, b, 0, c, c_off, ldc, c_vstep, bias, bias_off, lo, hi, b_pf)
    elif variant == 2:
        lanes2(a, aoffs, a_off, b, 0, c, c_off, ldc, c_vstep, bias, bias_off, lo, hi, b_pf)
    elif variant == 3:
        lanes3(a, aoffs, a_off, b, 0, c, c_off, ldc, c_vstep, bias, bias_off, lo, hi, b_pf)
    elif variant == 4:
        lanes4(a, aoffs, a_off, b, 0, c, c_off, ldc, c_vstep, bias, bias_off, lo, hi, b_pf)
    elif variant == 5:
        lanes5(a, aoffs, a_off, b, 0, c, c_off, ldc, c_vstep, bias, bias_off, lo, hi, b_pf)
    elif variant == 6:
        lanes6(a, aoffs, a_off, b, 0, c, c_off, ldc, c_vstep, bias, bias_off, lo, hi, b_pf)
    else:
        lanes7(a, aoffs, a_off, b, 0, c, c_off, ldc, c_vstep, bias, bias_off, lo, hi, b_pf)


@njit
def gemm_lanes(variant, a, aoffs, a_starts, b, c, c_starts, ldc, c_vstep, c_panels, bias_panels, bias, lo, hi,
               parallel, pf):
    """For every pixel block t, channel panel cb, pixel i < MR and vector j < NV, lane l:
    C[c_starts[t] + c_panels[cb] + i*ldc + j*c_vstep + l] = clamp(bias[bias_panels[cb] + j*VW + l]
    + sum_k a[a_starts[t] + aoffs[k] + i*step] * B[cb][k*NR + j*VW + l], lo, hi); B the panels
    of pack_lanes; tile `variant` (LANES[variant % N_LANES]) reads pixels at a step of 1 (variants
    below N_LANES) or VW (the others). Pixel-major C: c_starts[t] = t's first pixel * ldc,
    c_panels[cb] = cb*NR, c_vstep = VW; the channel-blocked layout (N, C/VW, H, W, VW):
    c_starts[t] = pixel * VW, ldc = VW, c_vstep = H*W*VW. On the pool (parallel) or the calling thread. pf > 0: the tiles
    prefetch B pf k-steps ahead (LANES_PREFETCH_K)."""
    b_pf = pf * b.shape[1] // max(1, aoffs.shape[0])
    if parallel:
        _gemm_lanes_pool(variant, a, aoffs, a_starts, b, c, c_starts, ldc, c_vstep, c_panels, bias_panels, bias,
                         np.float32(lo), np.float32(hi), b_pf)
    else:
        _gemm_lanes_serial(variant, a, aoffs, a_starts, b, c, c_starts, ldc, c_vstep, c_panels, bias_panels, bias,
                           np.float32(lo), np.float32(hi), b_pf)


# The serial loop is its own function: compiled inside a parallel=True function (as the branch
# not taken by prange), the same loop ran 2x slower (measured on the 7x7 lanes product).
@njit
def _gemm_lanes_serial(variant, a, aoffs, a_starts, b, c, c_starts, ldc, c_vstep, c_panels, bias_panels, bias,
                       lo32, hi32, b_pf):
    """Channel panels outermost: a panel stays in cache while every pixel block passes."""
    for cb in range(b.shape[0]):
        for r in range(a_starts.shape[0]):
            _lanes_tile(variant, a, aoffs, a_starts[r], b[cb], c, c_starts[r] + c_panels[cb], ldc, c_vstep,
                        bias, bias_panels[cb], lo32, hi32, b_pf)


@njit(parallel=True)
def _gemm_lanes_pool(variant, a, aoffs, a_starts, b, c, c_starts, ldc, c_vstep, c_panels, bias_panels, bias,
                     lo32, hi32, b_pf):
    n_cb, n_blocks = b.shape[0], a_starts.shape[0]
    for t in prange(n_cb * n_blocks):
        cb = t // n_blocks
        r = t - cb * n_blocks
        _lanes_tile(variant, a, aoffs, a_starts[r], b[cb], c, c_starts[r] + c_panels[cb], ldc, c_vstep,
                    bias, bias_panels[cb], lo32, hi32, b_pf)

@njit
def gemm_lanes_batched(variant, a, aoffs, starts, a_pos, b, c, c_panels, c_vstep, c_pos, zero_bias, parallel, pf):
    """gemm_lanes for a batch of products (Winograd's 36 positions) in one call, no epilogue:
    product p reads A at p*a_pos + starts[t] + aoffs[k] + i*VW (a lanes tile reading pixels VW
    apart) with B's panels b[p], and writes C at p*c_pos + starts[t] + c_panels[cb] + i*VW + j*c_vstep (the
    channel-blocked layout: A's and C's blocks start alike); zero_bias: zeros, as long as a
    panel's channels. Tiles spread over the threads (parallel) or run on the calling one; pf > 0:
    they prefetch B pf k-steps ahead."""
    inf = np.float32(np.inf)
    b_pf = pf * b.shape[2] // max(1, aoffs.shape[0])
    if parallel:
        _lanes_batched_pool(variant, a, aoffs, starts, a_pos, b, c, c_panels, c_vstep, c_pos, zero_bias, -inf, inf,
                            b_pf)
    else:
        _lanes_batched_serial(variant, a, aoffs, starts, a_pos, b, c, c_panels, c_vstep, c_pos, zero_bias, -inf, inf,
                              b_pf)


@njit
def _lanes_batched_serial(variant, a, aoffs, starts, a_pos, b, c, c_panels, c_vstep, c_pos, zero_bias, lo32, hi32,
                          b_pf):
    for p in range(b.shape[0]):
        for cb in range(b.shape[1]):
            for r in range(starts.shape[0]):
                _lanes_tile(variant, a, aoffs, p * a_pos + starts[r], b[p, cb], c, p * c_pos + starts[r] + c_panels[cb],
                            DWB_VL, c_vstep, zero_bias, 0, lo32, hi32, b_pf)


@njit(parallel=True)
def _lanes_batched_pool(variant, a, aoffs, starts, a_pos, b, c, c_panels, c_vstep, c_pos, zero_bias, lo32, hi32,
                        b_pf):
    n_cb, n_blocks = b.shape[1], starts.shape[0]
    per = n_cb * n_blocks
    for t in prange(b.shape[0] * per):
        p = t // per
        cb = (t - p * per) // n_blocks
        r = t - p * per - cb * n_blocks
        _lanes_tile(variant, a, aoffs, p * a_pos + starts[r], b[p, cb], c, p * c_pos + starts[r] + c_panels[cb],
                    DWB_VL, c_vstep, zero_bias, 0, lo32, hi32, b_pf)


def gemm_lanes_reference(a, aoffs, a_starts, mr, b, bias=None, lo=-np.inf, hi=np.inf, a_step=1) -> np.ndarray:
    """gemm_lanes' blocks (len(a_starts) * mr, N) for B (K, N) unpacked, in float64 accumulation,
    row t*mr + i for pixel i of block t."""
    idx = (np.asarray(a_starts)[:, None, None] + np.asarray(aoffs)[None, None, :]
           + a_step * np.arange(mr)[None, :, None]).reshape(-1, len(aoffs))        # (blocks*mr, K)
    c = a[idx].astype(np.float64) @ b.astype(np.float64)
    if bias is not None:
        c += np.asarray(bias, np.float64)[None, :]
    return np.clip(c, lo, hi).astype(np.float32)
