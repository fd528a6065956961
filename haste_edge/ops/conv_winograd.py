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
from haste_edge.ops.registry import Prepared
from haste_edge.ops.window import split_phases
from haste_edge.scratch import scratch
from haste_edge.threads import kernel_threads

G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)
_TAIL = 64


def applicable(attrs, group: int) -> bool:
    return (group == 1 and list(attrs["kernel_shape"]) == [3, 3] and list(attrs["strides"]) == [1, 1]
            and list(attrs["dilations"]) == [1, 1])


def transform_filters(w: np.ndarray, g: np.ndarray = G) -> np.ndarray:
    """U (n*n, C_out, C_in): g w g^T per filter, positions row-major, float64 then float32 (g the
    n x 3 filter transform: this module's G, or conv_winograd4's)."""
    u = np.einsum("ak,ockl,bl->aboc", g, w.astype(np.float64), g)
    return u.reshape(g.shape[0] ** 2, w.shape[0], w.shape[1]).astype(np.float32)


class Products:
    """The per-position GEMMs M[p] = U[p] @ V[p] of a Winograd conv on the microkernel, prepared
    once: U (positions, C_out, C_in) packed into panels, V laid out [p, c, cols] with `blocks`
    columns (tap k = c of position p starts at offs[p, c]), M (positions, rows, cols)."""

    def __init__(self, u: np.ndarray, blocks: int):
        n_pos, c_out, c_in = u.shape
        self.variant = mk.choose_variant(c_out, blocks)
        mr = mk.mr_of(self.variant)
        self.panels = np.stack([mk.pack_panels(u[p], mr) for p in range(n_pos)])
        self.rows = self.panels.shape[1] * mr
        self.cols = mk.padded_columns(blocks, self.variant)
        self.offs = ((np.arange(n_pos)[:, None] * c_in + np.arange(c_in)[None, :]) * self.cols).astype(np.int64)
        self.zero_rows = np.zeros(self.rows, np.float32)       # the products' own epilogue adds nothing

    def buffers(self, c_in: int):
        """(V flat, M) in the thread's scratch."""
        n_pos = self.panels.shape[0]
        v = scratch("wino_v", n_pos * c_in * self.cols + _TAIL)
        return v, scratch("wino_m", n_pos * self.rows * self.cols).reshape(n_pos, self.rows, self.cols)


class WinogradConv(Prepared):
    """One node's prepared state: packed transformed filters and the block geometry."""

    def __init__(self, w: np.ndarray, plan):
        """w the node's weights, plan its conv._Plan (output size)."""
        ho, wo = plan.out_shape[2], plan.out_shape[3]
        self.w_src = w
        self.th, self.tw = -(-ho // 2), -(-wo // 2)            # 2x2 output blocks
        self.blocks = self.th * self.tw
        self.products = Products(transform_filters(w), self.blocks)

    def calls(self, x, y, bias, plan):
        """y (N, C_out, ho, wo) = the conv of x, bias (C_out,) and clamp added by the output transform."""
        # Numba's Python-level call starts its thread pool: a parallel kernel reached only from
        # compiled code (as the products are here) crashes the process if the pool was never started
        serial = kernel_threads() == 1 or plan.micro_serial
        c_in = x.shape[1]
        # 2x2 phases of the padded input, rows/cols enough for every block (th + 1 per phase)
        hq, wq = self.th + 1, self.tw + 1
        ph = scratch("phases", c_in * 4 * hq * wq).reshape(c_in, 2, 2, hq * wq)
        pr = self.products
        v, m = pr.buffers(c_in)
        return [(_winograd_images, (x, y, ph, v, m, pr.panels, pr.offs, bias, pr.zero_rows, pr.variant,
                                    plan.geo[6], plan.geo[7], hq, wq, self.th, self.tw, pr.cols, plan.lo, plan.hi,
                                    serial))]


@njit
def _winograd_images(x, y, ph, v, m, panels, offs, bias, zero_bias, variant, pt, pl, hq, wq, th, tw, cols,
                     lo, hi, serial):
    n_img, c_in = x.shape[0], x.shape[1]
    for n in range(n_img):
        for c in range(c_in):
            split_phases(x[n, c], ph[c], 2, 2, pt, pl, hq, wq, 2, 2)
        _input_transform(ph, v, hq, wq, th, tw, cols)
        mk.gemm_batched(variant, panels, v, offs, m, zero_bias, -np.inf, np.inf, not serial)
        _output_transform(m, y[n], bias, th, tw, lo, hi)


@njit(parallel=True)
def _input_transform(ph, v, hq, wq, th, tw, cols):
    """v[(p*C + c)*cols + ty*tw + tx] = (B^T d B)[p] of the block at (2ty, 2tx) of channel c,
    from its 2x2 phases (even/odd rows a, even/odd columns b: ph[c, a, b, u*wq + t]). Per block
    row and column term j, the four rows' terms feed the four positions (i, j): every loop runs
    over the blocks of a row with unit stride and vectorises, and nothing is computed twice."""
    c_in = ph.shape[0]
    step = c_in * cols                                   # from position p to p + 1
    for c in prange(c_in):
        for ty in range(th):
            lo, hi = ty * wq, (ty + 1) * wq              # phase rows of block rows 0/1, then 2/3
            e0, o0 = ph[c, 0, 0, lo:lo + wq], ph[c, 0, 1, lo:lo + wq]
            e1, o1 = ph[c, 1, 0, lo:lo + wq], ph[c, 1, 1, lo:lo + wq]
            e2, o2 = ph[c, 0, 0, hi:hi + wq], ph[c, 0, 1, hi:hi + wq]
            e3, o3 = ph[c, 1, 0, hi:hi + wq], ph[c, 1, 1, hi:hi + wq]
            base = c * cols + ty * tw
            for j in range(4):
                v0 = v[base + j * step:base + j * step + tw]
                v1 = v[base + (4 + j) * step:base + (4 + j) * step + tw]
                v2 = v[base + (8 + j) * step:base + (8 + j) * step + tw]
                v3 = v[base + (12 + j) * step:base + (12 + j) * step + tw]
                for tx in range(tw):
                    # column term j of block rows 0..3: d B, d = [even tx, odd tx, even tx+1, odd tx+1]
                    if j == 0:
                        r0, r1, r2, r3 = e0[tx] - e0[tx + 1], e1[tx] - e1[tx + 1], e2[tx] - e2[tx + 1], e3[tx] - e3[tx + 1]
                    elif j == 1:
                        r0, r1, r2, r3 = o0[tx] + e0[tx + 1], o1[tx] + e1[tx + 1], o2[tx] + e2[tx + 1], o3[tx] + e3[tx + 1]
                    elif j == 2:
                        r0, r1, r2, r3 = e0[tx + 1] - o0[tx], e1[tx + 1] - o1[tx], e2[tx + 1] - o2[tx], e3[tx + 1] - o3[tx]
                    else:
                        r0, r1, r2, r3 = o0[tx] - o0[tx + 1], o1[tx] - o1[tx + 1], o2[tx] - o2[tx + 1], o3[tx] - o3[tx + 1]
                    v0[tx] = r0 - r2                     # then B^T over the rows
                    v1[tx] = r1 + r2
                    v2[tx] = r2 - r1
                    v3[tx] = r1 - r3


@njit(parallel=True)
def _output_transform(m, y, bias, th, tw, lo, hi):
    """y[o, 2ty + a, 2tx + b] = clamp(bias[o] + (A^T M A)[a, b]) of block (ty, tx); the 16
    positions of a block row are read as unit-stride runs over its blocks."""
    c_out, ho, wo = y.shape
    lo32, hi32 = np.float32(lo), np.float32(hi)
    for o in prange(c_out):
        bv = bias[o]
        for ty in range(th):
            t0 = ty * tw
            for a in range(2):
                r = 2 * ty + a
                if r >= ho:
                    continue
                yr = y[o, r]
                for tx in range(tw):
                    t = t0 + tx
                    if a == 0:       # A^T row 0 over block rows: m0 + m1 + m2
                        s0 = m[0, o, t] + m[4, o, t] + m[8, o, t]
                        s1 = m[1, o, t] + m[5, o, t] + m[9, o, t]
                        s2 = m[2, o, t] + m[6, o, t] + m[10, o, t]
                        s3 = m[3, o, t] + m[7, o, t] + m[11, o, t]
                    else:            # row 1: m1 - m2 - m3
                        s0 = m[4, o, t] - m[8, o, t] - m[12, o, t]
                        s1 = m[5, o, t] - m[9, o, t] - m[13, o, t]
                        s2 = m[6, o, t] - m[10, o, t] - m[14, o, t]
                        s3 = m[7, o, t] - m[11, o, t] - m[15, o, t]
                    y0 = s0 + s1 + s2 + bv
                    y1 = s1 - s2 - s3 + bv
                    y0 = lo32 if y0 < lo32 else y0
                    y1 = lo32 if y1 < lo32 else y1
                    yr[2 * tx] = hi32 if y0 > hi32 else y0
                    if 2 * tx + 1 < wo:
                        yr[2 * tx + 1] = hi32 if y1 > hi32 else y1
