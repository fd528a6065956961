"""PROM's Numba kernels; reference.py defines what each computes.

Activations are quantised to int8 codes once per layer, then the sums run on the vector tiles of
tiles.py (int32 lanes in registers, 64 values per tile):
  ternary_pointwise   1x1 convs with ternary weights: per output channel the input rows of its +1
                      weights are added and those of its -1 weights subtracted, 64 pixels a tile;
                      no multiplication
  int8_conv           every other conv (3x3 stem, depthwise, int8 pointwise): per output channel
                      the sum over its nonzero taps of weight x codes, over "wide rows" (below)
  int8_gemm           the classifier
and each ends in the epilogue y = float32(acc) * scale[o] + bias[o], clamped to the fused activation.
Outputs are float32 NCHW, so PROM layers sit between float layers (Add, pooling) unchanged.
Each kernel is compiled twice: on the calling thread (small layers: a parallel region costs more
than it gains, as for the float convs) and parallel over output channels.
"""
from __future__ import annotations

import numpy as np

from haste_edge.jit import njit, prange
from haste_edge.prom.tiles import TILE_MAX, TILE_NV, VW, taps_tile, ternary_tile

TILE_NV_MAX = TILE_NV[-1]

# room past the last code a tile may read (its discarded lanes)
SLACK = TILE_MAX


@njit(inline="always")
def quantize_code(v, inv_scale):
    """clip(rint(v * inv_scale), -127, 127) as int8. Clamped before rounding (the same: the bounds
    are integers) and in float32: so the loops around it vectorise."""
    return np.int8(np.rint(min(max(v * inv_scale, np.float32(-127)), np.float32(127))))


def _quantize_rows(x, inv_scale, out):
    """out[i] = quantize_code(x[i]) for flat float32 x: one long loop."""
    for i in range(x.size):
        out[i] = quantize_code(x[i], inv_scale)


quantize_rows = njit(_quantize_rows)


@njit
def quantize_pad(x, inv_scale, pt, pl, out):
    """out (N, C, Hp, Wp) int8 = x (N, C, H, W) quantised at rows pt.., columns pl..; the border
    (the conv's zero padding: code 0 is 0.0 exactly) is left as it is: zero since preparation."""
    n_img, c, h, w = x.shape
    hp, wp = out.shape[2], out.shape[3]
    xf, of = x.reshape(-1), out.reshape(-1)
    for plane in range(n_img * c):
        for r in range(h):
            src, dst = (plane * h + r) * w, (plane * hp + pt + r) * wp + pl
            for q in range(w):
                of[dst + q] = quantize_code(xf[src + q], inv_scale)


def _ternary_pointwise(x, inv_scale, xq, row_ptr, row_mid, rows, scale, bias, lo, hi, y):
    """x (N, C_in, P) float32; output channel o adds the code rows rows[row_ptr[o]:row_mid[o]] and
    subtracts rows[row_mid[o]:row_ptr[o+1]]; y (N, C_out, P) float32. xq: C_in * P + SLACK int8
    codes (a tile reads past a row's end into the next row or the slack: lanes it does not store)."""
    n_img, c_in, p_all = x.shape
    c_out = y.shape[1]
    for n in range(n_img):
        quantize_rows(x[n].ravel(), inv_scale, xq)
        yn = y[n]
        for o in prange(c_out):
            a, mid, b = row_ptr[o], row_mid[o], row_ptr[o + 1]
            s, c0 = scale[o], bias[o]
            out = yn[o]
            for p0 in range(0, p_all, TILE_MAX):
                m = min(TILE_MAX, p_all - p0)
                ternary_tile((m + VW - 1) // VW, xq, p0, p_all, rows, a, mid, mid, b, out, p0, m, s, c0, lo, hi)


ternary_pointwise = njit(_ternary_pointwise)
ternary_pointwise_parallel = njit(_ternary_pointwise, parallel=True)


def _int8_conv(xp, plane, tap_ptr, tap_offs, tap_w, wide_len, wp, sh, sw, c_in_g, c_out_g, scale, bias, lo,
               hi, n_chunks, y):
    """xp: N * C_in padded planes (plane codes each) of int8 codes, flat, and room past them;
    output channel o sums tap_w[t] * codes at tap_offs[t] for t in tap_ptr[o]:tap_ptr[o+1] (its
    nonzero taps; an offset is channel * plane + i * dh * Wp + j * dw within its group's planes).
    Stride 1: output row r's Wo pixels are consecutive codes of padded row r: a tile takes up to
    four rows of Wo <= 16 (7x7 and 14x14 maps) or a run of up to 64 pixels of one row.
    Strided: the sums run at stride 1 over "wide rows" of the padded width (position r * Wp + q),
    wide_len of them, and the outputs are every sh-th row and sw-th column of those (sh * sw
    times the sums needed: still faster than strided loads; such layers are few and small).
    n_chunks: how many parts the output channels are split into (one per thread)."""
    n_img, c_out, ho, wo = y.shape
    c_in = c_in_g * (c_out // c_out_g)
    yf = y.reshape(-1)
    n_tiles = (wide_len + TILE_MAX - 1) // TILE_MAX
    for chunk in prange(n_chunks):
        wide = np.empty(0 if sh == sw == 1 else n_tiles * TILE_MAX, np.float32)
        for t in range(chunk, n_img * c_out, n_chunks):
            n, o = t // c_out, t % c_out
            x_off = (n * c_in + (o // c_out_g) * c_in_g) * plane
            t0, t1, s, c0 = tap_ptr[o], tap_ptr[o + 1], scale[o], bias[o]
            if sh == sw == 1 and wp == wo:           # 1x1 convs: the plane is one run of pixels
                for q0 in range(0, ho * wo, TILE_MAX):
                    m = min(TILE_MAX, ho * wo - q0)
                    taps_tile((m + VW - 1) // VW, xp, x_off + q0, VW, tap_offs, tap_w, t0, t1,
                              yf, t * ho * wo + q0, VW, m, s, c0, lo, hi)
            elif sh == sw == 1 and wo <= VW:
                for r in range(0, ho, TILE_NV_MAX):
                    nv = min(TILE_NV_MAX, ho - r)
                    taps_tile(nv, xp, x_off + r * wp, wp, tap_offs, tap_w, t0, t1,
                              yf, (t * ho + r) * wo, wo, nv * wo, s, c0, lo, hi)
            elif sh == sw == 1:
                for r in range(ho):
                    for q0 in range(0, wo, TILE_MAX):
                        m = min(TILE_MAX, wo - q0)
                        taps_tile((m + VW - 1) // VW, xp, x_off + r * wp + q0, VW, tap_offs, tap_w, t0, t1,
                                  yf, (t * ho + r) * wo + q0, VW, m, s, c0, lo, hi)
            else:
                for i in range(n_tiles):
                    m = min(TILE_MAX, wide_len - i * TILE_MAX)
                    taps_tile((m + VW - 1) // VW, xp, x_off + i * TILE_MAX, VW, tap_offs, tap_w, t0, t1,
                              wide, i * TILE_MAX, VW, m, s, c0, lo, hi)
                out = y[n, o]
                for r in range(ho):
                    for q in range(wo):
                        out[r, q] = wide[r * sh * wp + q * sw]


int8_conv = njit(_int8_conv)
int8_conv_parallel = njit(_int8_conv, parallel=True)


@njit
def int8_gemm(x, inv_scale, codes, scale, bias, y):
    """x (N, K) float32 quantised on the fly; codes (M, K) int8 -> y (N, M) float32."""
    n_img, k_all = x.shape
    xq = np.empty(k_all, np.int32)
    for n in range(n_img):
        for k in range(k_all):
            xq[k] = np.int32(quantize_code(x[n, k], inv_scale))
        for o in range(codes.shape[0]):
            acc = np.int32(0)
            for k in range(k_all):
                acc += np.int32(codes[o, k]) * xq[k]
            y[n, o] = np.float32(acc) * scale[o] + bias[o]
