"""Winograd F(4x4, 3x3) on channel-blocked tensors (conv_blocked's layout), VL channels per vector.

The same algorithm as conv_winograd4 (its docstring: Y = A^T [U * (B^T d B)] A per 4x4 block of
outputs, 36 products instead of 144 multiplications per output block and channel pair), laid out
so every stage works on whole vectors of VL channels:
- input: the blocked image, zero-padded (conv_blocked.blocked_phases with stride 1), then per
  channel block and 4x4 block s of outputs (its 6x6 window of VL-channel vectors) the transform
  microkernel.winograd4_input, into V[p, cb, s, lane] (p < 36 positions);
- products: per position p, M_p (blocks x C_out) = V_p (blocks x C_in) @ U_p (C_in x C_out) on the
  lanes tile (output channels in the vector lanes, MR blocks per tile, microkernel.gemm_lanes_batched),
  U_p packed once per node; M[p, cb, s, lane] is channel-blocked too;
- output: per output channel block and block s, microkernel.winograd4_output: A^T M A, bias,
  clamp, stored straight into the blocked output (edge blocks store only their real pixels).
The NCHW version transforms one channel at a time across blocks, strided by 4 pixels; here each
vector load holds VL channels of one pixel and nothing is strided. Blocks are counted row-major
(s = ty * tw + tx) and padded to a multiple of the tile's MR with junk blocks never stored.

Where U is small (FUSED_MAX_U_BYTES: it stays in the L2 cache), the three stages run per chunk of
blocks instead, with a small V and M that stay in cache: V and M make no round trip through memory
(on ResNet-18's 56x56 64-channel convs 1.8 MB each), at the price of reading U once per chunk. It
paid on one thread (benchmarks/results/conv_rule_no-winograd4-fused_x86_64.md). On more threads
the workers claim the chunks one by one, each with its own V and M (FUSED_POOL; pool.py): a
worker woken late takes fewer. The alternatives, chunks dealt in turn, fused on the calling
thread and the three stages on the pool, are kept for benchmarks/bench_conv_rule.py.

Accuracy as conv_winograd4's (tests/test_winograd_blocked.py holds it to the same bound).
"""
from __future__ import annotations

import numpy as np

from haste_edge import microkernel as mk
from haste_edge.jit import njit, prange
from haste_edge.ops.conv_blocked import blocked_phases, blocks, out_blocks
from haste_edge.ops.conv_winograd4 import transform_filters
from haste_edge.ops.registry import Prepared
from haste_edge.pool import claim
from haste_edge.scratch import aligned_empty, scratch
from haste_edge.threads import kernel_threads

VL = mk.DWB_VL
# k steps ahead the products prefetch U (0: not at all); U comes from memory on an inference's
# first pass, where the hardware prefetcher alone falls behind (microkernel.LANES_PREFETCH_K)
PREFETCH_K = 16
# U up to this many bytes: the stages run fused per chunk of blocks (module docstring), a chunk's V
# and M about CHUNK_BYTES together
FUSED_MAX_U_BYTES = 1 << 20
CHUNK_BYTES = 192 << 10
# on more threads: "workers" (chunks claimed by the pool's workers), "dealt" (dealt to them in
# turn), "calling" (fused on the calling thread), "stages" (the three stages apart, on the pool);
# module docstring
FUSED_POOL = "workers"
# ... but with fewer chunks per worker than this, the three stages on the pool: each worker of the
# fused loop reads all of U for its one chunk (the bundled model's 14x14 64-channel convs, where U
# is 4x the filters), where the stages' products split U between the workers
FUSED_MIN_CHUNKS_PER_WORKER = 2


def out_tiles(ho: int, wo: int) -> tuple[int, int]:
    """4x4 output blocks down and across."""
    return -(-ho // 4), -(-wo // 4)


def gemm_variant(ho: int, wo: int, c_out: int) -> int:
    """The lanes tile of the products: least padded work over the blocks and output channels."""
    th, tw = out_tiles(ho, wo)
    return mk.choose_lanes(th * tw, c_out)


def output_blocks(ho: int, wo: int, c_out: int) -> int:
    """Channel blocks the output buffer needs at least (a panel's NV)."""
    return out_blocks(c_out, gemm_variant(ho, wo, c_out))


class BlockedWinograd4Conv(Prepared):
    """One node's prepared state: U packed into lanes panels per position, the block geometry."""
    takes_residual = True

    def __init__(self, w: np.ndarray, plan):
        n_img, c_out, ho, wo = plan.out_shape
        c_in = plan.shapes[0][1]
        self.w_src = w
        self.th, self.tw = out_tiles(ho, wo)
        self.hp, self.wp = 4 * self.th + 2, 4 * self.tw + 2      # the padded rows and columns read
        v = gemm_variant(ho, wo, c_out)
        self.variant = v + mk.N_LANES                             # the tile reading blocks VL apart
        mr, nv = mk.LANES[v][0], mk.LANES[v][1]
        nr = nv * VL
        n = self.th * self.tw
        self.n_pad = -(-n // mr) * mr
        self.cbi, self.cbo = blocks(c_in), out_blocks(c_out, v)
        # channel panels of NR channels, the last overlapping its neighbour (conv_blocked.BlockedConv)
        starts = np.minimum(np.arange(-(-blocks(c_out) // nv)) * nv, self.cbo - nv) * VL
        u = np.zeros((36, int(starts[-1]) + nr, c_in), np.float32)
        u[:, :c_out] = transform_filters(w)
        self.wt = aligned_empty(36 * len(starts) * c_in * nr).reshape(36, len(starts), c_in * nr)
        for p in range(36):
            for i, s in enumerate(starts):
                self.wt[p, i] = mk.pack_lanes(u[p, s:s + nr], nr)[0]
        c = np.arange(c_in)
        self.aoffs = ((c // VL) * self.n_pad * VL + c % VL).astype(np.int64)     # V[p, c // VL, s, c % VL]
        self.a_starts = (np.arange(self.n_pad // mr) * mr * VL).astype(np.int64)
        self.a_pos = self.cbi * self.n_pad * VL
        self.c_panels = (starts // VL * self.n_pad * VL).astype(np.int64)
        self.c_pos = self.cbo * self.n_pad * VL
        self.zero_bias = np.zeros(nr, np.float32)
        self.bias = (None, None)
        self.pf = PREFETCH_K
        # fused: chunks of ct blocks (a multiple of MR), V and M laid out as above with ct blocks
        self.fused = 4 * self.wt.size <= FUSED_MAX_U_BYTES
        per_block = 36 * (self.cbi + self.cbo) * VL * 4
        self.ct = mr * max(1, min(CHUNK_BYTES // (per_block * mr), self.n_pad // mr))
        self.aoffs_c = ((c // VL) * self.ct * VL + c % VL).astype(np.int64)
        self.a_starts_c = (np.arange(self.ct // mr) * mr * VL).astype(np.int64)
        self.c_panels_c = (starts // VL * self.ct * VL).astype(np.int64)

    def padded_bias(self, bias) -> np.ndarray:
        """The bias zero-padded to whole channel blocks (kept while the same array comes in)."""
        if self.bias[0] is not bias:
            self.bias = (bias, mk.pad_rows(bias, self.cbo * VL))
        return self.bias[1]

    def calls(self, x, y, bias, plan, residual=None):
        """y (N, CB, ho, wo, VL) = the conv of x (N, CB', H, W, VL), bias and clamp included; with
        residual = (r, lo), r blocked as y (at least its real channel blocks), then y = max(y + r, lo)
        as each output vector is stored (ops.conv's fused residual Add, in one pass)."""
        if residual is None:
            rs, r_lo, has_r = y, -np.inf, False                 # r unread
        else:
            rs, r_lo, has_r = residual[0], residual[1], True
        r_lo = np.float32(r_lo)
        # Numba's Python-level call starts its thread pool first (conv_direct.DirectConv.calls says why)
        parallel = not (kernel_threads() == 1 or plan.micro_serial)
        pt, pl = plan.geo[6], plan.geo[7]
        ho, wo = plan.out_shape[2], plan.out_shape[3]
        padded = scratch("phases", self.cbi * self.hp * self.wp * VL)
        n_chunks = -(-self.th * self.tw // self.ct)
        if self.fused and (not parallel or (FUSED_POOL != "stages"
                                            and n_chunks >= FUSED_MIN_CHUNKS_PER_WORKER * kernel_threads())):
            workers = kernel_threads() if parallel and FUSED_POOL in ("workers", "dealt") else 1
            v = scratch("wino_v", workers * 36 * self.cbi * self.ct * VL).reshape(workers, -1)
            m = scratch("wino_m", workers * 36 * self.cbo * self.ct * VL).reshape(workers, -1)
            geo = (self.hp, self.wp, self.th, self.tw, self.ct, self.cbi, self.cbo, ho, wo,
                   blocks(plan.out_shape[1]), plan.lo, plan.hi)
            fused = _fused if workers == 1 else _fused_pool if FUSED_POOL == "workers" else _fused_pool_dealt
            return [(fused, (x[i], padded, pt, pl, v, m, y[i], rs[i].reshape(-1), r_lo, has_r, self.padded_bias(bias),
                             self.variant, self.aoffs_c, self.a_starts_c, self.wt, self.c_panels_c, self.zero_bias,
                             self.pf, *geo))
                    for i in range(x.shape[0])]
        v = scratch("wino_v", 36 * self.a_pos)
        m = scratch("wino_m", 36 * self.c_pos)
        stage_in, stage_out = (_inputs_pool, _outputs_pool) if parallel else (_inputs_serial, _outputs_serial)
        calls = []
        for i in range(x.shape[0]):
            calls += [(stage_in, (x[i], padded, v, pt, pl, self.hp, self.wp, self.th, self.tw, self.n_pad,
                                  self.cbi)),
                      (mk.gemm_lanes_batched, (self.variant, v, self.aoffs, self.a_starts, self.a_pos, self.wt, m,
                                               self.c_panels, self.n_pad * VL, self.c_pos,
                                               self.zero_bias, parallel, self.pf)),
                      (stage_out, (m, y[i], rs[i].reshape(-1), r_lo, has_r, self.padded_bias(bias), self.th,
                                   self.tw, self.n_pad, self.cbo, ho, wo, blocks(plan.out_shape[1]), plan.lo,
                                   plan.hi))]
        return calls


def _make_stages(parallel: bool):
    """The input stage (pad and transform, per input channel block) and the output stage (per
    output channel block), on the pool (parallel) or the calling thread: two compiled copies, as
    conv_winograd4's."""
    @njit(parallel=parallel)
    def inputs(x, padded, v, pt, pl, hp, wp, th, tw, n_pad, cbi):
        plane = hp * wp * VL
        v_step = cbi * n_pad * VL
        for cb in prange(cbi):
            pc = padded[cb * plane:(cb + 1) * plane]
            blocked_phases(x[cb:cb + 1], pc, 1, 1, pt, pl, hp, wp, 1, 1)
            for ty in range(th):
                for tx in range(tw):
                    mk.winograd4_input(pc, (4 * ty * wp + 4 * tx) * VL, wp * VL, v,
                                       (cb * n_pad + ty * tw + tx) * VL, v_step)

    @njit(parallel=parallel)
    def outputs(m, y, r, r_lo, has_r, bias, th, tw, n_pad, cbo, ho, wo, n_blocks, lo, hi):
        lo32, hi32 = np.float32(lo), np.float32(hi)
        m_step = cbo * n_pad * VL
        yf = y.reshape(-1)
        for t in prange(n_blocks * th):
            cb, ty = t // th, t % th
            for tx in range(tw):
                mk.winograd4_output(m, (cb * n_pad + ty * tw + tx) * VL, m_step, yf,
                                    ((cb * ho + 4 * ty) * wo + 4 * tx) * VL, wo * VL, bias, cb * VL, lo32, hi32,
                                    min(4, ho - 4 * ty), min(4, wo - 4 * tx), r, r_lo, has_r)

    return inputs, outputs


_inputs_serial, _outputs_serial = _make_stages(False)
_inputs_pool, _outputs_pool = _make_stages(True)


@njit
def _pad(x, padded, pt, pl, hp, wp, cbi):
    """The zero-padded blocked input (its first cbi channel blocks), on the calling thread."""
    plane = hp * wp * VL
    for cb in range(cbi):
        blocked_phases(x[cb:cb + 1], padded[cb * plane:(cb + 1) * plane], 1, 1, pt, pl, hp, wp, 1, 1)


@njit
def _chunk(s0, s1, padded, v, m, yf, r, r_lo, has_r, bias, variant, aoffs, a_starts, wt, c_panels, zero_bias, pf, hp,
           wp, tw, ct, cbi, cbo, ho, wo, n_blocks, lo32, hi32):
    """The three stages for blocks s0 <= s < s1 (at most ct), V and M one chunk's."""
    for cb in range(cbi):
        pc = padded[cb * hp * wp * VL:(cb + 1) * hp * wp * VL]
        for s in range(s0, s1):
            ty, tx = s // tw, s % tw
            mk.winograd4_input(pc, (4 * ty * wp + 4 * tx) * VL, wp * VL, v, (cb * ct + s - s0) * VL, cbi * ct * VL)
    mk.gemm_lanes_batched(variant, v, aoffs, a_starts, cbi * ct * VL, wt, m, c_panels, ct * VL, cbo * ct * VL,
                          zero_bias, False, pf)
    for cb in range(n_blocks):
        for s in range(s0, s1):
            ty, tx = s // tw, s % tw
            mk.winograd4_output(m, (cb * ct + s - s0) * VL, cbo * ct * VL, yf,
                                ((cb * ho + 4 * ty) * wo + 4 * tx) * VL, wo * VL, bias, cb * VL, lo32, hi32,
                                min(4, ho - 4 * ty), min(4, wo - 4 * tx), r, r_lo, has_r)


def _make_fused(parallel: bool, claimed: bool = True):
    """Pad x on the calling thread, then the three stages per chunk of ct blocks: each of v's rows
    (a worker's V and M) claims the next chunk until none is left (pool.py: a worker that starts
    late takes fewer), or (claimed=False) takes chunks w, w + W, ... (W = v's rows), one on the
    calling thread (parallel=False). Compiled copies as the stages'."""
    @njit(parallel=parallel)
    def fused(x, padded, pt, pl, v, m, y, r, r_lo, has_r, bias, variant, aoffs, a_starts, wt, c_panels, zero_bias,
              pf, hp, wp, th, tw, ct, cbi, cbo, ho, wo, n_blocks, lo, hi):
        _pad(x, padded, pt, pl, hp, wp, cbi)
        yf = y.reshape(-1)
        n = th * tw
        n_chunks = -(-n // ct)
        counter = np.zeros(1, np.int64)
        workers = v.shape[0]
        for w in prange(workers):
            turn = 0
            while True:
                c = claim(counter) if claimed else w + turn * workers
                if c >= n_chunks:
                    break
                _chunk(c * ct, min(n, c * ct + ct), padded, v[w], m[w], yf, r, r_lo, has_r, bias, variant, aoffs,
                       a_starts, wt, c_panels, zero_bias, pf, hp, wp, tw, ct, cbi, cbo, ho, wo, n_blocks,
                       np.float32(lo), np.float32(hi))
                turn += 1

    return fused


_fused, _fused_pool, _fused_pool_dealt = _make_fused(False), _make_fused(True), _make_fused(True, False)
