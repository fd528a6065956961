"""PROM's Numba kernels; reference.py defines what each computes.

Activations are quantised to int8 codes once per layer (quantize_pad), then:
  ternary_pointwise   1x1 convs with ternary weights: per output channel the input rows of its +1
                      weights are added and those of its -1 weights subtracted, into int32, over a
                      block of pixels (SIMD over pixels); no multiplication in the inner loop
  int8_pointwise      1x1 convs with int8 weights: the same loop with a multiply-add
  int8_conv           any other conv (3x3 stem, depthwise), int8 x int8 into int32, zero weights skipped
  int8_gemm           the classifier
and each ends in the epilogue y = float32(acc) * scale[o] + bias[o], clamped to the fused activation.
Outputs are float32 NCHW, so PROM layers sit between float layers (Add, pooling) unchanged.
"""
from __future__ import annotations

import numpy as np

from haste_edge.jit import njit, prange

# pixels per block of the pointwise kernels: the int32 sums of one block (2 KB) stay in L1 while
# every input row adds into them
PIXEL_BLOCK = 512
# rows of int8 codes (|code| <= 127) an int16 sum holds without overflow: 258 * 127 = 32766
SUM16_ROWS = 258


@njit(parallel=True)
def quantize_pad(x, inv_scale, pt, pl, out):
    """out[n, c, pt + i, pl + j] = clip(rint(x[n, c, i, j] * inv_scale), -127, 127) as int8; the
    border of out (the conv's zero padding: code 0 is 0.0 exactly) set to 0."""
    n_img, c, h, w = x.shape
    hp, wp = out.shape[2], out.shape[3]
    for t in prange(n_img * c):
        i_n, i_c = t // c, t % c
        for r in range(hp):
            for q in range(wp):
                out[i_n, i_c, r, q] = 0
        for r in range(h):
            for q in range(w):
                v = np.rint(x[i_n, i_c, r, q] * inv_scale)
                v = min(max(v, -127.0), 127.0)
                out[i_n, i_c, pt + r, pl + q] = np.int8(v)


@njit(parallel=True)
def ternary_pointwise(xq, plus_ptr, plus_idx, minus_ptr, minus_idx, scale, bias, lo, hi, y):
    """xq (N, C_in, P) int8 codes; output channel o adds the rows plus_idx[plus_ptr[o]:plus_ptr[o+1]]
    and subtracts the rows minus_idx[minus_ptr[o]:minus_ptr[o+1]]; y (N, C_out, P) float32.
    Rows are summed in int16 (twice the SIMD lanes of int32) in runs of at most SUM16_ROWS, which
    cannot overflow, and each run is added into the int32 sums. The innermost loops index 1-D views
    by their loop counter: a computed index (p0 + p) would be checked for wraparound on every access
    and the loop would not vectorise."""
    n_img, c_out, p_all = y.shape
    n_blk = (p_all + PIXEL_BLOCK - 1) // PIXEL_BLOCK
    for t in prange(n_img * n_blk * c_out):       # output channels innermost: a block of xq is reused
        o = t % c_out
        b = (t // c_out) % n_blk
        n = t // (c_out * n_blk)
        p0 = b * PIXEL_BLOCK
        m = min(PIXEL_BLOCK, p_all - p0)
        acc = np.zeros(PIXEL_BLOCK, np.int32)
        part = np.empty(PIXEL_BLOCK, np.int16)
        for sign in (1, -1):
            first, last = (plus_ptr[o], plus_ptr[o + 1]) if sign == 1 else (minus_ptr[o], minus_ptr[o + 1])
            idx = plus_idx if sign == 1 else minus_idx
            for k0 in range(first, last, SUM16_ROWS):
                part[:m] = 0
                for k in range(k0, min(k0 + SUM16_ROWS, last)):
                    row = xq[n, idx[k], p0:p0 + m]
                    for p in range(m):
                        part[p] += row[p]
                if sign == 1:
                    for p in range(m):
                        acc[p] += part[p]
                else:
                    for p in range(m):
                        acc[p] -= part[p]
        s, c0 = scale[o], bias[o]
        out = y[n, o, p0:p0 + m]
        for p in range(m):
            out[p] = min(max(np.float32(acc[p]) * s + c0, lo), hi)


@njit(parallel=True)
def int8_pointwise(xq, codes, scale, bias, lo, hi, y):
    """xq (N, C_in, P) int8, codes (C_out, C_in) int8 -> y (N, C_out, P) float32."""
    n_img, c_out, p_all = y.shape
    c_in = xq.shape[1]
    n_blk = (p_all + PIXEL_BLOCK - 1) // PIXEL_BLOCK
    for t in prange(n_img * n_blk * c_out):
        o = t % c_out
        b = (t // c_out) % n_blk
        n = t // (c_out * n_blk)
        p0 = b * PIXEL_BLOCK
        m = min(PIXEL_BLOCK, p_all - p0)
        acc = np.zeros(PIXEL_BLOCK, np.int32)
        for k in range(c_in):
            w = np.int32(codes[o, k])
            if w == 0:
                continue
            row = xq[n, k, p0:p0 + m]
            for p in range(m):
                acc[p] += w * np.int32(row[p])
        s, c0 = scale[o], bias[o]
        out = y[n, o, p0:p0 + m]
        for p in range(m):
            out[p] = min(max(np.float32(acc[p]) * s + c0, lo), hi)


@njit(parallel=True)
def int8_conv(xp, codes, group, sh, sw, dh, dw, scale, bias, lo, hi, y):
    """xp (N, C_in, Hp, Wp) int8 codes, already padded; codes (C_out, C_in/group, kh, kw) int8;
    y (N, C_out, Ho, Wo) float32. The sums run at stride 1 over "wide" rows of the padded width
    (acc[r * Wp + q]), one long contiguous loop per tap that vectorises; the epilogue picks the
    outputs (every sh-th row, sw-th column, the first Wo). Strided convs so do sh * sw times the
    sums they need: still faster than strided loads (stride-2 depthwise layers here are few and
    small). Sums that would read past the plane's end belong to discarded columns and are cut."""
    n_img, c_out, ho, wo = y.shape
    wp = xp.shape[3]
    c_in_g, kh, kw = codes.shape[1], codes.shape[2], codes.shape[3]
    c_out_g = c_out // group
    rows = (ho - 1) * sh + 1
    for t in prange(n_img * c_out):
        n, o = t // c_out, t % c_out
        g = o // c_out_g
        acc = np.zeros(rows * wp, np.int32)
        for c in range(c_in_g):
            plane = xp[n, g * c_in_g + c].ravel()
            for i in range(kh):
                for j in range(kw):
                    w = np.int32(codes[o, c, i, j])
                    if w == 0:
                        continue
                    start = i * dh * wp + j * dw
                    seg = plane[start:start + rows * wp]
                    for p in range(seg.size):
                        acc[p] += w * np.int32(seg[p])
        s, c0 = scale[o], bias[o]
        for r in range(ho):
            for q in range(wo):
                y[n, o, r, q] = min(max(np.float32(acc[r * sh * wp + q * sw]) * s + c0, lo), hi)


@njit
def int8_gemm(x, inv_scale, codes, scale, bias, y):
    """x (N, K) float32 quantised on the fly; codes (M, K) int8 -> y (N, M) float32."""
    n_img, k_all = x.shape
    xq = np.empty(k_all, np.int32)
    for n in range(n_img):
        for k in range(k_all):
            xq[k] = np.int32(min(max(np.rint(x[n, k] * inv_scale), -127.0), 127.0))
        for o in range(codes.shape[0]):
            acc = np.int32(0)
            for k in range(k_all):
                acc += np.int32(codes[o, k]) * xq[k]
            y[n, o] = np.float32(acc) * scale[o] + bias[o]
