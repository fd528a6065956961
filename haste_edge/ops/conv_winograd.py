"""Winograd F(2x2, 3x3) for 3x3 stride-1 undilated convs, its 16 products on the microkernel.

Each 2x2 block of outputs comes from a 4x4 block of the padded input d (blocks overlap by 2):
    Y = A^T [ (G g G^T) * (B^T d B) ] A        (* elementwise over the 4x4 positions)
    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]
so per output block and channel pair 16 multiplications instead of 36 (2.25x fewer). Summed over
input channels, position (i, j) of every block is one product M[ij] = U[ij] @ V[ij] of the
(C_out x C_in) transformed filters and the (C_in x blocks) transformed inputs: 16 microkernel
GEMMs with U packed once per node. The input transform reads the padded input split into its 2x2
stride phases, so every 4x4 block's even and odd columns are contiguous runs and the transform is
a few vector additions per block row; the output transform adds the bias and clamps.

Accuracy: the transforms' coefficients are 0, +-1/2, +-1, so the products' rounding grows by at
most a small constant over direct convolution: measured against a float64 reference within 2e-6
of the output's scale on the bundled model's layers (tests/test_winograd.py states the bound).
"""
from __future__ import annotations

import numpy as np

from haste_edge import microkernel as mk
from haste_edge.jit import njit, prange
from haste_edge.ops.window import split_phases
from haste_edge.scratch import scratch

G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)
_TAIL = 64


def applicable(attrs, group: int) -> bool:
    return (group == 1 and list(attrs["kernel_shape"]) == [3, 3] and list(attrs["strides"]) == [1, 1]
            and list(attrs["dilations"]) == [1, 1])


def transform_filters(w: np.ndarray) -> np.ndarray:
    """U (16, C_out, C_in): G g G^T per filter, positions row-major, float64 then float32."""
    u = np.einsum("ak,ockl,bl->aboc", G, w.astype(np.float64), G)
    return u.reshape(16, w.shape[0], w.shape[1]).astype(np.float32)


class WinogradConv:
    """One node's prepared state: packed transformed filters and the block geometry."""

    def __init__(self, w: np.ndarray, ho: int, wo: int):
        self.w_src = w
        c_out, c_in = w.shape[0], w.shape[1]
        self.th, self.tw = -(-ho // 2), -(-wo // 2)            # 2x2 output blocks
        self.blocks = self.th * self.tw
        self.variant = mk.choose_variant(c_out, self.blocks)
        mr = mk.mr_of(self.variant)
        u = transform_filters(w)
        self.panels = np.stack([mk.pack_panels(u[p], mr) for p in range(16)])
        self.rows = self.panels.shape[1] * mr
        self.cols = mk.padded_columns(self.blocks, self.variant)
        # V[p, c, t] at (p*C_in + c)*cols + t: tap k = c of position p starts at offs[p, c]
        self.offs = ((np.arange(16)[:, None] * c_in + np.arange(c_in)[None, :]) * self.cols).astype(np.int64)
        self.bias = (None, None)

    def padded_bias(self, b, c_out):
        if self.bias[0] is not b or self.bias[1] is None:
            full = np.zeros(c_out, np.float32) if b is None else np.asarray(b, np.float32)
            self.bias = (b, full.copy())
        return self.bias[1]

    def run(self, x, y, b, pt, pl, lo, hi, serial):
        n_img, c_in, h, w = x.shape
        c_out = y.shape[1]
        # 2x2 phases of the padded input, rows/cols enough for every block (th + 1 per phase)
        hq, wq = self.th + 1, self.tw + 1
        ph = scratch("phases", c_in * 4 * hq * wq).reshape(c_in, 2, 2, hq * wq)
        v = scratch("wino_v", 16 * c_in * self.cols + _TAIL)
        m = scratch("wino_m", 16 * self.rows * self.cols).reshape(16, self.rows, self.cols)
        _winograd_images(x, y, ph, v, m, self.panels, self.offs, self.padded_bias(b, c_out), self.variant,
                         pt, pl, hq, wq, self.th, self.tw, self.cols, lo, hi, serial)


@njit
def _winograd_images(x, y, ph, v, m, panels, offs, bias, variant, pt, pl, hq, wq, th, tw, cols, lo, hi,
                     serial):
    n_img, c_in = x.shape[0], x.shape[1]
    zero_bias = np.zeros(m.shape[1], dtype=np.float32)
    for n in range(n_img):
        for c in range(c_in):
            split_phases(x[n, c], ph[c], 2, 2, pt, pl, hq, wq, 2, 2)
        _input_transform(ph, v, hq, wq, th, tw, cols)
        for p in range(16):
            if serial:
                mk.gemm_tiles_serial(variant, panels[p], v, offs[p], m[p], zero_bias, -np.inf, np.inf)
            else:
                mk.gemm_tiles(variant, panels[p], v, offs[p], m[p], zero_bias, -np.inf, np.inf)
        _output_transform(m, y[n], bias, th, tw, lo, hi)


@njit(parallel=True)
def _input_transform(ph, v, hq, wq, th, tw, cols):
    """v[(p*C + c)*cols + ty*tw + tx] = (B^T d B)[p] of the block at (2ty, 2tx) of channel c,
    from its 2x2 phases: even/odd rows a, even/odd columns b, ph[c, a, b, u*wq + t]."""
    c_in = ph.shape[0]
    for c in prange(c_in):
        ee, eo, oe, oo = ph[c, 0, 0], ph[c, 0, 1], ph[c, 1, 0], ph[c, 1, 1]
        for ty in range(th):
            r0, r1 = ty * wq, (ty + 1) * wq                  # phase rows of block rows 0/1 and 2/3
            base = c * cols + ty * tw
            for tx in range(tw):
                # column transform of block rows 0..3 (row i = phase row (i % 2) at ty + i // 2)
                e0a, o0a, e0b, o0b = ee[r0 + tx], eo[r0 + tx], ee[r0 + tx + 1], eo[r0 + tx + 1]
                e1a, o1a, e1b, o1b = oe[r0 + tx], oo[r0 + tx], oe[r0 + tx + 1], oo[r0 + tx + 1]
                e2a, o2a, e2b, o2b = ee[r1 + tx], eo[r1 + tx], ee[r1 + tx + 1], eo[r1 + tx + 1]
                e3a, o3a, e3b, o3b = oe[r1 + tx], oo[r1 + tx], oe[r1 + tx + 1], oo[r1 + tx + 1]
                a0, a1, a2, a3 = e0a - e0b, o0a + e0b, e0b - o0a, o0a - o0b
                b0, b1, b2, b3 = e1a - e1b, o1a + e1b, e1b - o1a, o1a - o1b
                c0, c1, c2, c3 = e2a - e2b, o2a + e2b, e2b - o2a, o2a - o2b
                d0, d1, d2, d3 = e3a - e3b, o3a + e3b, e3b - o3a, o3a - o3b
                t = base + tx
                step = c_in * cols                           # from position p to p + 1
                v[t] = a0 - c0
                v[t + step] = a1 - c1
                v[t + 2 * step] = a2 - c2
                v[t + 3 * step] = a3 - c3
                v[t + 4 * step] = b0 + c0
                v[t + 5 * step] = b1 + c1
                v[t + 6 * step] = b2 + c2
                v[t + 7 * step] = b3 + c3
                v[t + 8 * step] = c0 - b0
                v[t + 9 * step] = c1 - b1
                v[t + 10 * step] = c2 - b2
                v[t + 11 * step] = c3 - b3
                v[t + 12 * step] = b0 - d0
                v[t + 13 * step] = b1 - d1
                v[t + 14 * step] = b2 - d2
                v[t + 15 * step] = b3 - d3


@njit(parallel=True)
def _output_transform(m, y, bias, th, tw, lo, hi):
    """y[o, 2ty + a, 2tx + b] = clamp(bias[o] + (A^T M A)[a, b]) of block (ty, tx)."""
    c_out, ho, wo = y.shape
    lo32, hi32 = np.float32(lo), np.float32(hi)
    for o in prange(c_out):
        bv = bias[o]
        for ty in range(th):
            for tx in range(tw):
                t = ty * tw + tx
                m00, m01, m02, m03 = m[0, o, t], m[1, o, t], m[2, o, t], m[3, o, t]
                m10, m11, m12, m13 = m[4, o, t], m[5, o, t], m[6, o, t], m[7, o, t]
                m20, m21, m22, m23 = m[8, o, t], m[9, o, t], m[10, o, t], m[11, o, t]
                m30, m31, m32, m33 = m[12, o, t], m[13, o, t], m[14, o, t], m[15, o, t]
                s00, s01, s02, s03 = m00 + m10 + m20, m01 + m11 + m21, m02 + m12 + m22, m03 + m13 + m23
                s10, s11, s12, s13 = m10 - m20 - m30, m11 - m21 - m31, m12 - m22 - m32, m13 - m23 - m33
                ys = (s00 + s01 + s02, s01 - s02 - s03, s10 + s11 + s12, s11 - s12 - s13)
                for ab in range(4):
                    r, q = 2 * ty + ab // 2, 2 * tx + ab % 2
                    if r < ho and q < wo:
                        val = ys[ab] + bv
                        val = lo32 if val < lo32 else val
                        y[o, r, q] = hi32 if val > hi32 else val
