"""Conv (2-D, NCHW, float32): group=1, depthwise and general grouped, with a fused Relu/Clip epilogue.

Which path runs is decided once per node and thread count (_Plan; the rule and its measurements
above _CONV_PATH below):
- the microkernel (conv_direct: an implicit GEMM over the zero-padded input's stride phases, exact
  im2col columns or the lanes layout on small maps, pointwise convs read in place; register-blocked
  vector tiles with bias and activation fused): by default every non-depthwise conv on one thread
  (but pointwise ones on small maps the lanes layout does not take), and small ones on more.
- OpenBLAS: group=1, kernel > 1x1, >= 16 input channels, output plane <= 1024 pixels: im2row. Per
  image a Numba kernel copies the zero-padded input channels-last, then each output pixel's patch
  into one row; OpenBLAS multiplies rows (pixels, K) by the weights packed once per node as
  (K, C_out), and one Numba pass transposes to NCHW with bias and activation fused (below 32 output
  pixels W @ rows^T straight into the output instead). Other group >= 1 convs: per image (and
  group) an im2col over stride phases ("wide" or "exact" layout) and sgemm via numpy.matmul(out=...);
  1x1 stride-1 unpadded convs need no im2col. On output planes up to 32x32 these paths run their
  Numba kernels single-threaded and leave the threads to OpenBLAS (_SERIAL_MAX_PIXELS).
- depthwise (one input channel per group, any multiplier): channels in the vector lanes
  (conv_depthwise_blocked: blocks of channels transposed in, computed, transposed out); planes
  too large for that block's scratch per plane over stride phases, each tap a long axpy.
- Winograd F(4x4,3x3) (conv_winograd4) for 3x3 stride-1 convs on large maps with many channels;
- Winograd F(2x2,3x3) (conv_winograd), opt-in.

`conv_reference` is the oracle: padded input, one einsum per kernel tap, float64 accumulation.
"""
from __future__ import annotations

import numpy as np

from haste_edge import limits
from haste_edge import microkernel as mk
from haste_edge.errors import InputError
from haste_edge.jit import env_choice, njit, prange
from haste_edge.ops import conv_blocked
from haste_edge.ops.conv_blocked import BlockedConv
from haste_edge.ops.conv_depthwise_blocked import BlockedDepthwiseConv
from haste_edge.ops.conv_depthwise_blocked import block_bytes as depthwise_block_bytes
from haste_edge.ops.conv_direct import DirectConv, use_lanes
from haste_edge.ops.conv_winograd import WinogradConv
from haste_edge.ops.conv_winograd import applicable as winograd_applicable
from haste_edge.ops.conv_winograd4 import Winograd4Conv
from haste_edge.ops import conv_winograd4_blocked
from haste_edge.ops.conv_winograd4_blocked import BlockedWinograd4Conv
from haste_edge.ops.window import split_phases
from haste_edge.ops.registry import Held, register, step_state
from haste_edge.scratch import scratch
from haste_edge import mapped
from haste_edge import threads
from haste_edge.threads import kernel_threads, numba_single_thread

CONV_ATTRS = ("kernel_shape", "strides", "dilations", "pads", "group", "activation", "clip_min", "clip_max")


# ---------------------------------------------------------------------------------------------
# shapes, MACs
# ---------------------------------------------------------------------------------------------

def _geometry(attrs):
    """(kh, kw, sh, sw, dh, dw, pt, pl, pb, pr) as Python ints (Numba wants int64 scalars)."""
    kh, kw = (int(v) for v in attrs["kernel_shape"])
    sh, sw = (int(v) for v in attrs["strides"])
    dh, dw = (int(v) for v in attrs["dilations"])
    pt, pl, pb, pr = (int(v) for v in attrs["pads"])
    return kh, kw, sh, sw, dh, dw, pt, pl, pb, pr


def _out_size(n, k, s, d, p0, p1):
    """Output length of a sliding window of k taps (dilation d) with stride s over p0 + n + p1."""
    return (n + p0 + p1 - d * (k - 1) - 1) // s + 1


def conv_infer(in_shapes, attrs):
    x, w = in_shapes[0], in_shapes[1]
    b = in_shapes[2] if len(in_shapes) > 2 else None
    if x is None or w is None or len(x) != 4 or len(w) != 4:
        raise ValueError(f"Conv: expects 4-D X and W (2-D conv only), got X {x}, W {w}")
    kh, kw, sh, sw, dh, dw, pt, pl, pb, pr = _geometry(attrs)
    group = int(attrs["group"])
    n, c_in, h, wd = x
    c_out, c_per_group = w[0], w[1]
    if group < 1 or c_in % group or c_out % group or c_in // group != c_per_group:
        raise ValueError(
            f"Conv: channel mismatch: X {tuple(x)} has {c_in} channels but W {tuple(w)} with group={group} "
            f"expects {c_per_group * group} (and C_out {c_out} divisible by group)")
    if (w[2], w[3]) != (kh, kw):
        raise ValueError(f"Conv: kernel_shape {[kh, kw]} does not match W {tuple(w)}")
    if b is not None and tuple(b) != (c_out,):
        raise ValueError(f"Conv: bias shape {tuple(b)} should be ({c_out},)")
    if min(sh, sw, dh, dw) < 1 or min(pt, pl, pb, pr) < 0:
        raise ValueError(f"Conv: invalid strides/dilations/pads in {attrs}")
    ho = _out_size(h, kh, sh, dh, pt, pb)
    wo = _out_size(wd, kw, sw, dw, pl, pr)
    if ho < 1 or wo < 1:
        raise ValueError(f"Conv: kernel {[kh, kw]} (dilations {[dh, dw]}) larger than padded input {tuple(x)}")
    return [(n, c_out, ho, wo)]


def conv_macs(in_shapes, out_shapes, attrs):
    n, c_out, ho, wo = out_shapes[0]
    _, c_per_group, kh, kw = in_shapes[1]
    return int(n) * int(c_out) * int(ho) * int(wo) * int(c_per_group) * int(kh) * int(kw)


def _clip_bounds(attrs):
    """The fused activation as a clamp [lo, hi]: none = (-inf, inf), Relu = (0, inf), Clip = (min, max)."""
    act = attrs.get("activation", "") or ""
    if act == "":
        return False, -np.inf, np.inf
    if act == "Relu":
        return True, 0.0, np.inf
    if act == "Clip":
        lo, hi = attrs.get("clip_min"), attrs.get("clip_max")
        return True, (-np.inf if lo is None else float(lo)), (np.inf if hi is None else float(hi))
    raise ValueError(f"Conv: unsupported fused activation {act!r}")


# ---------------------------------------------------------------------------------------------
# reference (oracle)
# ---------------------------------------------------------------------------------------------

def conv_sums(x, w, attrs) -> np.ndarray:
    """The conv's sums in float64, no bias: y[n,o,p,q] = sum_{c,i,j} w[o,c,i,j] * xpad[n, g*Cg + c, p*sh + i*dh, q*sw + j*dw]."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    kh, kw, sh, sw, dh, dw, pt, pl, pb, pr = _geometry(attrs)
    group = int(attrs["group"])
    (n, c_out, ho, wo), = conv_infer([x.shape, w.shape], attrs)
    c_in_g, c_out_g = x.shape[1] // group, c_out // group
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    y = np.zeros((n, c_out, ho, wo))
    for g in range(group):
        xg = xp[:, g * c_in_g:(g + 1) * c_in_g]
        wg = w[g * c_out_g:(g + 1) * c_out_g]
        for i in range(kh):
            for j in range(kw):
                # input pixels seen by tap (i, j) for every output position: a strided slice
                patch = xg[:, :, i * dh:i * dh + sh * (ho - 1) + 1:sh, j * dw:j * dw + sw * (wo - 1) + 1:sw]
                y[:, g * c_out_g:(g + 1) * c_out_g] += np.einsum("nchw,oc->nohw", patch, wg[:, :, i, j])
    return y


def conv_reference(inputs, attrs):
    """Direct definition: y = conv_sums(x, w) + b[o], then the fused activation and residual."""
    b = inputs[2] if len(inputs) > 2 else None
    conv_infer([np.shape(inputs[0]), np.shape(inputs[1]), None if b is None else np.shape(b)], attrs)
    y = conv_sums(inputs[0], inputs[1], attrs)
    if b is not None:
        y += np.asarray(b, dtype=np.float64)[None, :, None, None]
    has_act, lo, hi = _clip_bounds(attrs)
    if has_act:
        y = np.minimum(np.maximum(y, lo), hi)
    y = y.astype(np.float32)
    if len(inputs) > 3 and inputs[3] is not None:        # the residual Add (runtime.py), then its Relu
        y = y + np.asarray(inputs[3], dtype=np.float32)
        if attrs.get("residual_activation") == "Relu":
            y = np.maximum(y, np.float32(0.0))
    return [y]


def add_residual(y, r, attrs):
    """y = y + r, then Relu if attrs' residual_activation says so: the Add (and Relu) after a Conv
    that the runtime runs in the conv's step, while y is in cache. NaN stays NaN, as in Relu.
    y and r both NCHW or both channel-blocked (5-D)."""
    f, args = _residual_call(y, np.ascontiguousarray(r, dtype=np.float32), attrs)
    f(*args)


def _residual_lo(attrs) -> float:
    """The floor after the residual Add: 0 with its Relu, else none."""
    return 0.0 if attrs.get("residual_activation") == "Relu" else -np.inf


def _residual_call(y, r, attrs):
    """add_residual as (function, arguments); r C-contiguous float32."""
    lo = _residual_lo(attrs)
    if y.ndim == 5:
        return conv_blocked.residual_call(y, r, lo)
    return _add_clamped, (y.reshape(-1), r.reshape(-1), np.float32(lo))


@njit
def _add_clamped(y, r, lo):
    for i in range(y.shape[0]):
        v = y[i] + r[i]
        y[i] = lo if v < lo else v


# ---------------------------------------------------------------------------------------------
# Numba kernels
# ---------------------------------------------------------------------------------------------

@njit(parallel=True)
def _im2col(x, ph, cols, kh, kw, sh, sw, dh, dw, pt, pl, hq, wq, na, nb, gather, n_seg, seg):
    """im2col of one image x (C, H, W) by way of stride phases, parallel over channels.

    Per channel c: its stride phases into ph[c] (C, sh, sw, hq*wq), then (if gather) its kh*kw
    rows of cols, row (c*kh + i)*kw + j being phase (i*dh % sh, j*dw % sw) read from offset
    (i*dh // sh)*wq + j*dw // sw, data the phase split has just left in L1. Two column layouts:
    - wide (n_seg = 1, seg = (ho-1)*wq + wo): column p*wq + q holds output pixel (p, q); each
      row is one contiguous copy, the q >= wo columns are junk the epilogue drops;
    - exact (n_seg = ho, seg = wo): column p*wo + q, one copy per output row; no junk columns
      for the GEMM, which matters when wq - wo is large next to wo (small planes).
    Without gather (1x1 kernels) ph[:, 0, 0] itself is the wide column matrix."""
    for c in prange(x.shape[0]):
        split_phases(x[c], ph[c], sh, sw, pt, pl, hq, wq, na, nb)
        if not gather:
            continue
        for ij in range(kh * kw):
            i = ij // kw
            j = ij % kw
            phase = ph[c, i * dh % sh, j * dw % sw]
            row = cols[c * kh * kw + ij]
            start = (i * dh // sh) * wq + j * dw // sw
            for p in range(n_seg):
                src = phase[start + p * wq:start + p * wq + seg]
                d = row[p * seg:(p + 1) * seg]
                for t in range(seg):
                    d[t] = src[t]


@njit(parallel=True)
def _wide_to_out(wide, y, bias, lo, hi, wq):
    """Epilogue from the wide GEMM result: y[o, p, q] = clamp(wide[o, p*wq + q] + bias[o], lo, hi)."""
    c_out, ho, wo = y.shape
    lo32, hi32 = np.float32(lo), np.float32(hi)   # keep the arithmetic in float32
    for o in prange(c_out):
        bv = bias[o]
        for p in range(ho):
            src = wide[o, p * wq:p * wq + wo]
            d = y[o, p]
            for q in range(wo):
                d[q] = min(max(src[q] + bv, lo32), hi32)


@njit(parallel=True)
def _bias_act(y, bias, lo, hi):
    """In place y[n, c, :] = clamp(y[n, c, :] + bias[c], lo, hi); y is (N, C, L)."""
    n_img, c_out, length = y.shape
    lo32, hi32 = np.float32(lo), np.float32(hi)
    for r in prange(n_img * c_out):
        n = r // c_out
        c = r % c_out
        bv = bias[c]
        row = y[n, c]
        for k in range(length):
            row[k] = min(max(row[k] + bv, lo32), hi32)


@njit(parallel=True)
def _im2row(x, xcl, rows, kh, kw, sh, sw, dh, dw, pt, pl, ho, wo):
    """im2row of one image x (C, H, W) by way of a zero-padded channels-last copy xcl (Hp, Wp, C).

    rows[p*wo + q, (i*kw + j)*C + c] = xpad[c, p*sh + i*dh, q*sw + j*dw]: each output pixel's
    patch is one row, taps (i, j) outer and channels inner, so a patch is kh runs of kw*C
    contiguous floats (kh*kw runs of C when dilated) instead of the C*kh*kw*ho runs of wo floats
    an exact im2col copies; on the 7x7 and 4x4 planes those short copies cost as much as the GEMM.
    """
    c, h, w = x.shape
    hp, wp = xcl.shape[0], xcl.shape[1]
    for r in prange(hp):          # the padded channels-last copy, borders zeroed, row by row
        d = xcl[r]
        if r < pt or r >= pt + h:
            d[:, :] = 0.0
            continue
        d[:pl, :] = 0.0
        d[pl + w:, :] = 0.0
        for s in range(w):
            ds = d[pl + s]
            for ch in range(c):
                ds[ch] = x[ch, r - pt, s]
    xf = xcl.reshape(-1)
    run = kw * c if dw == 1 else c      # the kw taps of a kernel row are adjacent unless dilated
    n_runs = 1 if dw == 1 else kw
    for p in prange(ho):
        for q in range(wo):
            row = rows[p * wo + q]
            t = 0
            for i in range(kh):
                for jr in range(n_runs):
                    start = ((p * sh + i * dh) * wp + q * sw + jr * dw) * c
                    # slices indexed from 0: Numba drops the negative-index wraparound, LLVM
                    # vectorises the copy (indexing row[t + u] measured 2-3x slower)
                    src, d = xf[start:start + run], row[t:t + run]
                    for u in range(run):
                        d[u] = src[u]
                    t += run


@njit(parallel=True)
def _rows_to_out(yt, y, bias, lo, hi):
    """Epilogue from the pixel-major GEMM result: y[o, t] = clamp(yt[t, o] + bias[o], lo, hi),
    y (C_out, ho*wo). Parallel over blocks of 16 channels: a block's columns of yt are read
    together, so each cache line of yt is used 16 times while it is in L1."""
    n_pix, c_out = yt.shape
    lo32, hi32 = np.float32(lo), np.float32(hi)
    for blk in prange((c_out + 15) // 16):
        for o in range(blk * 16, min(c_out, blk * 16 + 16)):
            bv = bias[o]
            d = y[o]
            for t in range(n_pix):
                d[t] = min(max(yt[t, o] + bv, lo32), hi32)


@njit
def _tap_src(phases, ij, kw, sh, sw, dh, dw, wq, span):
    """The span-long run of phases (sh, sw, hq*wq) that tap ij = i*kw + j multiplies."""
    i, j = ij // kw, ij % kw
    start = (i * dh // sh) * wq + j * dw // sw
    return phases[i * dh % sh, j * dw % sw, start:start + span]


@njit(parallel=True)
def _depthwise(x, w, bias, y, mult, sh, sw, dh, dw, pt, pl, lo, hi, na, nb, n_blocks):
    """Depthwise conv (output channel oc reads input channel oc // mult), bias and clamp fused.

    x (N, C, H, W), w (C*mult, kh, kw), bias (C*mult,), y (N, C*mult, ho, wo).
    Per plane the padded input is split into stride phases (split_phases); output pixel (p, q)
    is accumulated at acc[p*wq + q], so each tap is one long contiguous axpy over the flattened
    plane (the wq - wo junk columns per row cost less than per-row loop overhead on the 7x7 and
    14x14 planes). Parallel over n_blocks blocks of planes, each with its own scratch."""
    n_img, c_in, h, wd = x.shape
    c_out, kh, kw = w.shape
    ho, wo = y.shape[2], y.shape[3]
    hq = ho + ((kh - 1) * dh) // sh      # phase rows / cols any output reaches
    wq = wo + ((kw - 1) * dw) // sw
    span = (ho - 1) * wq + wo            # flat extent of acc holding all outputs
    lo32, hi32 = np.float32(lo), np.float32(hi)
    n_planes = n_img * c_out
    per_block = (n_planes + n_blocks - 1) // n_blocks
    for blk in prange(n_blocks):
        phases = np.empty((sh, sw, hq * wq), dtype=np.float32)
        acc = np.empty(span, dtype=np.float32)
        for r in range(blk * per_block, min(n_planes, (blk + 1) * per_block)):
            n = r // c_out
            oc = r % c_out
            split_phases(x[n, oc // mult], phases, sh, sw, pt, pl, hq, wq, na, nb)
            bv = bias[oc]
            for t in range(span):
                acc[t] = bv
            # taps three at a time: one pass over acc per three multiply-adds (acc loads and
            # stores, not the arithmetic, bound this loop)
            n_taps = kh * kw
            for ij in range(0, n_taps, 3):
                s0 = _tap_src(phases, ij, kw, sh, sw, dh, dw, wq, span)
                w0 = w[oc, ij // kw, ij % kw]
                if ij + 2 < n_taps:
                    s1 = _tap_src(phases, ij + 1, kw, sh, sw, dh, dw, wq, span)
                    s2 = _tap_src(phases, ij + 2, kw, sh, sw, dh, dw, wq, span)
                    w1 = w[oc, (ij + 1) // kw, (ij + 1) % kw]
                    w2 = w[oc, (ij + 2) // kw, (ij + 2) % kw]
                    for t in range(span):
                        acc[t] += w0 * s0[t] + w1 * s1[t] + w2 * s2[t]
                elif ij + 1 < n_taps:
                    s1 = _tap_src(phases, ij + 1, kw, sh, sw, dh, dw, wq, span)
                    w1 = w[oc, (ij + 1) // kw, (ij + 1) % kw]
                    for t in range(span):
                        acc[t] += w0 * s0[t] + w1 * s1[t]
                else:
                    for t in range(span):
                        acc[t] += w0 * s0[t]
            for p in range(ho):
                yrow = y[n, oc, p]
                arow = acc[p * wq:p * wq + wo]
                for q in range(wo):
                    yrow[q] = min(max(arow[q], lo32), hi32)


# ---------------------------------------------------------------------------------------------
# fast kernel
# ---------------------------------------------------------------------------------------------



def _phases_used(k, s, d):
    """How many stride phases along one axis the taps 0, d, ..., (k-1)*d touch (a prefix 0..m-1
    when d == 1; all s otherwise, to keep it simple)."""
    return min(s, k) if d == 1 else s


# Depthwise convs run channel-blocked (conv_depthwise_blocked) while one block's scratch stays
# under this size, else per plane (_depthwise). The blocked kernel was faster on every depthwise
# layer of MobileNetV2 and EfficientNet-Lite0, 7x7 to 112x112 maps, 3x3 and 5x5, strides 1 and 2:
# 0.31-0.88x the time of the per-plane kernels it replaced (benchmarks/results/depthwise_x86_64_t1.md).
_DW_BLOCK_MAX_BYTES = 16 << 20
_DW_BLOCKED = True

# Junk columns (wq - wo per output row) the wide im2col layout may cost the GEMM, relative to wo,
# before the exact layout (one copy per output row) wins; measured on 28/14/7/4-pixel planes.
_WIDE_MAX_JUNK = 0.15


# Group=1 convs with a kernel larger than 1x1, at least this many input channels (a patch row is
# then made of runs of >= kw*16 floats) and at most this many output pixels go through _im2row.
# Measured on the ResNet-18 layers, where it beats the phase im2col on every 3x3 layer from 28x28
# down (1.1-1.5x per layer); on the 1x1 stride-2 layers it is a wash (it would transpose pixels
# the conv skips), and larger planes are untested: both keep the phase im2col.
_ROW_MIN_CHANNELS = 16
_ROW_MAX_PIXELS = 1024
# im2row GEMM as (pixels x K) @ (K x C_out) from this many output pixels up; below, OpenBLAS
# does better with the pixels as N (measured: 16 pixels 1.6x faster as N, 49 pixels 1.1x as M).
_ROW_PIXEL_MAJOR_MIN = 32


# Which conv path runs (HASTE_EDGE_CONV). "auto" (default): on one thread every group >= 1 conv on
# the microkernel (conv_direct), but pointwise ones on maps under _POINTWISE_MICRO_MIN_PIXELS that
# the lanes layout does not take (on 7x7 maps OpenBLAS's pointwise products were 2-4 % faster than
# the pixel-wide tiles, benchmarks/results/layers_efficientnet_lite0_t1.md of fae97eb; the lanes
# tile faster than OpenBLAS, benchmarks/results/conv_rule_no-lanes_x86_64.md). On more threads the
# same for small convs (_SERIAL_SMALL_MACS), the rest on OpenBLAS: the microkernel's
# parallel regions, one per conv, each wake the pool's sleeping workers and lost to OpenBLAS
# (benchmarks/results/conv_rule_x86_64.md). Large 3x3 convs on Winograd F(4x4) at any thread count
# (_WINOGRAD4). "direct" puts every non-depthwise conv on the microkernel, "blas" none; "winograd"
# is "direct" plus Winograd F(2x2,3x3) for 3x3 stride-1 convs with at least _WINOGRAD_MIN_PIXELS
# output pixels; neither of them uses F(4x4).
_CONV_PATH = env_choice("HASTE_EDGE_CONV", ("auto", "blas", "direct", "winograd"), "auto")
_DIRECT = _CONV_PATH in ("direct", "winograd")
_AUTO = _CONV_PATH == "auto"
_POINTWISE_MICRO_MIN_PIXELS = 100
_WINOGRAD = _CONV_PATH == "winograd"
_WINOGRAD_MIN_PIXELS = 49
# Winograd F(4x4,3x3) ("auto", any thread count): 3x3 stride-1 convs with at least this many
# output pixels and input channels per group. Per layer against the implicit GEMM, 1 thread, on
# AMD Zen 4 (python benchmarks/bench_winograd.py, benchmarks/results/winograd4_layers_x86_64.md):
# 0.54-0.82x the time from 28x28 maps with 64+ input channels; 1.05-1.31x on 14x14 and 7x7 maps or
# with 32 channels. Whole models: benchmarks/results/conv_rule_no-winograd4_x86_64.md. With
# full-width AVX-512 FMAs (microkernel.TARGET["fma512"]: Intel) the blocked lanes path took
# 0.71-0.88x Winograd's time on ResNet-18's 56x56 64-channel convs, 1.05-1.11x on its 28x28
# 128-channel ones; whole ResNet-18 at 224 0.97x at 1 thread, 0.88x at 2, VGG-11 1.01-1.03x
# (benchmarks/results/conv_rule_winograd4-128_x86_64.md): there from 128 channels. On more
# than one thread too: the transforms scale poorly (they move V and M through memory), and on Zen 4
# at 2 threads ResNet-18 at 224 took 0.92x the time from 128 channels, VGG-11 1.02x
# (results/conv_rule_winograd4-128_x86_64.md, AMD run).
_WINOGRAD4 = True
_WINOGRAD4_MIN_PIXELS = 784
_WINOGRAD4_MIN_CHANNELS = 128 if mk.TARGET["fma512"] else 64
_WINOGRAD4_MIN_CHANNELS_POOL = 128


def winograd4_rule(attrs, group, pixels, c_in_g, threads) -> bool:
    """Whether a conv takes Winograd F(4x4,3x3) (the rule above)."""
    least = _WINOGRAD4_MIN_CHANNELS if threads == 1 else _WINOGRAD4_MIN_CHANNELS_POOL
    return (_WINOGRAD4 and winograd_applicable(attrs, group) and pixels >= _WINOGRAD4_MIN_PIXELS
            and c_in_g >= least)

# Winograd F(4x4,3x3) on channel-blocked tensors (conv_winograd4_blocked): 3x3 stride-1 convs
# with at least these many output pixels and input channels, when the runtime keeps both their
# input and output blocked. Thread-independent: the runtime's layout follows it. From 14x14 maps
# rather than 28x28 (benchmarks/results/conv_rule_winograd4-blocked-784_x86_64.md); on 7x7 maps the
# products are bound by reading U (36 x C_in x C_out floats) and lost to the lanes conv.
_WINOGRAD4_BLOCKED = True
_WINOGRAD4_BLOCKED_MIN_PIXELS = 196
_WINOGRAD4_BLOCKED_MIN_CHANNELS = 32


def winograd4_blocked_rule(attrs, group, pixels, c_in_g) -> bool:
    """Whether a conv between blocked tensors takes Winograd F(4x4,3x3) (the rule above)."""
    return (_WINOGRAD4_BLOCKED and BLOCKED_LAYOUT and winograd_applicable(attrs, group)
            and pixels >= _WINOGRAD4_BLOCKED_MIN_PIXELS and c_in_g >= _WINOGRAD4_BLOCKED_MIN_CHANNELS)


# microkernel convs below this many MACs run on the calling thread (waking the pool's sleeping
# workers cost 0.1-0.3 ms per parallel loop at 2 threads here: README "Performance")
_MICRO_SERIAL_MACS = 1_000_000
# On more threads, convs below this many MACs take the one-thread rule and run on the calling
# thread: a parallel region per small conv cost more than the second core gave
# (benchmarks/results/conv_rule_no-serial-small_x86_64.md, measured before pointwise convs joined)
_SERIAL_SMALL_MACS = 16_000_000
# ... pointwise ones included: on OpenBLAS's two threads MobileNetV2 took 1.16-1.23x the time,
# EfficientNet-Lite0 1.04-1.15x, in two runs (each small product waits for OpenBLAS's threads;
# benchmarks/results/conv_rule_pointwise-small-blas_x86_64.md holds the second)
_SERIAL_SMALL_POINTWISE = True


# Output planes up to this many pixels run the Numba parts of the GEMM paths single-threaded.
# Measured at 2 threads on the ResNet-18 layers (28x28 and smaller): every Numba kernel there
# was as fast or faster on one thread (idle OpenMP workers sleep, see jit.py, and waking one
# takes tens of us), while OpenBLAS still gains from its second thread.
_SERIAL_MAX_PIXELS = 1024


class _Plan:
    """Everything conv() derives from the attrs and shapes, computed once per node: the Python
    work per call is then a few attribute reads, which matters on 4x4 and 7x7 layers."""

    def __init__(self, attrs, x_shape, w_shape, in_blocked=False, out_blocked=False):
        """x_shape the logical (NCHW) input shape; in_blocked / out_blocked: the input / output is
        channel-blocked (conv_blocked; the runtime chose it by blocked_output)."""
        self.attrs = dict(attrs)       # snapshot, compared on lookup
        self.shapes = (x_shape, w_shape)
        self.layouts = self.in_blocked, self.out_blocked = in_blocked, out_blocked
        self.threads = kernel_threads()     # the path may depend on it: made afresh if it changes
        (n, c_out, ho, wo), = conv_infer([x_shape, w_shape], attrs)
        self.out_shape = (n, c_out, ho, wo)
        self.geo = kh, kw, sh, sw, dh, dw, pt, pl, pb, pr = _geometry(attrs)
        self.group = group = int(attrs["group"])
        self.has_act, self.lo, self.hi = _clip_bounds(attrs)
        self.zero_bias = np.zeros(c_out, np.float32)
        c_in = x_shape[1]
        self.c_in_g, self.c_out_g = c_in // group, c_out // group
        self.k = self.c_in_g * kh * kw
        self.na, self.nb = _phases_used(kh, sh, dh), _phases_used(kw, sw, dw)
        self.hq = ho + ((kh - 1) * dh) // sh          # phase rows / cols any output reaches
        self.wq = wo + ((kw - 1) * dw) // sw
        # GEMM paths on small planes run their Numba kernels (copies, epilogues) in one thread
        # and leave the threads to OpenBLAS: waking a sleeping worker costs more than it saves
        self.serial = ho * wo <= _SERIAL_MAX_PIXELS
        macs = conv_macs([x_shape, w_shape], [self.out_shape], attrs)
        # 1x1, stride 1, unpadded: the image itself is the GEMM's matrix
        self.pointwise = kh == kw == 1 and sh == sw == 1 and pt == pl == pb == pr == 0
        self.lanes = use_lanes(self, self.c_out_g)    # conv_direct's layout, if that path runs
        if threads.ONE_POOL:         # one thread's paths, parallel on Numba's pool unless tiny
            one_thread_rule = True
            self.micro_serial = macs < _MICRO_SERIAL_MACS
        else:
            # small convs take the one-thread rule on any thread count (_SERIAL_SMALL_MACS)
            one_thread_rule = self.threads == 1 or (macs < _SERIAL_SMALL_MACS
                                                    and (_SERIAL_SMALL_POINTWISE or not self.pointwise))
            # the microkernel paths have no BLAS to give the threads to: parallel unless tiny, or
            # taken by the one-thread rule on more threads (then on the calling thread)
            self.micro_serial = macs < _MICRO_SERIAL_MACS or (self.threads > 1 and one_thread_rule)
        self.micro = None      # the prepared paths' state (_PREPARED), made on the first call with W
        if in_blocked and out_blocked and winograd4_blocked_rule(attrs, group, ho * wo, self.c_in_g):
            self.path = "winograd4_blocked"          # Winograd F(4x4,3x3) on VL-channel vectors
        elif in_blocked or out_blocked:              # blocked_output said yes
            self.path = "depthwise_blocked" if group > 1 else "blocked"
        elif group > 1 and w_shape[1] == 1:
            blocked = _DW_BLOCKED and depthwise_block_bytes(self) <= _DW_BLOCK_MAX_BYTES
            self.path = "depthwise_blocked" if blocked else "depthwise"
        elif _WINOGRAD and winograd_applicable(attrs, group) and ho * wo >= _WINOGRAD_MIN_PIXELS:
            self.path = "winograd"                   # Winograd F(2x2,3x3) on the microkernel
        elif _AUTO and winograd4_rule(attrs, group, ho * wo, self.c_in_g, self.threads):
            self.path = "winograd4"                  # Winograd F(4x4,3x3) on the microkernel
        elif _DIRECT or (_AUTO and one_thread_rule
                         and not (self.pointwise and ho * wo < _POINTWISE_MICRO_MIN_PIXELS
                                  and not self.lanes)):
            self.path = "direct"                     # implicit GEMM on the microkernel (conv_direct)
        elif self.pointwise:
            self.path = "gemm"                       # the image viewed as (C_in, H*W) is the matrix
        elif group == 1 and kh * kw > 1 and c_in >= _ROW_MIN_CHANNELS and ho * wo <= _ROW_MAX_PIXELS:
            self.path = "im2row"
            self.xcl_shape = (x_shape[2] + pt + pb, x_shape[3] + pl + pr, c_in)
            self.xcl_size = self.xcl_shape[0] * self.xcl_shape[1] * c_in
            # GEMM orientation: pixel-major (rows @ W^T, epilogue transposes) unless the pixels
            # are too few for OpenBLAS to use well as M; then W @ rows^T straight into y
            self.pixel_major = ho * wo >= _ROW_PIXEL_MAJOR_MIN
            self.packed = (None, None)               # (source W, packed W): see _packed_weights
        else:
            self.path = "im2col"
            self.gather = kh * kw > 1
            exact = self.gather and self.wq - wo > _WIDE_MAX_JUNK * wo
            self.n_seg, self.seg = (ho, wo) if exact else (1, (ho - 1) * self.wq + wo)
            self.length = self.n_seg * self.seg      # GEMM columns
            # the GEMM result has the output's layout unless it is wide with junk columns
            self.wide = self.length != ho * wo


# Convs the plan keeps channel-blocked tensors around (runtime.py, conv_blocked): depthwise ones
# (multiplier 1) and group-1 ones the microkernel would run, whose output rows a lanes tile divides.
BLOCKED_LAYOUT = True      # read when a plan is made (benchmarks and tests compare both)
# ... and whose weight panel (K x NR floats, streamed once per pixel block) stays in the L2 cache:
# with ResNet-18's 256- and 512-channel 3x3 convs blocked too (K = 2304 and 4608: 0.56 and 1.1 MiB
# panels) the whole net took 1.12x the time on 1 thread (benchmarks/results/versions_57745ef_x86_64.md)
# ... but for convs reading maps of at least _BLOCKED_BIG_MAP_PIXELS pixels (panels up to
# _BLOCKED_BIG_MAP_MAX_PANEL_BYTES): ResNet-18 at 224 has its 14x14 convs blocked then (they read and write blocked
# tensors: Winograd), the stride-2 256 -> 512 conv reading them too
# (benchmarks/results/conv_rule_blocked-panels-512k_x86_64.md)
_BLOCKED_MAX_PANEL_BYTES = 512 << 10
_BLOCKED_BIG_MAP_PIXELS = 196
_BLOCKED_BIG_MAP_MAX_PANEL_BYTES = 2 << 20


def blocked_output(attrs, x_shape, w_shape) -> int | None:
    """The blocks of VL channels this conv's output has when channel-blocked, None if the conv
    does not run on that layout (then its input and output stay NCHW). Any thread count: the
    runtime's layout must not depend on it."""
    if not BLOCKED_LAYOUT or len(x_shape) != 4 or len(w_shape) != 4:
        return None
    plan = _Plan(attrs, x_shape, w_shape)
    c_out = plan.out_shape[1]
    if plan.group > 1:
        depthwise = w_shape[1] == 1 and plan.group == x_shape[1] == c_out
        if depthwise and plan.path == "depthwise_blocked":
            return conv_blocked.blocks(c_out)
        return None
    ho, wo = plan.out_shape[2], plan.out_shape[3]
    v = conv_blocked.lanes_variant(plan)
    if winograd4_blocked_rule(attrs, 1, ho * wo, plan.c_in_g):
        # Winograd when the input comes blocked too, else the lanes product (then on any panel size)
        nb = conv_winograd4_blocked.output_blocks(ho, wo, c_out)
        return None if v is None else max(nb, conv_blocked.out_blocks(c_out, v))
    if winograd4_rule(attrs, 1, ho * wo, plan.c_in_g, plan.threads):
        return None                                  # Winograd's rule (NCHW in and out)
    big_map = x_shape[2] * x_shape[3] >= _BLOCKED_BIG_MAP_PIXELS
    most = _BLOCKED_BIG_MAP_MAX_PANEL_BYTES if big_map else _BLOCKED_MAX_PANEL_BYTES
    if v is None or 4 * plan.k * mk.lanes_dims_py(v)[1] > most:
        return None
    return conv_blocked.out_blocks(c_out, v)


_plans: dict = {}


def _get_plan(attrs, x_shape, w_shape, layouts=(False, False)):
    """The node's _Plan for these shapes: kept on the plan step (StepAttrs.state) when called
    from a model, so it lives and dies with the model; else in a bounded module cache keyed by
    the attrs object, where the snapshot and shape checks make a recycled id or an edited dict
    harmless."""
    state = step_state(attrs)
    if state is not None:
        plan = state.get("conv")
        if (plan is None or plan.shapes != (x_shape, w_shape) or plan.layouts != layouts
                or plan.threads != kernel_threads()):
            plan = state["conv"] = _Plan(attrs, x_shape, w_shape, *layouts)
        return plan
    entry = _plans.get(id(attrs))
    if (entry is not None and entry.shapes == (x_shape, w_shape) and entry.attrs == attrs
            and entry.layouts == layouts and entry.threads == kernel_threads()):
        return entry
    if len(_plans) > 64:       # many throwaway attrs dicts (tests): don't grow
        _plans.clear()
    plan = _plans[id(attrs)] = _Plan(attrs, x_shape, w_shape, *layouts)
    return plan


def _packed_weights(plan, w):
    """W (C_out, C_in, kh, kw) in im2row's tap-major order, packed once per node and weight array:
    (K, C_out) for the pixel-major GEMM, (C_out, K) otherwise (K = kh*kw*C_in).

    Weights are constants of the graph: kept while the same array object comes in (the plan
    holds a reference, so its id cannot be recycled); a different array is packed afresh."""
    src, packed = plan.packed
    if src is not w:
        c_out = w.shape[0]
        taps_last = w.transpose(0, 2, 3, 1).reshape(c_out, -1)         # (C_out, kh*kw*C_in)
        packed = np.ascontiguousarray(taps_last.T if plan.pixel_major else taps_last)
        plan.packed = (w, packed)
    return packed


# paths whose per-node state (packed weights, offsets) is made from W on the first call
_PREPARED = {"direct": DirectConv, "winograd": WinogradConv, "winograd4": Winograd4Conv,
             "depthwise_blocked": BlockedDepthwiseConv, "blocked": BlockedConv,
             "winograd4_blocked": BlockedWinograd4Conv}

_NO_COLS = np.empty((1, 1), dtype=np.float32)   # cols placeholder when nothing is gathered


def _held_path(inputs, attrs, outs):
    """(prepared path, x, y, bias, plan) when this step's last call was on these same arrays and
    thread count (its state's "again"), else None."""
    state = step_state(attrs)
    again = state.get("again") if state is not None else None
    if again is None:
        return None
    x, w, b, o, threads, m, bias, pl_ = again.items
    if (x is inputs[0] and w is inputs[1] and o is outs and threads == kernel_threads()
            and (len(inputs) < 3 or b is inputs[2])):
        return m, x, o[0], bias, pl_
    return None


def conv_calls(inputs, attrs, outs):
    """The compiled calls conv() makes on these arrays (a plan's replay, registry.Prepared), or
    None when it cannot list them (no prepared path held for them)."""
    held = _held_path(inputs, attrs, outs)
    if held is None:
        return None
    m, x, y, bias, pl_ = held
    if len(inputs) < 4 or inputs[3] is None:
        return m.calls(x, y, bias, pl_)
    r = inputs[3]
    if not (r.flags.c_contiguous and r.dtype == np.float32):
        return None
    if m.takes_residual:
        return m.calls(x, y, bias, pl_, (r, _residual_lo(attrs)))
    return m.calls(x, y, bias, pl_) + [_residual_call(y, r, attrs)]


@register("Conv", infer=conv_infer, reference=conv_reference, macs=conv_macs, attrs=CONV_ATTRS, calls=conv_calls)
def conv(inputs, attrs, outs=None):
    """The Conv kernel; a 4th input is a residual the runtime fused in (add_residual). The input,
    the output buffer (outs) and the residual may be channel-blocked (5-D: conv_blocked)."""
    # a plan step's next call on the same arrays (all but a graph input's conv: the plan's buffers
    # and weights are the same objects every run) goes straight to its prepared path, the checks
    # and lookups of _conv done: they cost about as much as a small layer's arithmetic
    held = _held_path(inputs, attrs, outs)
    if held is not None:
        m, x, y, bias, pl_ = held
        m.run(x, y, bias, pl_)
    else:
        outs = _conv(inputs[:3], attrs, outs)
    if len(inputs) > 3 and inputs[3] is not None:
        add_residual(outs[0], inputs[3], attrs)
    return outs


def _conv(inputs, attrs, outs):
    x = np.ascontiguousarray(inputs[0], dtype=np.float32)
    w = np.ascontiguousarray(inputs[1], dtype=np.float32)
    b = inputs[2] if len(inputs) > 2 else None
    layouts = (x.ndim == 5, outs is not None and outs[0].ndim == 5)
    x_shape = (x.shape[0], w.shape[1] * int(attrs["group"]), x.shape[2], x.shape[3]) if layouts[0] else x.shape
    pl_ = _get_plan(attrs, x_shape, w.shape, layouts)
    if outs is None:
        outs = [np.empty(pl_.out_shape, dtype=np.float32)]
    y = outs[0]
    n_img, c_out, ho, wo = pl_.out_shape
    bias = pl_.zero_bias if b is None else np.ascontiguousarray(b, dtype=np.float32)
    kh, kw, sh, sw, dh, dw, pt, pl, _, _ = pl_.geo
    lo, hi = pl_.lo, pl_.hi

    if pl_.path == "depthwise":
        # direct kernel, epilogue included; a few blocks of planes per thread balance the load
        # without a scratch allocation per plane (each block allocates its phases and accumulator)
        n_blocks = min(n_img * c_out, 4 * kernel_threads())
        limits.check(4 * n_blocks * (sh * sw * pl_.hq * pl_.wq + ho * pl_.wq),
                     f"depthwise conv on {x.shape[2]}x{x.shape[3]} planes", InputError)
        _depthwise(x, w.reshape(c_out, kh, kw), bias, y, c_out // x.shape[1], sh, sw, dh, dw, pt, pl,
                   lo, hi, pl_.na, pl_.nb, n_blocks)
        return outs

    prepared = _PREPARED.get(pl_.path)             # the microkernel paths, packed on the first call
    if prepared is not None:
        m = pl_.micro
        if m is None or m.w_src is not w:
            m = pl_.micro = prepared(w, pl_)
            mapped.release(w)                      # packed: the file's pages need not stay (mapped.py)
        m.run(x, y, bias, pl_)
        state = step_state(attrs)
        if state is not None and x is inputs[0] and w is inputs[1] and (b is None or bias is b):
            # conv() may call m.run directly while these arrays come in again (same shapes)
            state["again"] = Held(x, w, b, outs, pl_.threads, m, bias, pl_)
        return outs
    if not pl_.serial:
        return _dense(pl_, x, w, b, bias, y, outs)
    with numba_single_thread():        # small map: threads cost more than they save
        return _dense(pl_, x, w, b, bias, y, outs)


def _dense(pl_, x, w, b, bias, y, outs):
    """conv() for group >= 1 (not depthwise): im2row or im2col, OpenBLAS, epilogue."""
    n_img, c_out, ho, wo = pl_.out_shape
    kh, kw, sh, sw, dh, dw, pt, pl, _, _ = pl_.geo
    lo, hi = pl_.lo, pl_.hi
    if pl_.path == "im2row":
        wpk = _packed_weights(pl_, w)
        xcl = scratch("channels_last", pl_.xcl_size).reshape(pl_.xcl_shape)
        rows = scratch("rows", ho * wo * pl_.k).reshape(ho * wo, pl_.k)
        # the pixel-major GEMM result (shares the slot of im2col's wide result: never both live)
        yt = scratch("wide", ho * wo * c_out).reshape(ho * wo, c_out) if pl_.pixel_major else None
        for n in range(n_img):
            _im2row(x[n], xcl, rows, kh, kw, sh, sw, dh, dw, pt, pl, ho, wo)
            yn = y[n].reshape(c_out, ho * wo)
            if pl_.pixel_major:
                np.matmul(rows, wpk, out=yt)
                _rows_to_out(yt, yn, bias, lo, hi)
            else:
                np.matmul(wpk, rows.T, out=yn)
                if b is not None or pl_.has_act:
                    _bias_act(yn.reshape(1, c_out, ho * wo), bias, lo, hi)
        return outs

    # group >= 1: per image and group, columns then one sgemm straight into y (or the wide buffer)
    cig, cog, k, group = pl_.c_in_g, pl_.c_out_g, pl_.k, pl_.group
    w2 = w.reshape(c_out, k)                  # a view: W is C-contiguous
    y3 = y.reshape(n_img, c_out, ho * wo)     # a view: output buffers are C-contiguous
    if pl_.path == "im2col":
        hq, wq, length = pl_.hq, pl_.wq, pl_.length
        ph = scratch("phases", cig * sh * sw * hq * wq).reshape(cig, sh, sw, hq * wq)
        cols = scratch("cols", k * length).reshape(k, length) if pl_.gather else ph[:, 0, 0, :length]
        wide = scratch("wide", cog * length).reshape(cog, length) if pl_.wide else None
    for n in range(n_img):
        for g in range(group):
            xg = x[n, g * cig:(g + 1) * cig]
            gs = slice(g * cog, (g + 1) * cog)
            if pl_.path == "gemm":
                np.matmul(w2[gs], xg.reshape(cig, -1), out=y3[n, gs])
                continue
            _im2col(xg, ph, cols if pl_.gather else _NO_COLS, kh, kw, sh, sw, dh, dw, pt, pl,
                    hq, wq, pl_.na, pl_.nb, pl_.gather, pl_.n_seg, pl_.seg)
            if wide is None:
                np.matmul(w2[gs], cols, out=y3[n, gs])
            else:
                np.matmul(w2[gs], cols, out=wide)
                _wide_to_out(wide, y[n, gs], bias[gs], lo, hi, wq)
    if (pl_.path == "gemm" or wide is None) and (b is not None or pl_.has_act):
        _bias_act(y3, bias, lo, hi)
    return outs
