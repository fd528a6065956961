"""Depthwise convs (any channel multiplier, stride, dilation and kernel) with channels in the vector lanes.

Per image and block of VL = microkernel.DWB_VL channels:
1. the block's input planes (output channel o reads input plane o // multiplier) move into a
   zero-padded (hp, wp, VL) block, VL x VL values per microkernel.transpose (VL consecutive
   pixels of VL planes in, VL pixel vectors out, each stored at its padded position from a table);
2. the blocked depthwise tile computes DWB_MR output pixels of a row at a time: per tap one
   weight vector and one vector load per pixel, no bounds test, no per-plane set-up, no
   partial vectors on 7- and 14-pixel rows (which a plane's rows in the vector lanes would pay);
3. the (ho*wo, VL) result goes back into the NCHW output the same way, transposed.
A row's last tile may run past the row: its extra pixels land on the next row's first ones,
computed after it, or on the result block's tail. Pixels past the last whole VL run move by
scalar loops; a last partial block of channels fills its spare lanes from its last plane and
writes back only its own channels (scalar). Blocks run in parallel, one scratch per slot.
"""
from __future__ import annotations

import numpy as np

from haste_edge import microkernel as mk
from haste_edge.jit import njit, prange
from haste_edge.ops.registry import Prepared
from haste_edge.ops.window import copy_run
from haste_edge.scratch import aligned_empty, scratch
from haste_edge.threads import kernel_threads

VL, MR = mk.DWB_VL, mk.DWB_MR


def _layout(plan):
    """(hp, wp, toffs, size, out_size): the padded block's rows and columns (what any tap reads),
    the taps' offsets in it, and the floats of the input block (with the reads of a row's last
    tile past the row, and a junk slot of VL at its end) and of the result block."""
    kh, kw, sh, sw, dh, dw = plan.geo[:6]
    ho, wo = plan.out_shape[2], plan.out_shape[3]
    hp = (ho - 1) * sh + (kh - 1) * dh + 1
    wp = (wo - 1) * sw + (kw - 1) * dw + 1
    i, j = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
    toffs = ((i * dh * wp + j * dw) * VL).reshape(-1).astype(np.int64)
    last_q = -(-wo // MR) * MR - 1                       # a row's last tile's last pixel
    last_read = ((ho - 1) * sh * wp + last_q * sw) * VL + int(toffs.max()) + VL
    return hp, wp, toffs, max(hp * wp * VL, last_read) + VL, (ho * wo + MR) * VL


def block_bytes(plan) -> int:
    """Scratch one block of channels needs (the padded input block and the result block)."""
    _, _, _, size, out_size = _layout(plan)
    return 4 * (size + out_size)


class BlockedDepthwiseConv(Prepared):
    """One node's prepared state: weights and bias blocks, tap offsets, the padded positions of
    the input pixels and the transposes' row tables."""

    def __init__(self, w: np.ndarray, plan):
        self.w_src = w
        kh, kw, pt, pl = plan.geo[0], plan.geo[1], plan.geo[6], plan.geo[7]
        x_shape = plan.shapes[0]
        h, wd = x_shape[2], x_shape[3]
        c, ho, wo = plan.out_shape[1], plan.out_shape[2], plan.out_shape[3]
        self.n_cb = n_cb = -(-c // VL)
        taps = kh * kw
        wb = np.zeros((n_cb * VL, taps), np.float32)
        wb[:c] = w.reshape(c, taps)
        self.w = aligned_empty(n_cb * taps * VL)
        self.w[:] = wb.reshape(n_cb, VL, taps).transpose(0, 2, 1).reshape(-1)      # [cb, t, lane]
        self.hp, self.wp, self.toffs, self.size, self.out_size = _layout(plan)
        junk = self.size - VL
        r, q = np.divmod(np.arange(h * wd), wd)
        rr, qq = r + pt, q + pl
        inside = (rr < self.hp) & (qq < self.wp)                 # pixels no tap reads: to the junk slot
        self.dpos = np.where(inside, (rr * self.wp + qq) * VL, junk).astype(np.int64)
        self.bias = (None, None)                                 # (source b, padded to n_cb * VL)
        mult = c // x_shape[1]
        out_ch = np.minimum(np.arange(n_cb * VL), c - 1)        # past the last channel: junk lanes
        self.row_in = ((out_ch // mult) * h * wd).astype(np.int64).reshape(n_cb, VL)
        self.row_res = (np.arange(VL) * VL).astype(np.int64)
        self.row_out = (np.arange(VL) * ho * wo).astype(np.int64)
        self.dims = np.array([c, h, wd, ho, wo, pt, pl, self.hp], np.int64)

    def calls(self, x, y, bias, plan):
        """y = the conv of x, each NCHW or channel-blocked (conv_blocked) as its ndim says."""
        sh, sw = plan.geo[2], plan.geo[3]
        tasks = y.shape[0] * self.n_cb
        serial = kernel_threads() == 1 or plan.micro_serial
        slots = 1 if serial else min(tasks, kernel_threads())
        blocks = scratch("dwb_in", slots * self.size).reshape(slots, self.size)
        results = scratch("dwb_out", slots * self.out_size).reshape(slots, self.out_size)
        if self.bias[0] is not bias:                        # kept while the same array comes in
            self.bias = (bias, mk.pad_rows(bias, self.n_cb * VL))
        args = (x, y, self.dims, self.w, self.toffs, self.bias[1], self.dpos, self.row_in, self.row_res, self.row_out,
                blocks, results, sh, sw, self.wp, np.float32(plan.lo), np.float32(plan.hi))
        return [(_blocks_serial if serial else _blocks_pool, args)]


@njit
def _block(x, y, dims, n, cb, w, toffs, bias_b, dpos, row_in, row_res, row_out, blk, res, sh, sw, wp, lo, hi):
    """Image n, channels cb*VL.. of y: the module docstring's three steps; x and y NCHW or
    blocked (5-D: steps 1 and 3 are then row copies, or none when the tiles write y in place)."""
    c, h, wd, ho, wo, pt, pl = dims[0], dims[1], dims[2], dims[3], dims[4], dims[5], dims[6]
    hw = h * wd
    hwo = ho * wo
    c0 = cb * VL
    nc = min(VL, c - c0)
    xf, yf = x.reshape(-1), y.reshape(-1)
    if x.ndim == 5:
        hp = dims[7]
        q_hi = min(wd, wp - pl)
        src = (n * x.shape[1] + cb) * hw * VL
        for r in range(max(0, -pt), min(h, hp - pt)):
            copy_run(xf, src + r * wd * VL, blk, ((r + pt) * wp + pl) * VL, q_hi * VL)
    else:
        rows = row_in[cb]
        base = n * x.shape[1] * hw
        whole = (hw // VL) * VL
        for t0 in range(0, whole, VL):
            mk.transpose(xf, rows, base + t0, blk, dpos, t0, 0)
        for lane in range(VL):
            for p in range(whole, hw):
                blk[dpos[p] + lane] = xf[base + rows[lane] + p]
    w_off = cb * toffs.shape[0] * VL
    # blocked y: tiles write in place unless a row's last tile would run past it
    in_place = y.ndim == 5 and wo % MR == 0
    dst = yf if in_place else res
    d0 = (n * y.shape[1] + cb) * hwo * VL if in_place else 0
    for p in range(ho):
        for q0 in range(0, wo, MR):
            mk.dwb_tile(blk, (p * sh * wp + q0 * sw) * VL, sw * VL, toffs, w, w_off, dst, d0 + (p * wo + q0) * VL,
                        bias_b, c0, lo, hi)
    if in_place:
        return
    if y.ndim == 5:
        copy_run(res, 0, yf, (n * y.shape[1] + cb) * hwo * VL, hwo * VL)
        return
    base = (n * c + c0) * hwo
    whole = (hwo // VL) * VL if nc == VL else 0
    for t0 in range(0, whole, VL):
        mk.transpose(res, row_res, t0 * VL, yf, row_out, 0, base + t0)
    for lane in range(nc):
        for p in range(whole, hwo):
            yf[base + lane * hwo + p] = res[p * VL + lane]


@njit
def _zero_frame(blk, dims, wp, size):
    """Zeros where the padded block (hp, wp, VL) gets no input pixel: the padding around the
    interior _block copies in (rows pt.., columns pl.., clipped to the block), and the tail past
    hp*wp*VL that a row's last tile may read. Once per call and slot: every block of channels
    overwrites the same interior."""
    h, wd, pt, pl, hp = dims[1], dims[2], dims[5], dims[6], dims[7]
    h_in, w_in = max(0, min(h, hp - pt)), max(0, min(wd, wp - pl))
    blk[:pt * wp * VL] = 0.0
    for r in range(pt, pt + h_in):
        row = r * wp * VL
        blk[row:row + pl * VL] = 0.0
        blk[row + (pl + w_in) * VL:row + wp * VL] = 0.0
    blk[(pt + h_in) * wp * VL:size] = 0.0


# serial and pool loops are separate functions (a serial loop compiled inside a parallel=True
# function ran 2x slower: microkernel._gemm_lanes_serial)
@njit
def _blocks_serial(x, y, dims, w, toffs, bias_b, dpos, row_in, row_res, row_out, blks, ress, sh, sw, wp, lo, hi):
    n_cb = bias_b.shape[0] // VL
    _zero_frame(blks[0], dims, wp, blks.shape[1])
    for n in range(y.shape[0]):
        for cb in range(n_cb):
            _block(x, y, dims, n, cb, w, toffs, bias_b, dpos, row_in, row_res, row_out, blks[0], ress[0], sh,
                   sw, wp, lo, hi)


@njit(parallel=True)
def _blocks_pool(x, y, dims, w, toffs, bias_b, dpos, row_in, row_res, row_out, blks, ress, sh, sw, wp, lo, hi):
    n_cb = bias_b.shape[0] // VL
    tasks = y.shape[0] * n_cb
    slots = blks.shape[0]
    per = (tasks + slots - 1) // slots
    for s in prange(slots):
        _zero_frame(blks[s], dims, wp, blks.shape[1])
        for t in range(s * per, min(tasks, (s + 1) * per)):
            _block(x, y, dims, t // n_cb, t % n_cb, w, toffs, bias_b, dpos, row_in, row_res, row_out, blks[s],
                   ress[s], sh, sw, wp, lo, hi)
