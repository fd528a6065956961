"""Winograd F(4x4, 3x3) for 3x3 stride-1 undilated convs, its 36 products on the microkernel.

Each 4x4 block of outputs comes from a 6x6 block d of the padded input (blocks overlap by 2):
    Y = A^T [ (G g G^T) * (B^T d B) ] A        (* elementwise over the 6x6 positions)
with the interpolation points 0, +-1, +-2 (B^T, G, A^T below): 36 multiplications per output block
and channel pair instead of 144 (4x fewer; F(2x2) in conv_winograd.py saves 2.25x). Summed over
input channels, position p of every block is one product M[p] = U[p] @ V[p] of the (C_out x C_in)
transformed filters and the (C_in x blocks) transformed inputs: 36 microkernel GEMMs, U packed once
per node.

Layout: the padded input is split into its 4x4 stride phases (window.split_phases), so input row
r, column k of block (ty, tx) is phase (r % 4, k % 4) at (ty + r // 4) * wq + tx + k // 4, wq =
blocks per row + 1. Block s = ty * wq + tx then reads every tap at a fixed shift from s: each
transform stage is one unit-stride loop over s with a straight-line body, which LLVM vectorises
across blocks. The extra block per row (tx = wq - 1) is junk, computed and never stored, like the
wide layout's junk columns (conv_direct.py). The output transform writes whole 4x4 blocks into a
padded plane (straight into y when the output is a multiple of 4), cropped afterwards.

Accuracy: the transforms' coefficients reach 8 (A^T) and 1/24 (G), so the products' rounding
grows more than F(2x2)'s: on random layers of 3 to 256 input channels the error against a float64
reference was 6e-7 to 8e-7 * sqrt(C_in) of the output's scale (direct convolution: ~1e-7 *
sqrt(C_in)); tests/test_winograd.py holds it to 5e-6 * sqrt(C_in), ResNet-18 and VGG-11 at 224 to
1e-4 of the largest logit against onnxruntime (tests/test_dense_zoo.py).
"""
from __future__ import annotations

import numpy as np

from haste_edge import microkernel as mk
from haste_edge.jit import njit, prange
from haste_edge.ops import conv_winograd
from haste_edge.ops.registry import Prepared
from haste_edge.ops.window import split_phases
from haste_edge.scratch import scratch
from haste_edge.threads import kernel_threads

BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=np.float64)
G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
               [0, 1, -1, 8, -8, 1]], dtype=np.float64)
_TAIL = 64


def transform_filters(w: np.ndarray) -> np.ndarray:
    """U (36, C_out, C_in): G g G^T per filter, positions row-major."""
    return conv_winograd.transform_filters(w, G)


class Winograd4Conv(Prepared):
    """One node's prepared state: packed transformed filters and the block geometry."""

    def __init__(self, w: np.ndarray, plan):
        """w the node's weights, plan its conv._Plan (output size)."""
        ho, wo = plan.out_shape[2], plan.out_shape[3]
        self.w_src = w
        self.th, self.tw = -(-ho // 4), -(-wo // 4)            # 4x4 output blocks
        self.hq, self.wq = self.th + 1, self.tw + 1            # phase rows / columns blocks read
        # block index s = ty*wq + tx, the junk block per row included
        self.products = conv_winograd.Products(transform_filters(w), self.th * self.wq)
        self.direct_out = ho % 4 == 0 and wo % 4 == 0          # whole blocks: no padded plane

    def calls(self, x, y, bias, plan):
        """y (N, C_out, ho, wo) = the conv of x, bias (C_out,) and clamp added by the output transform."""
        # Numba's Python-level call starts its thread pool first (conv_direct.DirectConv.calls says why)
        serial = kernel_threads() == 1 or plan.micro_serial
        chunks = 1 if serial else kernel_threads()     # channel blocks of the transforms
        inputs, outputs = (_inputs_serial, _outputs_serial) if serial else (_inputs_pool, _outputs_pool)
        c_in, c_out = x.shape[1], y.shape[1]
        ho, wo = y.shape[2], y.shape[3]
        pr = self.products
        ph = scratch("phases", c_in * 16 * self.hq * self.wq + _TAIL)
        v, m = pr.buffers(c_in)
        t = scratch("wino_t", 36 * self.th * self.wq * chunks)   # the transforms' first stages, per channel block
        yp = None if self.direct_out else scratch("wide", c_out * 16 * self.th * self.tw).reshape(
            c_out, 4 * self.th, 4 * self.tw)
        calls = []
        for i in range(x.shape[0]):
            calls += [(inputs, (x[i], ph, v, t, plan.geo[6], plan.geo[7], self.hq, self.wq, self.th, pr.cols, chunks)),
                      (mk.gemm_batched, (pr.variant, pr.panels, v, pr.offs, m, pr.zero_rows, -np.inf, np.inf,
                                         not serial)),
                      (outputs, (m, y[i] if self.direct_out else yp, bias, t, self.th, self.tw, self.wq, plan.lo,
                                 plan.hi, chunks))]
            if not self.direct_out:
                calls.append((np.copyto, (y[i], yp[:, :ho, :wo])))
        return calls


def _make_stages(parallel: bool):
    """The input stage (phases and transform per input channel) and the output stage (transform per
    output channel), over `chunks` blocks of channels: on the pool (parallel) or the calling thread.
    Two compiled copies: a serial loop compiled inside a parallel=True function ran slower
    (microkernel.gemm_lanes)."""
    @njit(parallel=parallel)
    def inputs(x, ph, v, t, pt, pl, hq, wq, th, cols, chunks):
        c_in, plane, n = x.shape[0], hq * wq, th * wq
        per = -(-c_in // chunks)
        for ch in prange(chunks):
            tc = t[ch * 36 * n:(ch + 1) * 36 * n]
            for c in range(ch * per, min(c_in, (ch + 1) * per)):
                split_phases(x[c], ph[c * 16 * plane:(c + 1) * 16 * plane].reshape(4, 4, plane), 4, 4, pt, pl,
                             hq, wq, 4, 4)
                input_transform(ph[c * 16 * plane:], v[c * cols:], tc, c_in * cols, n, plane, wq)

    @njit(parallel=parallel)
    def outputs(m, y, bias, t, th, tw, wq, lo, hi, chunks):
        c_out, n = y.shape[0], th * wq
        per = -(-c_out // chunks)
        for ch in prange(chunks):
            o0, o1 = ch * per, min(c_out, (ch + 1) * per)
            if o0 < o1:
                output_transform(m, y, bias, t[ch * 24 * n:(ch + 1) * 24 * n], o0, o1, th, tw, wq, lo, hi)

    return inputs, outputs


_bt, _at = mk.winograd4_bt, mk.winograd4_at           # B^T and A^T on one 6-vector


@njit
def input_transform(ph, v, t, step, n_blocks, plane, wq):
    """v[p*step + s] = (B^T d B)[p] of block s of one channel, from its 4x4 phases ph (ph[(a*4 + b)
    * plane + u*wq + w] = xpad[4u + a, 4w + b]). Rows first into t[(r*6 + j)*n, s], then columns;
    each stage a unit-stride loop over the blocks."""
    n = n_blocks
    for r in range(6):
        row = ph[(r % 4) * 4 * plane + (r // 4) * wq:]
        d0, d1, d2, d3 = row[0:], row[plane:], row[2 * plane:], row[3 * plane:]
        d4, d5 = row[1:], row[plane + 1:]                 # columns 4, 5: phases 0, 1 one block on
        o = t[r * 6 * n:]
        for s in range(n):
            e0, e1, e2, e3, e4, e5 = _bt(d0[s], d1[s], d2[s], d3[s], d4[s], d5[s])
            o[s] = e0
            o[n + s] = e1
            o[2 * n + s] = e2
            o[3 * n + s] = e3
            o[4 * n + s] = e4
            o[5 * n + s] = e5
    for j in range(6):
        q = t[j * n:]                                     # t[(r*6 + j)*n + s] = q[r*6*n + s]
        for s in range(n):
            e0, e1, e2, e3, e4, e5 = _bt(q[s], q[6 * n + s], q[12 * n + s], q[18 * n + s], q[24 * n + s],
                                         q[30 * n + s])
            v[j * step + s] = e0
            v[(6 + j) * step + s] = e1
            v[(12 + j) * step + s] = e2
            v[(18 + j) * step + s] = e3
            v[(24 + j) * step + s] = e4
            v[(30 + j) * step + s] = e5


@njit(inline="always")
def _store(row, i, val, lo32, hi32):
    val = lo32 if val < lo32 else val
    row[i] = hi32 if val > hi32 else val


@njit
def output_transform(m, y, bias, t, o0, o1, th, tw, wq, lo, hi):
    """y[o, 4ty + a, 4tx + b] = clamp(bias[o] + (A^T M A)[a, b]) of block (ty, tx) for every block
    and output channel o0 <= o < o1: y (C_out, >= 4*th, >= 4*tw). Per output channel: A^T over the
    rows of M into t[(i*4 + b)*n + s] (a unit-stride loop over the blocks s), then over the columns,
    stored into y."""
    n = th * wq
    lo32, hi32 = np.float32(lo), np.float32(hi)
    for o in range(o0, o1):
        for i in range(6):
            m0, m1, m2, m3, m4, m5 = (m[i * 6, o], m[i * 6 + 1, o], m[i * 6 + 2, o], m[i * 6 + 3, o],
                                      m[i * 6 + 4, o], m[i * 6 + 5, o])
            q = t[i * 4 * n:]
            for s in range(n):
                a0, a1, a2, a3 = _at(m0[s], m1[s], m2[s], m3[s], m4[s], m5[s])
                q[s] = a0
                q[n + s] = a1
                q[2 * n + s] = a2
                q[3 * n + s] = a3
        bv = bias[o]
        for ty in range(th):
            y0, y1, y2, y3 = y[o, 4 * ty], y[o, 4 * ty + 1], y[o, 4 * ty + 2], y[o, 4 * ty + 3]
            for b in range(4):
                c0, c1, c2 = t[b * n + ty * wq:], t[(4 + b) * n + ty * wq:], t[(8 + b) * n + ty * wq:]
                c3, c4, c5 = t[(12 + b) * n + ty * wq:], t[(16 + b) * n + ty * wq:], t[(20 + b) * n + ty * wq:]
                for tx in range(tw):
                    a0, a1, a2, a3 = _at(c0[tx], c1[tx], c2[tx], c3[tx], c4[tx], c5[tx])
                    _store(y0, 4 * tx + b, a0 + bv, lo32, hi32)
                    _store(y1, 4 * tx + b, a1 + bv, lo32, hi32)
                    _store(y2, 4 * tx + b, a2 + bv, lo32, hi32)
                    _store(y3, 4 * tx + b, a3 + bv, lo32, hi32)


_inputs_serial, _outputs_serial = _make_stages(False)
_inputs_pool, _outputs_pool = _make_stages(True)
