"""Conv as a GEMM on the microkernel: no BLAS, and on large maps no im2col either.

Per image (and group) the zero-padded input is split into stride phases (ph[c, a, b, u*wq + v] =
xpad[c, u*sh + a, v*sw + b]), which turns every kernel tap into a plain shift: tap k = (c, i, j)
of output pixel (p, q) reads the phase buffer at offs[k] + p*wq + q, offs[k] the start of phase
(i*dh % sh, j*dw % sw) of channel c plus (i*dh // sh)*wq + j*dw // sw. Three layouts of the
product's columns:
- wide (implicit GEMM): output pixel (p, q) is column p*wq + q and the microkernel reads the
  phases directly. The wq - wo columns past each row's end are junk, cropped afterwards.
- exact (small maps, where the junk would be a large share: a 4x4 map with a 3x3 kernel has
  6-wide phase rows): the taps are gathered from the phases into (K, ho*wo) columns first.
- pointwise (1x1, stride 1, unpadded): the image itself is B, nothing copied; the columns past
  the last whole tile go through a small zero-padded copy (a tile must not read past the image).
- lanes (the output channels in the vector lanes; microkernel.gemm_lanes): blocks of MR pixels
  of one output row are read where they lie, in the phases (or, pointwise, in the image) at
  taps[k] + p*wq + q0, and the weights packed (K, C_out) are the vector operand; nothing is
  gathered and no junk column computed when MR divides the row (7x7 maps: MR = 7). The product
  comes out pixel-major and is transposed into y.
Otherwise out[o, t] = clamp(bias[o] + sum_k W[o, k] * B[offs[k] + t]) is the microkernel's
product with its fused epilogue (tile shape per layer: microkernel.choose_variant); the weights
are packed into its panels once per node. When the padded product has the output's shape (exact
layout, C_out a multiple of MR, ho*wo of NR) it is written straight into the output, otherwise
into a scratch from which the real rows and columns are cropped. One compiled call per image and
group does all of it (Python-level calls cost microseconds each, a 4x4 layer's whole product ~0.2 ms).
"""
from __future__ import annotations

import numpy as np

from haste_edge import microkernel as mk
from haste_edge.jit import njit
from haste_edge.ops.registry import Prepared
from haste_edge.ops.window import copy_every_other, copy_run, split_phases, valid_range, zero_run
from haste_edge.scratch import aligned_empty, scratch
from haste_edge.threads import kernel_threads

# Junk columns per output row (wq - wo) relative to wq above which the exact layout is used.
_WIDE_MAX_JUNK = 0.15
VW = mk.DWB_VL       # the lanes tiles' vector width
_TAIL = 64          # floats past the end of B a tile may read: at least every variant's NR


# The lanes layout (module docstring) is taken on small maps (where the exact layout would be)
# and pointwise convs when the pixel-wide tiles would pad the product by more than this factor
# over the lanes tile's padding: it paid on 7x7 maps (49 pixels padded to 64), not where neither
# pads (4x4 maps, large pointwise ones). Whole models, 1 thread: benchmarks/results/
# conv_rule_no-lanes_x86_64.md and conv_rule_lanes-small_x86_64.md.
LANES_MIN_GAIN = 1.15
LANES = True        # False: never (benchmarks compare)
# Exact columns of 4-pixel-wide maps gathered a 4x4 window at a time (gather_taps); False: by the
# offset table (benchmarks compare: bench_conv_rule.py --against gather-by-table).
WINDOWS = True


def exact_layout(plan) -> bool:
    """Whether a windowed conv gathers exact columns (its junk columns would be a large share)."""
    kh, kw = plan.geo[:2]
    return kh * kw > 1 and (plan.wq - plan.out_shape[3]) > _WIDE_MAX_JUNK * plan.wq


def lanes_variant(plan, cog) -> int | None:
    """The lanes tile for a conv's rows, None if none fits: pointwise, blocks run over the flat
    image and MR must divide it (no block may read past the image)."""
    ho, wo = plan.out_shape[2], plan.out_shape[3]
    return mk.choose_lanes(ho * wo, cog, divides=True) if plan.pointwise else mk.choose_lanes(wo, cog)


def use_lanes(plan, cog) -> bool:
    """Whether a conv takes the lanes layout (rule above)."""
    if not LANES or not (plan.pointwise or exact_layout(plan)):
        return False
    v = lanes_variant(plan, cog)
    if v is None:
        return False
    ho, wo = plan.out_shape[2], plan.out_shape[3]
    mr, nr = mk.lanes_dims_py(v)
    pixels = ho * wo if plan.pointwise else ho * (-(-wo // mr) * mr)
    lanes_work = pixels * (-(-cog // nr) * nr)
    v = mk.choose_variant(cog, ho * wo)
    pixel_work = mk.padded_columns(ho * wo, v) * (-(-cog // mk.mr_of(v)) * mk.mr_of(v))
    return pixel_work > LANES_MIN_GAIN * lanes_work


def phase_taps(plan, c_in) -> np.ndarray:
    """Where tap k = (c, i, j) (c < c_in) starts in the stride phases of group_phases: the module
    docstring's offs[k], int64."""
    kh, kw, sh, sw, dh, dw = plan.geo[:6]
    c, i, j = np.meshgrid(np.arange(c_in), np.arange(kh), np.arange(kw), indexing="ij")
    phase = (i * dh % sh) * sw + (j * dw % sw)
    return ((c * sh * sw + phase) * plan.hq * plan.wq + (i * dh // sh) * plan.wq
            + (j * dw // sw)).reshape(-1).astype(np.int64)


class DirectConv(Prepared):
    """What the GEMM needs for one conv node, computed once: layout, tile shape, packed weights
    per group, tap offsets."""

    def __init__(self, w: np.ndarray, plan):
        """w the node's weights, plan its conv._Plan (geometry, group, phase sizes)."""
        kh, kw, sh, sw, dh, dw = plan.geo[:6]
        group, hq, wq = plan.group, plan.hq, plan.wq
        ho, wo = plan.out_shape[2], plan.out_shape[3]
        c_out, cig = w.shape[0], w.shape[1]
        self.cog = cog = c_out // group
        self.w_src = w                                      # packed from this array
        self.k = k = cig * kh * kw
        # 1x1, stride 1, unpadded: the image itself is B (tap c at c*H*W), nothing copied
        self.pointwise = plan.pointwise
        self.plane = hq * wq
        self.group_phases = cig * sh * sw * self.plane      # one group's phase floats
        self.taps = phase_taps(plan, cig)                    # tap starts in the phases
        self.bias = (None, None)                            # (source b, padded per group)
        self.group = group
        self.lanes = plan.lanes
        self.pf = mk.LANES_PREFETCH_K                       # read when prepared (benchmarks compare)
        if self.lanes:
            self._init_lanes(w, plan)
            return
        self.exact = exact_layout(plan)
        self.windows = self.exact and WINDOWS and wo == 4 and ho % 4 == 0   # gather_taps by 4x4 windows
        self.length = ho * wo if self.exact or self.pointwise else (ho - 1) * wq + wo
        self.variant = mk.choose_variant(cog, self.length)
        mr = mk.mr_of(self.variant)
        self.panels = np.empty((group, -(-cog // mr), k * mr), np.float32)
        for g in range(group):
            mk.pack_panels(w[g * cog:(g + 1) * cog].reshape(cog, k), mr, self.panels[g])
        self.cols = mk.padded_columns(self.length, self.variant)
        self.rows = self.panels.shape[1] * mr               # cog rounded up to MR
        self.direct_out = self.exact and self.rows == cog and self.cols == self.length
        self.offs = (np.arange(k) * self.length).astype(np.int64) if self.exact or self.pointwise else self.taps
        # pointwise: the last length % NR columns go through a zero-padded copy (B's tiles may not
        # read past the image), read at tail_offs
        self.tail_offs = (np.arange(k) * mk.nr_of(self.variant)).astype(np.int64)

    def _init_lanes(self, w, plan):
        """The lanes layout's state: weights packed in panels per group, pixel blocks' starts."""
        ho, wo = plan.out_shape[2], plan.out_shape[3]
        cog, k, group = self.cog, self.k, plan.group
        self.variant = lanes_variant(plan, cog)
        mr, nr = mk.lanes_dims_py(self.variant)
        n_cb = -(-cog // nr)
        self.rows = self.ldb = n_cb * nr                    # channels padded (bias, the product's rows)
        # panels on cache lines (pack_lanes)
        self.wt = aligned_empty(group * n_cb * k * nr).reshape(group, n_cb, k * nr)
        for g in range(group):
            self.wt[g] = mk.pack_lanes(w[g * cog:(g + 1) * cog].reshape(cog, k), nr)
        if self.pointwise:                                  # blocks over the flat image
            hw = ho * wo
            self.pitch = wo
            self.a_starts = np.arange(0, hw, mr, dtype=np.int64)
            self.c_rows = self.a_starts
            self.aoffs = (np.arange(k) * hw).astype(np.int64)
        else:                                               # blocks along each output row
            self.pitch = -(-wo // mr) * mr
            p, q0 = np.meshgrid(np.arange(ho), np.arange(0, wo, mr), indexing="ij")
            self.a_starts = (p * plan.wq + q0).reshape(-1).astype(np.int64)
            self.c_rows = (p * self.pitch + q0).reshape(-1).astype(np.int64)
            self.aoffs = self.taps
        self.c_starts = (self.c_rows * self.ldb).astype(np.int64)
        self.panel_starts = (np.arange(n_cb) * nr).astype(np.int64)     # in C and in the bias

    def padded_bias(self, bias) -> np.ndarray:
        """(group, rows): the bias per group padded to the panels' rows, kept while the same array
        comes in (conv() passes the node's bias array, or its plan's zeros)."""
        if self.bias[0] is not bias:
            self.bias = (bias, np.stack([mk.pad_rows(bias[g * self.cog:(g + 1) * self.cog], self.rows)
                                         for g in range(self.group)]))
        return self.bias[1]

    def calls(self, x, y, bias, plan):
        """y (N, C_out, ho, wo) = the conv of x (N, C_in, H, W), bias (C_out,) and clamp included."""
        # Numba's Python-level call starts its thread pool: a parallel kernel reached only from
        # compiled code (as the product is here, even on its serial branch) crashes the process if
        # the pool was never started: so this call comes first
        serial = kernel_threads() == 1 or plan.micro_serial
        if self.lanes:
            ho = plan.out_shape[2]
            ph = scratch("phases", (0 if self.pointwise else self.group_phases) + _TAIL)
            ct = scratch("wide", ho * self.pitch * self.ldb)
            kh, kw, sh, sw, dh, dw, pt, pl = plan.geo[:8]
            return [(_lanes_images, (x, y, ph, self.aoffs, self.a_starts, self.c_starts, self.panel_starts, self.wt,
                                     self.ldb, self.padded_bias(bias), ct, self.pitch, self.variant, self.pointwise,
                                     sh, sw, pt, pl, plan.hq, plan.wq, plan.na, plan.nb, plan.lo, plan.hi, serial,
                                     self.pf))]
        if self.pointwise:
            nr = mk.nr_of(self.variant)
            tail_b = scratch("cols", self.k * nr)
            tail_c = scratch("wide", self.rows * (nr + (0 if self.rows == self.cog else self.length)))
            return [(_pointwise_images, (x, y, self.offs, self.tail_offs, self.panels, self.padded_bias(bias), tail_b,
                                         tail_c, self.variant, plan.lo, plan.hi, serial))]
        kh, kw, sh, sw, dh, dw, pt, pl = plan.geo[:8]
        ph = scratch("phases", self.group_phases + _TAIL)
        cols = scratch("cols", self.k * self.length + _TAIL) if self.exact else ph
        out = scratch("wide", self.rows * self.cols).reshape(self.rows, self.cols)
        return [(_conv_images, (x, y, ph, cols, self.taps, self.offs, self.panels, self.padded_bias(bias), out,
                                self.variant, self.exact, self.windows, self.direct_out, sh, sw, pt, pl, plan.hq, plan.wq, plan.na,
                                plan.nb, plan.lo, plan.hi, serial))]


@njit
def _conv_images(x, y, ph, cols, taps, offs, panels, biases, out, variant, exact, windows, direct_out,
                 sh, sw, pt, pl, hq, wq, na, nb, lo, hi, serial):
    """DirectConv.run's loop over images and groups (module docstring), compiled as one call."""
    n_img = x.shape[0]
    group = panels.shape[0]
    cig, cog = x.shape[1] // group, y.shape[1] // group
    ho, wo = y.shape[2], y.shape[3]
    for n in range(n_img):
        for g in range(group):
            group_phases(x[n], g * cig, cig, ph, sh, sw, pt, pl, hq, wq, na, nb)
            if exact:
                gather_taps(ph, taps, cols, ho, wo, wq, windows)
            yg = y[n, g * cog:(g + 1) * cog]
            dst = yg.reshape(cog, ho * wo) if direct_out else out
            if serial:
                mk.gemm_tiles_serial(variant, panels[g], cols, offs, dst, biases[g], lo, hi)
            else:
                mk.gemm_tiles(variant, panels[g], cols, offs, dst, biases[g], lo, hi)
            if not direct_out:
                crop(out, yg, wo if exact else wq)


@njit
def _lanes_images(x, y, ph, aoffs, a_starts, c_starts, panel_starts, wt, ldb, biases, ct, pitch, variant, pointwise,
                  sh, sw, pt, pl, hq, wq, na, nb, lo, hi, serial, pf):
    """DirectConv.run for the lanes layout: per image and group, phases (unless pointwise), the
    lanes product into ct (pixel (p, q) at row p*pitch + q), ct transposed into y."""
    n_img, group = x.shape[0], wt.shape[0]
    cig, cog = x.shape[1] // group, y.shape[1] // group
    for n in range(n_img):
        for g in range(group):
            if pointwise:
                mk.gemm_lanes(variant, x[n, g * cig:(g + 1) * cig].reshape(-1), aoffs, a_starts, wt[g], ct,
                              c_starts, ldb, VW, panel_starts, panel_starts, biases[g], lo, hi, not serial, pf)
            else:
                group_phases(x[n], g * cig, cig, ph, sh, sw, pt, pl, hq, wq, na, nb)
                mk.gemm_lanes(variant, ph, aoffs, a_starts, wt[g], ct, c_starts, ldb, VW, panel_starts,
                              panel_starts, biases[g], lo, hi, not serial, pf)
            lanes_to_out(ct, ldb, pitch, y[n, g * cog:(g + 1) * cog])


@njit
def lanes_to_out(ct, ldb, pitch, y):
    """y[o, p, q] = ct[(p*pitch + q)*ldb + o]: the lanes product (pixel-major) into the output, in
    blocks of 64 pixels of one row so the rows of ct read stay in cache while every channel passes."""
    c_out, ho, wo = y.shape
    for p in range(ho):
        for q0 in range(0, wo, 64):
            q1 = min(wo, q0 + 64)
            for o in range(c_out):
                d = y[o, p]
                for q in range(q0, q1):
                    d[q] = ct[(p * pitch + q) * ldb + o]


@njit
def _pointwise_images(x, y, offs, tail_offs, panels, biases, tail_b, scr, variant, lo, hi, serial):
    """1x1 stride-1 unpadded convs: per image and group the product reads the image in place.
    Columns up to the last whole tile go straight into y (or, when C_out is not a multiple of MR,
    into a scratch whose real rows are copied); the rest through a zero-padded copy of the image's
    last columns. scr holds the tail's product (rows x NR) and, if needed, the rows' scratch."""
    n_img, group = x.shape[0], panels.shape[0]
    cig, cog = x.shape[1] // group, y.shape[1] // group
    hw = x.shape[2] * x.shape[3]
    rows = panels.shape[1] * mk.tile_dims(variant)[0]
    nr = mk.tile_dims(variant)[1]
    full = hw // nr
    rest = hw - full * nr
    tail_c = scr[:rows * nr]
    tail_b[:] = 0.0
    for n in range(n_img):
        for g in range(group):
            b = x[n, g * cig:(g + 1) * cig].reshape(-1)
            yg = y[n, g * cog:(g + 1) * cog].reshape(cog, hw)
            dst = yg.reshape(-1) if rows == cog else scr[rows * nr:rows * (nr + hw)]
            if full:
                mk.gemm_strided(variant, panels[g], b, offs, dst, hw, full, biases[g], lo, hi, not serial)
            if rest:
                for c in range(cig):
                    tail_b[c * nr:c * nr + rest] = b[c * hw + full * nr:(c + 1) * hw]
                mk.gemm_strided(variant, panels[g], tail_b, tail_offs, tail_c, nr, 1, biases[g], lo, hi, False)
                for o in range(cog):
                    yg[o, full * nr:] = tail_c[o * nr:o * nr + rest]
            if rows != cog and full:
                for o in range(cog):
                    yg[o, :full * nr] = dst[o * hw:o * hw + full * nr]


@njit
def group_phases(x, c0, n_ch, ph, sh, sw, pt, pl, hq, wq, na, nb):
    """The stride phases of planes c0 .. c0 + n_ch - 1 of one image x (C, H, W), channel c's at
    ph[c*sh*sw*hq*wq:]: split_phases per plane, or pad_planes when only phase (0, 0) is read."""
    ld = sh * sw * hq * wq
    if na == 1 and nb == 1:
        pad_planes(x, c0, n_ch, ph, ld, sh, sw, pt, pl, hq, wq)
    else:
        for c in range(n_ch):
            split_phases(x[c0 + c], ph[c * ld:(c + 1) * ld].reshape(sh, sw, hq * wq), sh, sw, pt, pl, hq, wq,
                         na, nb)


@njit
def pad_planes(x, c0, n_ch, ph, ld, sh, sw, pt, pl, rows, wq):
    """split_phases of planes c0 .. c0 + n_ch - 1 of x (C, H, W, C-contiguous) when the taps read
    phase (0, 0) only (stride 1, or 1x1 kernels): ph[c*ld + u*wq + v] = xpad[c0 + c, u*sh, v*sw]
    (ld: a channel's phases), every plane in one pass (zeros, then one masked copy per row), not a
    call per plane: on 4x4 maps with 256 channels the calls cost 3x the copy. x is read flat: a
    reshape per plane is a call into Numba's runtime, and cost as much as the copies there."""
    h, w = x.shape[1], x.shape[2]
    plane = rows * wq
    if ld == plane:
        zero_run(ph, 0, n_ch * plane)
    else:
        for c in range(n_ch):
            zero_run(ph, c * ld, plane)
    u_lo, u_hi = valid_range(rows, -pt, sh, h)
    v_lo, v_hi = valid_range(wq, -pl, sw, w)
    n = v_hi - v_lo
    xf = x.reshape(-1)
    for c in range(n_ch):
        for u in range(u_lo, u_hi):
            src = ((c0 + c) * h + u * sh - pt) * w + v_lo * sw - pl
            dst = c * ld + u * wq + v_lo
            if sw == 1:
                copy_run(xf, src, ph, dst, n)
            elif sw == 2:
                copy_every_other(xf, src, ph, dst, n)
            else:
                for t in range(n):
                    ph[dst + t] = xf[src + t * sw]


@njit
def gather_taps(ph, taps, cols, ho, wo, wq, windows):
    """Exact columns from the phases: cols[k*ho*wo + p*wo + q] = ph[taps[k] + p*wq + q]. With
    windows (4-pixel rows, ho a multiple of 4) by 4x4 windows, one vector each; else one flat
    loop per tap over a table of the ho*wo source offsets: on small maps the rows are only a few
    floats long, and a loop per row costs more than its copy."""
    length = ho * wo
    if windows:
        for k in range(taps.shape[0]):
            for p in range(0, ho, 4):
                mk.window4x4(ph, taps[k] + p * wq, wq, cols, k * length + p * 4)
        return
    idx = np.empty(length, dtype=np.int64)
    for p in range(ho):
        for q in range(wo):
            idx[p * wo + q] = p * wq + q
    for k in range(taps.shape[0]):
        src = ph[taps[k]:]
        dst = cols[k * length:(k + 1) * length]
        for t in range(length):
            dst[t] = src[idx[t]]


@njit
def crop(src, y, width):
    """y[o, p, q] = src[o, p*width + q]: the real rows and columns of a padded product."""
    c_out, ho, wo = y.shape
    for o in range(c_out):
        for p in range(ho):
            s = src[o, p * width:p * width + wo]
            d = y[o, p]
            for q in range(wo):
                d[q] = s[q]
