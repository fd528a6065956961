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
from haste_edge.microkernel import MASKED_MOVES, copy_upto16
from haste_edge.prom.tiles import TILE_MAX, TILE_NV, VW, quantize16, taps_tile, ternary_tile

TILE_NV_MAX = TILE_NV[-1]

# room past the last code a tile may read (its discarded lanes)
SLACK = TILE_MAX


@njit(inline="always")
def quantize_code(v, inv_scale):
    """clip(rint(v * inv_scale), -127, 127) as int8. Clamped before rounding (the same: the bounds
    are integers) and in float32: so the loops around it vectorise."""
    return np.int8(np.rint(min(max(v * inv_scale, np.float32(-127)), np.float32(127))))


@njit
def quantize_rows(x, inv_scale, out):
    """out[i] = quantize_code(x[i]) for flat float32 x (out int8 or int16): one long loop."""
    for i in range(x.size):
        out[i] = quantize_code(x[i], inv_scale)


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
            for q0 in range(0, w, VW):
                quantize16(xf, src + q0, of, dst + q0, min(VW, w - q0), inv_scale)


def _ternary_pointwise(x, inv_scale, xq, row_ptr, row_mid, row_offs, scale, bias, lo, hi, y):
    """x (N, C_in, P) float32; output channel o adds the code rows starting at
    row_offs[row_ptr[o]:row_mid[o]] (input channel x P) and subtracts those at
    row_offs[row_mid[o]:row_ptr[o+1]]; y (N, C_out, P) float32. xq: C_in * P + SLACK int16 codes
    (a tile reads past a row's end into the next row or the slack: lanes it does not store)."""
    n_img, c_in, p_all = x.shape
    c_out = y.shape[1]
    for n in range(n_img):
        quantize_rows(x[n].ravel(), inv_scale, xq)
        yn = y[n]
        for o in prange(c_out):
            t0, mid, t1, s, c0, out = row_ptr[o], row_mid[o], row_ptr[o + 1], scale[o], bias[o], yn[o]
            for p0 in range(0, p_all, TILE_MAX):
                m = min(TILE_MAX, p_all - p0)
                ternary_tile(_vectors(m), xq, p0, row_offs, t0, mid, t1, out, p0, m, s, c0, lo, hi)


ternary_pointwise = njit(_ternary_pointwise)
ternary_pointwise_parallel = njit(_ternary_pointwise, parallel=True)


@njit
def _vectors(m):
    """Vectors a tile needs for m values."""
    return (m + VW - 1) // VW


def _int8_conv(xp, plane, tap_ptr, tap_offs, tap_w, wide_len, wp, sh, sw, c_in_g, c_out_g, scale, bias, lo,
               hi, n_chunks, y):
    """xp: N * C_in padded planes (plane codes each) of int8 codes, flat, and room past them;
    output channel o sums tap_w[t] * codes at tap_offs[t] for t in tap_ptr[o]:tap_ptr[o+1] (its
    nonzero taps; an offset is channel * plane + i * dh * Wp + j * dw within its group's planes).
    Stride 1: output row r's Wo pixels are consecutive codes of padded row r: a tile takes up to
    four rows of Wo <= 16 (14x14 maps), else the sums run over runs of consecutive positions 64 a
    tile: the whole plane where rows are unpadded (1x1 convs), else each row. Strided convs and
    small maps where it takes fewer vectors (7x7: 4 against 7): one run over "wide rows" of the
    padded width (position r * Wp + q), wide_len of them, into a scratch, and the outputs are
    every sh-th row and sw-th column of those (strided: sh * sw times the sums needed, still faster
    than strided loads; such layers are few and small). The loops stay in this one function: a
    call per run cost about 0.1 us (the stem took 2.5x the time).
    n_chunks: how many parts the output channels are split into (one per thread)."""
    n_img, c_out, ho, wo = y.shape
    c_in = c_in_g * (c_out // c_out_g)
    yf = y.reshape(-1)
    wide_rows = sh != 1 or sw != 1
    row_tiles = not wide_rows and wo <= VW and wp != wo
    if row_tiles and _vectors(wide_len) < ho:           # each row tile vector holds one row
        wide_rows, row_tiles = True, False
    if wp == wo:                         # runs: how many, how long, their steps in xp and the output
        n_runs, length, x_step, out_step = 1, ho * wo, 0, 0
    else:
        n_runs, length, x_step, out_step = ho, wo, wp, wo
    for chunk in prange(n_chunks):
        wide = np.empty(wide_len if wide_rows else 0, np.float32)
        for t in range(chunk, n_img * c_out, n_chunks):
            n, o = t // c_out, t % c_out
            x_off = (n * c_in + (o // c_out_g) * c_in_g) * plane
            t0, t1, s, c0 = tap_ptr[o], tap_ptr[o + 1], scale[o], bias[o]
            if row_tiles:
                for r in range(0, ho, TILE_NV_MAX):
                    nv = min(TILE_NV_MAX, ho - r)
                    taps_tile(nv, xp, x_off + r * wp, wp, tap_offs, tap_w, t0, t1,
                              yf, (t * ho + r) * wo, wo, nv * wo, s, c0, lo, hi)
                continue
            if not wide_rows:
                for r in range(n_runs):
                    for q0 in range(0, length, TILE_MAX):
                        m = min(TILE_MAX, length - q0)
                        taps_tile(_vectors(m), xp, x_off + r * x_step + q0, VW, tap_offs, tap_w, t0, t1,
                                  yf, t * ho * wo + r * out_step + q0, VW, m, s, c0, lo, hi)
                continue
            for q0 in range(0, wide_len, TILE_MAX):     # not merged with the loop above: choosing
                m = min(TILE_MAX, wide_len - q0)        # between two arrays costs reference counting
                taps_tile(_vectors(m), xp, x_off + q0, VW, tap_offs, tap_w, t0, t1, wide, q0, VW, m, s, c0, lo, hi)
            if sw == 1 and MASKED_MOVES and wo <= VW:
                for r in range(ho):
                    copy_upto16(wide, r * sh * wp, yf, (t * ho + r) * wo, wo)
            else:
                for r in range(ho):
                    for q in range(wo):
                        yf[(t * ho + r) * wo + q] = wide[r * sh * wp + q * sw]


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
