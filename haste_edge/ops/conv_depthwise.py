"""Depthwise convs (one input channel per group, any multiplier), stride 1 or 2, on the vector
depthwise tile.

Per plane the input is copied once into a zero-padded plane (window.split_phases with unit
strides: contiguous row copies), so tap (i, j) of output pixel (p, q) reads the padded plane at
offs[t] + p*sh*wp + q*sw, no bounds test. The tile (microkernel.dw_tile_s1 / _s2) computes
DW_ROWS rows x DW_VW columns with the tap weights broadcast and the accumulators in registers,
bias and clamp fused, into a scratch plane whose rows are DW_VW-aligned; the real outputs are
copied from it. Stride 2 deinterleaves in the tile (one wide load and a shuffle per tap and row):
splitting a 112x112 plane into stride phases first cost more than the whole conv. Columns past a
row's end read the plane's next cells, rows past the last a zeroed tail: junk, never copied out.
"""
from __future__ import annotations

import numba
import numpy as np

from haste_edge import microkernel as mk
from haste_edge.jit import njit, prange
from haste_edge.ops.window import split_phases
from haste_edge.scratch import scratch

R, VW = mk.DW_ROWS, mk.DW_VW


def applicable(sh: int, sw: int) -> bool:
    return sh == sw and sh in (1, 2)


class DepthwiseConv:
    """One node's prepared state: padded-plane geometry, tap offsets, weights as (C_out, taps)."""

    def __init__(self, w: np.ndarray, plan):
        kh, kw, sh, sw, dh, dw = plan.geo[:6]
        ho, wo = plan.out_shape[2], plan.out_shape[3]
        self.w_src = w
        self.w = np.ascontiguousarray(w.reshape(w.shape[0] * kh * kw), dtype=np.float32)
        self.taps = kh * kw
        self.hp = (ho - 1) * sh + (kh - 1) * dh + 1     # padded rows / cols any tap reads
        self.wp = (wo - 1) * sw + (kw - 1) * dw + 1
        i, j = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
        self.offs = (i * dh * self.wp + j * dw).reshape(-1).astype(np.int64)
        self.row_blocks, self.col_blocks = -(-ho // R), -(-wo // VW)
        last_read = ((self.row_blocks * R - 1) * sh * self.wp + (self.col_blocks * VW) * sw
                     + int(self.offs.max()))
        self.src_size = max(self.hp * self.wp, last_read + 1)

    def run(self, x, y, bias, plan):
        sh, pt, pl = plan.geo[2], plan.geo[6], plan.geo[7]
        n_blocks = min(y.shape[0] * y.shape[1], 4 * numba.get_num_threads())   # a few per thread
        # per block of planes: the padded plane (split_phases writes all of it; the tail past it
        # must read as zeros) and the tile-aligned output plane
        src = scratch("dw_src", n_blocks * self.src_size).reshape(n_blocks, self.src_size)
        src[:, self.hp * self.wp:] = 0.0
        wide = scratch("dw_wide", n_blocks * self.row_blocks * R * self.col_blocks * VW).reshape(n_blocks, -1)
        _depthwise_tiles(x, self.w, self.offs, bias, y, y.shape[1] // x.shape[1], sh, pt, pl, self.hp,
                         self.wp, src, wide, self.row_blocks, self.col_blocks, plan.lo, plan.hi)


@njit(parallel=True)
def _depthwise_tiles(x, w, offs, bias, y, mult, s, pt, pl, hp, wp, srcs, wides, row_blocks, col_blocks,
                     lo, hi):
    """y = depthwise conv of x, stride s in both axes (module docstring), parallel over blocks of
    planes, one per row of srcs and wides (their buffers)."""
    n_blocks = srcs.shape[0]
    n_img = x.shape[0]
    c_out, ho, wo = y.shape[1], y.shape[2], y.shape[3]
    taps = offs.shape[0]
    ldo = col_blocks * VW
    lo32, hi32 = np.float32(lo), np.float32(hi)
    n_planes = n_img * c_out
    per_block = (n_planes + n_blocks - 1) // n_blocks
    for blk in prange(n_blocks):
        src = srcs[blk]
        padded = src[:hp * wp].reshape(1, 1, hp * wp)
        wide = wides[blk]
        prev = -1
        for r in range(blk * per_block, min(n_planes, (blk + 1) * per_block)):
            n, oc = r // c_out, r % c_out
            ic = n * (c_out // mult) + oc // mult
            if ic != prev:                                 # a multiplier > 1 reuses the plane
                split_phases(x[n, oc // mult], padded, 1, 1, pt, pl, hp, wp, 1, 1)
                prev = ic
            bv = bias[oc]
            for rb in range(row_blocks):
                for cb in range(col_blocks):
                    pos = rb * R * s * wp + cb * VW * s
                    if s == 1:
                        mk.dw_tile_s1(src, pos, offs, w, oc * taps, wp, wide, rb * R * ldo + cb * VW, ldo,
                                      bv, lo32, hi32)
                    else:
                        mk.dw_tile_s2(src, pos, offs, w, oc * taps, 2 * wp, wide, rb * R * ldo + cb * VW,
                                      ldo, bv, lo32, hi32)
            yp = y[n, oc]
            for p in range(ho):
                row = wide[p * ldo:p * ldo + wo]
                yr = yp[p]
                for q in range(wo):
                    yr[q] = row[q]

