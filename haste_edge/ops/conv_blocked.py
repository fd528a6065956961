"""The channel-blocked activation layout and the convs that read or write it.

A blocked tensor of logical shape (N, C, H, W) is stored (N, CB, H, W, VL): channel c of pixel
(p, q) at [n, c // VL, p, q, c % VL], VL = the vector width (16 AVX-512, 8 AVX2, 4 NEON), CB at
least ceil(C / VL). Lanes past C in the last block hold zeros (their weights and bias are zero),
blocks past ceil(C / VL) are never read. Between two convs that both run on the microkernel the
plan keeps tensors this way (runtime.py): a depthwise conv then needs no transposes, a lanes
product reads its input and writes its output where they lie, and nothing converts the layout
in between. GlobalAveragePool reads it too (means_call); the graph's inputs and
outputs, and every other op, see NCHW only.

BlockedConv runs a group-1 conv on the lanes product (microkernel.gemm_lanes, output channels in
the vector lanes, MR pixels of an output row per tile), NCHW or blocked in, NCHW or blocked out:
- NCHW in: the stride phases of conv_direct (the lanes tile reads pixel i at + i);
- blocked in: the image itself (stride 1, no tap reading padding), else its zero-padded stride
  phases, blocked; the lanes tile reads pixel i at + i*VL (a tile variant whose step is a
  constant), tap (c, i, j) at its block, phase, row, column and lane;
- blocked out: tiles store VL-lane vectors straight into the output's blocks. The channel panels
  of NR = NV*VL channels start at block min(cb*NV, CB - NV): the last one overlaps its neighbour
  rather than running past the array (CB >= NV: out_blocks);
- NCHW out: pixel-major into a scratch, transposed into the output (conv_direct.lanes_to_out).
"""
from __future__ import annotations

import numpy as np

from haste_edge import microkernel as mk
from haste_edge.jit import njit, prange
from haste_edge.ops.conv_direct import _TAIL, group_phases, lanes_to_out, phase_taps
from haste_edge.ops.window import copy_run, split_phases, valid_range, zero_run
from haste_edge.ops.registry import Held, Prepared
from haste_edge.scratch import aligned_empty, scratch
from haste_edge.threads import kernel_threads

# Phases of at least this many floats are built on the pool when the product runs there: on one
# thread they were a serial step before each stride-2 product (EfficientNet-Lite0's stem: 3
# channels of 224x224, README "Performance").
PHASES_POOL_FLOATS = 1 << 16

VL = mk.DWB_VL


def blocks(c: int) -> int:
    """Blocks of VL channels holding c channels."""
    return -(-c // VL)


def lanes_variant(plan) -> int | None:
    """The lanes tile of a group-1 conv, None if no tile's MR divides its output rows (pointwise
    stride-1 unpadded convs: the whole map, one long row)."""
    ho, wo, c_out = plan.out_shape[2], plan.out_shape[3], plan.out_shape[1]
    return mk.choose_lanes(ho * wo if plan.pointwise else wo, c_out, divides=True)


def out_blocks(c_out: int, variant: int) -> int:
    """Blocks a BlockedConv's blocked output has: at least one panel's NV."""
    return max(blocks(c_out), mk.LANES[variant][1])


def to_blocked(x: np.ndarray, cb: int | None = None) -> np.ndarray:
    """NCHW -> blocked (N, cb, H, W, VL), spare lanes and blocks zero (the reference layout)."""
    n, c, h, w = x.shape
    cb = cb or blocks(c)
    out = np.zeros((n, cb * VL, h, w), np.float32)
    out[:, :c] = x
    return np.ascontiguousarray(out.reshape(n, cb, VL, h, w).transpose(0, 1, 3, 4, 2))


def from_blocked(xb: np.ndarray, c: int) -> np.ndarray:
    """Blocked (N, CB, H, W, VL) -> NCHW with c channels."""
    n, cb, h, w, vl = xb.shape
    return np.ascontiguousarray(xb.transpose(0, 1, 4, 2, 3).reshape(n, cb * vl, h, w)[:, :c])


def residual_call(y, r, lo):
    """The call that does y += r, then max(., lo), both blocked, over the blocks both have (at
    least the real ones; past them, blocks are never read)."""
    cb = min(y.shape[1], r.shape[1])
    return _add_blocks, (y.reshape(y.shape[0], -1), r.reshape(r.shape[0], -1), cb * y[0, 0].size, np.float32(lo))


@njit
def _add_blocks(y, r, size, lo):
    for n in range(y.shape[0]):
        for i in range(size):
            v = y[n, i] + r[n, i]
            y[n, i] = lo if v < lo else v


def means_call(x, y):
    """The call that sets y (N, C, 1, 1) to the mean over pixels of blocked x (N, CB, H, W, VL)
    (GlobalAveragePool on a blocked tensor), accumulated in float64 as the NCHW kernel does; x
    C-contiguous."""
    n, c = y.shape[0], y.shape[1]
    return _means, (x.reshape(n, x.shape[1], -1, VL), y.reshape(n, c))


@njit
def _means(x, y):
    n_img, c = y.shape
    hw = x.shape[2]
    acc = np.zeros(VL)
    for n in range(n_img):
        for cb in range(-(-c // VL)):
            acc[:] = 0.0
            for p in range(hw):
                for lane in range(VL):
                    acc[lane] += x[n, cb, p, lane]
            for lane in range(min(VL, c - cb * VL)):
                y[n, cb * VL + lane] = acc[lane] / hw


class BlockedConv(Prepared):
    """A group-1 conv's prepared state for the layouts above: panels, tap offsets, block starts."""

    def __init__(self, w: np.ndarray, plan):
        kh, kw, sh, sw, dh, dw, pt, pl = plan.geo[:8]
        n_img, c_out, ho, wo = plan.out_shape
        c_in, h, wd = plan.shapes[0][1], plan.shapes[0][2], plan.shapes[0][3]
        self.w_src = w
        self.variant = v = lanes_variant(plan)
        mr, nv = mk.LANES[v][0], mk.LANES[v][1]
        nr = nv * VL
        self.in_blocked, self.out_blocked = plan.in_blocked, plan.out_blocked
        k = c_in * kh * kw
        # channel panels (module docstring): their first channels
        if self.out_blocked:
            cbo = out_blocks(c_out, v)
            starts = np.minimum(np.arange(-(-blocks(c_out) // nv)) * nv, cbo - nv) * VL
        else:
            starts = np.arange(-(-c_out // nr)) * nr
        rows = w.reshape(c_out, k)                            # rows past c_out: zeros (pack_lanes)
        self.wt = aligned_empty(len(starts) * k * nr).reshape(len(starts), k * nr)
        for i, s in enumerate(starts):
            mk.pack_lanes(rows[s:s + nr], nr, self.wt[i:i + 1])
        self.bias_len = int(starts[-1]) + nr
        self.bias_panels = starts.astype(np.int64)
        self.bias = (None, None)
        self.pf = mk.LANES_PREFETCH_K
        self.args = None                                      # run's last arguments (Held)
        # pixel blocks along each output row (pointwise: along the flat map)
        width = ho * wo if plan.pointwise else wo
        p, q0 = np.meshgrid(np.arange(ho * wo // width), np.arange(0, width, mr), indexing="ij")
        first = (p * wo + q0).reshape(-1)                      # each block's first output pixel
        pp, qq = np.divmod(first, wo)
        self.buf_size = 0
        if self.in_blocked:
            hp = (ho - 1) * sh + (kh - 1) * dh + 1             # the rows and columns taps read
            wp = (wo - 1) * sw + (kw - 1) * dw + 1
            # the image itself when stride 1 and no tap reads padding (mode 1), else its stride
            # phases (mode 2)
            copied = not (sh == sw == 1 and pt == pl == 0 and hp <= h and wp <= wd)
            na, nb, hq, wq = (plan.na, plan.nb, plan.hq, plan.wq) if copied else (1, 1, h, wd)
            c, i, j = np.meshgrid(np.arange(c_in), np.arange(kh), np.arange(kw), indexing="ij")
            phase = (c // VL * na + i * dh % sh) * nb + j * dw % sw
            self.aoffs = ((phase * hq * wq + (i * dh // sh) * wq + j * dw // sw) * VL + c % VL).reshape(-1)
            self.a_starts = (pp * wq + qq) * VL
            self.variant = v + mk.N_LANES                         # the tile reading pixels VL apart
            self.mode = 2 if copied else 1
            if copied:
                self.buf_size = blocks(c_in) * na * nb * hq * wq * VL
        elif plan.pointwise:                                  # the NCHW image itself (mode 0)
            self.aoffs = np.arange(c_in) * h * wd
            self.a_starts, self.mode = first, 0
        else:                                                 # conv_direct's phases (mode 3)
            self.aoffs = phase_taps(plan, c_in)
            self.a_starts, self.mode = pp * plan.wq + qq, 3
            self.buf_size = c_in * sh * sw * plan.hq * plan.wq + _TAIL
        self.aoffs = self.aoffs.astype(np.int64)
        self.a_starts = self.a_starts.astype(np.int64)
        if self.out_blocked:
            self.c_starts = (first * VL).astype(np.int64)
            self.ldc, self.c_vstep = VL, ho * wo * VL
            self.c_panels = (starts // VL * ho * wo * VL).astype(np.int64)
            self.ct_size = 0
        else:                                                 # pixel-major scratch, row pitch ldb
            self.ldb = len(starts) * nr
            self.c_starts = (first * self.ldb).astype(np.int64)
            self.ldc, self.c_vstep = self.ldb, VL
            self.c_panels = starts.astype(np.int64)
            self.ct_size = ho * wo * self.ldb

    def calls(self, x, y, bias, plan):
        """y = the conv of x (each NCHW or blocked as the plan says), bias and clamp included."""
        serial = kernel_threads() == 1 or plan.micro_serial     # called first: conv_direct.run
        args = self.args
        if args is None or args.items[0] is not x or args.items[1] is not y or args.items[2] is not bias \
                or args.items[3] != serial:
            args = self.args = Held(x, y, bias, serial, *self._args(x, y, bias, plan, serial))
        _, _, _, _, xf, yf, rest = args.items
        return [(_blocked_images, (xf, yf, scratch("phases", max(self.buf_size, 1)),
                                   scratch("wide", max(self.ct_size, 1)), *rest))]

    def pool_phases(self, plan, serial) -> bool:
        """Whether the stride phases are built on the pool (PHASES_POOL_FLOATS); never where
        pad_planes builds them (NCHW input, phase (0, 0) only)."""
        return (not serial and self.buf_size >= PHASES_POOL_FLOATS
                and (self.mode == 2 or (self.mode == 3 and plan.na * plan.nb > 1)))

    def _args(self, x, y, bias, plan, serial):
        """run's arguments to _blocked_images but the scratch buffers: (x, y flat per image, the rest)."""
        if self.bias[0] is not bias:                        # kept while the same array comes in
            self.bias = (bias, mk.pad_rows(bias, self.bias_len))
        sh, sw, _, _, pt, pl = plan.geo[2:8]
        n_img, c_out, ho, wo = plan.out_shape
        c_in, h, wd = plan.shapes[0][1:]
        # flat arrays: one compiled function serves every mix of layouts
        return (x.reshape(n_img, -1), y.reshape(n_img, -1),
                (self.mode, self.out_blocked, self.variant, self.aoffs, self.a_starts, self.wt, self.c_starts,
                 self.ldc, self.c_vstep, self.c_panels, self.bias_panels, self.bias[1], plan.lo, plan.hi, not serial,
                 c_in, h, wd, c_out, ho, wo, sh, sw, pt, pl, plan.hq, plan.wq, plan.na, plan.nb, self.pf,
                 self.pool_phases(plan, serial)))


@njit
def _blocked_images(x, y, buf, ct, mode, out_blocked, variant, aoffs, a_starts, wt, c_starts, ldc, c_vstep,
                    c_panels, bias_panels, bias, lo, hi, parallel, c_in, h, wd, c_out, ho, wo, sh, sw, pt, pl,
                    hq, wq, na, nb, pf, pool_phases):
    """BlockedConv.run per image (x, y: one flat row per image). mode: 0 NCHW pointwise (the
    image is A), 1 blocked read in place, 2 blocked through its stride phases, 3 NCHW through
    its stride phases, built on the pool if pool_phases."""
    for n in range(x.shape[0]):
        if mode == 0 or mode == 1:
            a = x[n]
        elif pool_phases:
            _phases_pool(x[n], buf, mode == 2, c_in, h, wd, sh, sw, pt, pl, hq, wq, na, nb)
            a = buf
        elif mode == 2:
            blocked_phases(x[n].reshape(-1, h, wd, VL), buf, sh, sw, pt, pl, hq, wq, na, nb)
            a = buf
        else:
            group_phases(x[n].reshape(c_in, h, wd), 0, c_in, buf, sh, sw, pt, pl, hq, wq, na, nb)
            a = buf
        c = y[n] if out_blocked else ct
        mk.gemm_lanes(variant, a, aoffs, a_starts, wt, c, c_starts, ldc, c_vstep, c_panels, bias_panels, bias,
                      lo, hi, parallel, pf)
        if not out_blocked:
            lanes_to_out(ct, ldc, wo, y[n].reshape(c_out, ho, wo))


@njit(parallel=True)
def _phases_pool(x, buf, blocked, c_in, h, wd, sh, sw, pt, pl, hq, wq, na, nb):
    """blocked_phases (blocked) or group_phases of one image (flat) into buf, one (channel
    block or channel, phase row a) per task: phase row a of a plane is the phase row 0 of the
    same plane with a rows less of top padding."""
    # planes (channel blocks or channels), one plane's floats in buf and one phase row's
    if blocked:
        n_planes, plane, row = -(-c_in // VL), na * nb * hq * wq * VL, nb * hq * wq * VL
    else:                                                   # group_phases' layout: sh x sw phases
        n_planes, plane, row = c_in, sh * sw * hq * wq, sw * hq * wq
    for t in prange(n_planes * na):
        c = t // na
        a = t - c * na
        dst = buf[c * plane + a * row:c * plane + (a + 1) * row]
        if blocked:
            blocked_phases(x.reshape(-1, h, wd, VL)[c:c + 1], dst, sh, sw, pt - a, pl, hq, wq, 1, nb)
        else:
            split_phases(x.reshape(c_in, h, wd)[c], dst.reshape(1, sw, hq * wq), sh, sw, pt - a, pl, hq, wq, 1, nb)


@njit
def blocked_phases(x, buf, sh, sw, pt, pl, hq, wq, na, nb):
    """buf (CB, na, nb, hq, wq, VL) = the stride phases of the zero-padded blocked image x
    (CB', H, W, VL): buf[cb, a, b, u, v] = xpad[cb, u*sh + a, v*sw + b] (pt rows, pl columns of
    zeros before), CB = buf's blocks; every float written once."""
    h, w, vl = x.shape[1], x.shape[2], x.shape[3]
    n_cb = buf.shape[0] // (na * nb * hq * wq * vl)
    xf = x.reshape(-1)
    for cb in range(n_cb):
        for a in range(na):
            for b in range(nb):
                v_lo, v_hi = valid_range(wq, b - pl, sw, w)
                v_hi = max(v_lo, v_hi)
                for u in range(hq):
                    d = ((((cb * na) + a) * nb + b) * hq + u) * wq * vl
                    r = u * sh + a - pt
                    if r < 0 or r >= h or v_hi == v_lo:
                        zero_run(buf, d, wq * vl)
                        continue
                    zero_run(buf, d, v_lo * vl)
                    src = ((cb * h + r) * w + v_lo * sw + b - pl) * vl
                    if sw == 1:
                        copy_run(xf, src, buf, d + v_lo * vl, (v_hi - v_lo) * vl)
                    else:
                        for v in range(v_hi - v_lo):
                            copy_run(xf, src + v * sw * vl, buf, d + (v_lo + v) * vl, vl)
                    zero_run(buf, d + v_hi * vl, (wq - v_hi) * vl)
