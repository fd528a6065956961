"""HTTM's compiled kernel: reference.py's algorithm (read its docstring) in Numba loops, one image at
a time, float32, with the same groups (same matching, same tie rules) and counters.

Block layouts are prepared once per (tokens, tokens per frame, ns, nt, kept) in Python
(`block_plan`) and passed as flat arrays. Attention on the merged sets is the dense kernel's
(ops/attention.py): the group means of every head padded to the largest head's count (heads differ
only by their outliers; padded keys get a -1e30 score), two batched products on the BLAS and the
softmax of softmax.py.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from haste_edge import microkernel as mk
from haste_edge.httm.reference import block_tokens, destinations
from haste_edge.jit import njit
from haste_edge.ops.attention import attention

FIELDS = ("dense_macs", "executed_macs", "match_macs", "merge_adds", "queries_kept", "keys_kept", "head_tokens")
OVERHEAD = ("match_macs", "merge_adds")


@lru_cache(maxsize=64)
def block_plan(n_tokens: int, per_frame: int, ns: int, nt: int, kept: float):
    """(tokens (N,): each block's destinations, then its sources, each in block order; block starts
    (B+1,); destinations per block (B,); sources merged per block (B,); similarity pairs (MACs per
    feature); whether any merge): the arrays read-only."""
    blocks = block_tokens(n_tokens, per_frame, ns, nt)
    tokens = np.empty(n_tokens, np.int64)
    starts = np.zeros(len(blocks) + 1, np.int64)
    n_dst = np.zeros(len(blocks), np.int64)
    merges = np.zeros(len(blocks), np.int64)
    sim_pairs = 0
    for b, blk in enumerate(blocks):
        starts[b + 1] = starts[b] + len(blk)
        s0 = starts[b]
        k, dst = destinations(len(blk), kept)
        is_dst = np.zeros(len(blk), np.bool_)
        is_dst[dst] = True
        tokens[s0:s0 + len(blk)] = np.concatenate([blk[is_dst], blk[~is_dst]])
        n_dst[b] = len(dst)
        merges[b] = len(blk) - k
        if merges[b]:
            sim_pairs += (len(blk) - len(dst)) * len(dst)
    for a in (tokens, starts, n_dst, merges):
        a.flags.writeable = False
    return tokens, starts, n_dst, merges, sim_pairs, bool(merges.any())


@njit(error_model="numpy")
def _inv_norms(x, inv):
    """inv[t] = 1 / |x[t]| (1e12 for a zero row: its unit vector stays zero)."""
    n, c = x.shape
    for t in range(n):
        s = np.float32(0.0)
        for k in range(c):
            s += x[t, k] * x[t, k]
        inv[t] = np.float32(1.0) / np.float32(max(math.sqrt(s), 1e-12))


@njit(error_model="numpy")
def _number_groups(parent, group, number):
    """group[i] = index of parent[i]'s group, groups numbered by their first token; returns the count.
    parent[i] is a member of i's group whose own parent is itself. number: (N,) scratch."""
    n = parent.shape[0]
    number[:] = -1
    m = 0
    for i in range(n):
        r = parent[i]
        if number[r] < 0:
            number[r] = m
            m += 1
        group[i] = number[r]
    return m


# Similarities of 4 sources to 16 destinations per call: the microkernel's register tile (vector
# IR, one <16 x float> accumulator per source, the features as its k loop); a dot product per pair
# ends in a horizontal sum, which on 32 features cost more than the products.
_SIM_MR, _SIM_NR = 4, 16
_sim_tile = mk.make_tile(_SIM_MR, 1, _SIM_NR)


@njit(error_model="numpy")
def match_groups(x, tokens, starts, n_dsts, merges, group):
    """Fill group (N,) for token vectors x (N, c) (reference.match_groups); returns the group count."""
    return _match(x, tokens, starts, n_dsts, merges, group, _Workspace(x.shape[0], x.shape[1], starts, n_dsts, merges))


@njit(error_model="numpy")
def _Workspace(n, c, starts, n_dsts, merges):
    """The arrays one matching of n tokens of c features uses, made once for all heads: inverse
    norms, the destinations' panel (zero), the sources' panel, similarities, per-source best
    destination, score and rank, parents, group numbers."""
    n_blocks = starts.shape[0] - 1
    width = _SIM_NR
    most = 0
    for b in range(n_blocks):
        most = max(most, starts[b + 1] - starts[b])
        if merges[b]:
            width += n_dsts[b]
    w = -(-most // _SIM_NR) * _SIM_NR
    return (np.empty(n, np.float32), np.zeros(c * width, np.float32), np.zeros(c * _SIM_MR, np.float32),
            np.empty(_SIM_MR * w, np.float32), np.empty(most, np.int64), np.empty(most, np.float32),
            np.empty(most, np.int64), np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n_blocks, np.int64),
            np.arange(c) * width, width, w)


@njit(error_model="numpy")
def _match(x, tokens, starts, n_dsts, merges, group, ws):
    """match_groups in the workspace ws (_Workspace). Unit vectors are x[t] * inv[t], made where
    they are used: the destinations of the blocks that merge laid out feature-major side by side (a
    block's are contiguous columns: the tile's B), and each run of 4 of a block's sources in the
    tile's A panel: the tile gives their similarities to 16 destinations at a time. The sources are
    ranked by an insertion sort (blocks are small)."""
    n, c = x.shape
    inv, dst_p, src_p, sims, best, score, order, parent, number, first, offs, width, w = ws
    _inv_norms(x, inv)
    n_blocks = starts.shape[0] - 1
    col = 0
    for b in range(n_blocks):
        if merges[b] == 0:
            continue
        first[b] = col
        for j in range(n_dsts[b]):
            t = tokens[starts[b] + j]
            for k in range(c):
                dst_p[k * width + col + j] = x[t, k] * inv[t]
        col += n_dsts[b]
    no_bias = np.zeros(_SIM_MR, np.float32)
    lo, hi = np.float32(-np.inf), np.float32(np.inf)
    for i in range(n):
        parent[i] = i
    for b in range(n_blocks):
        r = merges[b]
        if r == 0:
            continue
        s0, n_dst = starts[b], n_dsts[b]
        f0, n_src = s0 + n_dst, starts[b + 1] - s0 - n_dst          # the sources' first position
        for i0 in range(0, n_src, _SIM_MR):
            rows = min(_SIM_MR, n_src - i0)
            for i in range(rows):
                t = tokens[f0 + i0 + i]
                for k in range(c):
                    src_p[k * _SIM_MR + i] = x[t, k] * inv[t]
            for t0 in range(0, n_dst, _SIM_NR):
                _sim_tile(src_p, dst_p, offs, first[b] + t0, c, sims, t0, w, no_bias, lo, hi)
            for i in range(rows):
                arg = 0
                for t in range(1, n_dst):                  # the first maximum on ties
                    if sims[i * w + t] > sims[i * w + arg]:
                        arg = t
                best[i0 + i], score[i0 + i] = tokens[s0 + arg], sims[i * w + arg]
        for i in range(n_src):                             # by score, the earlier source on ties
            o, j = i, i - 1
            while j >= 0 and score[order[j]] < score[o]:
                order[j + 1] = order[j]
                j -= 1
            order[j + 1] = o
        for t in range(r):
            parent[tokens[f0 + order[t]]] = best[order[t]]
    return _number_groups(parent, group, number)


@njit(error_model="numpy")
def _match_heads(x, tokens, starts, n_dsts, merges, uniform, groups, counts):
    """Per-head groups of x (heads, N, d) into groups (heads, N), counts (heads,)."""
    heads, n, d = x.shape
    if merges.sum() == 0:
        for h in range(heads):
            for i in range(n):
                groups[h, i] = i
            counts[h] = n
    elif uniform:
        side = np.empty((n, heads * d), np.float32)        # the heads' vectors side by side
        for h in range(heads):
            side[:, h * d:(h + 1) * d] = x[h]
        counts[0] = match_groups(side, tokens, starts, n_dsts, merges, groups[0])
        for h in range(1, heads):
            groups[h] = groups[0]
            counts[h] = counts[0]
    else:
        ws = _Workspace(n, d, starts, n_dsts, merges)
        for h in range(heads):
            counts[h] = _match(x[h], tokens, starts, n_dsts, merges, groups[h], ws)


@njit(error_model="numpy")
def _means(x, group, m, sizes, out):
    """out[:m] = the means of x's rows per group; sizes[:m] the group sizes."""
    d = x.shape[1]
    out[:m] = 0.0
    sizes[:m] = 0.0
    for i in range(x.shape[0]):
        g = group[i]
        sizes[g] += 1.0
        for j in range(d):
            out[g, j] += x[i, j]
    for g in range(m):
        inv = np.float32(1.0) / sizes[g]
        for j in range(d):
            out[g, j] *= inv


@njit(error_model="numpy")
def split_outliers(q, groups, counts, n_out):
    """reference.split_outliers on groups (heads, N) in place; counts (heads,) updated."""
    heads, n, d = q.shape
    if n_out == 0:
        return
    dist = np.zeros(n, np.float64)
    means = np.empty((n, d), np.float32)
    sizes = np.empty(n, np.float32)
    for h in range(heads):
        _means(q[h], groups[h], counts[h], sizes, means)
        for i in range(n):
            s = 0.0
            g = groups[h, i]
            for j in range(d):
                e = q[h, i, j] - means[g, j]
                s += e * e
            dist[i] += math.sqrt(s)
    order = np.argsort(-dist, kind="mergesort")
    out = np.zeros(n, np.bool_)
    for t in range(n_out):
        out[order[t]] = True
    parent, first, number = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
    for h in range(heads):
        first[:] = -1
        for i in range(n):
            if not out[i] and first[groups[h, i]] < 0:
                first[groups[h, i]] = i
        for i in range(n):
            parent[i] = i if out[i] else first[groups[h, i]]
        counts[h] = _number_groups(parent, groups[h], number)


@njit(error_model="numpy")
def merge_heads(x, groups, counts, out, sizes):
    """out[h, :counts[h]] = the group means of x[h] (heads, N, d); rows past a head's count zero;
    sizes (heads, M) the group sizes (0 past the count)."""
    for h in range(x.shape[0]):
        out[h] = 0.0
        sizes[h] = 0.0
        _means(x[h], groups[h], counts[h], sizes[h], out[h])


@njit(error_model="numpy")
def log_sizes(sizes, bias):
    """bias = log(sizes), and -1e30 for padding rows (size 0): no weight in the softmax."""
    for h in range(sizes.shape[0]):
        for t in range(sizes.shape[1]):
            bias[h, t] = np.log(sizes[h, t]) if sizes[h, t] > 0 else np.float32(-1e30)


@njit(error_model="numpy")
def unmerge(o, groups, out):
    """out[h, i] = o[h, groups[h, i]]."""
    for h in range(out.shape[0]):
        for i in range(out.shape[1]):
            out[h, i] = o[h, groups[h, i]]


@njit(error_model="numpy")
def merge_inputs(q, k, v, q_plan, k_plan, uniform, n_out):
    """Matching, outliers and merging of one image's q, k, v (heads, N, d): (query groups (heads,
    N), merged q (heads, Mq, d), merged k and v (heads, Mk, d), key bias (heads, Mk): log sizes,
    -1e30 on padding, group counts per head of queries and of keys)."""
    heads, n, d = q.shape
    gq, gk = np.empty((heads, n), np.int64), np.empty((heads, n), np.int64)
    mq, mk = np.empty(heads, np.int64), np.empty(heads, np.int64)
    _match_heads(q, q_plan[0], q_plan[1], q_plan[2], q_plan[3], uniform, gq, mq)
    split_outliers(q, gq, mq, n_out)
    _match_heads(k, k_plan[0], k_plan[1], k_plan[2], k_plan[3], uniform, gk, mk)
    m_q, m_k = mq.max(), mk.max()
    qm, qs = np.empty((heads, m_q, d), np.float32), np.empty((heads, m_q), np.float32)
    km, ks = np.empty((heads, m_k, d), np.float32), np.empty((heads, m_k), np.float32)
    vm = np.empty((heads, m_k, d), np.float32)
    merge_heads(q, gq, mq, qm, qs)
    merge_heads(k, gk, mk, km, ks)
    merge_heads(v, gk, mk, vm, ks)
    bias = np.empty((heads, m_k), np.float32)
    log_sizes(ks, bias)
    return gq, qm, km, vm, bias, mq, mk


def httm_attention(q, k, v, scale: float, config, per_frame: int, out=None, scores=None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(out (heads, N, d), counters (len(FIELDS),) int64) for one image; q, k, v (heads, N, d).
    scores: float32 scratch of at least heads * N * N (kept by the layer: a fresh array this size
    per call page-faults)."""
    q, k, v = (np.ascontiguousarray(a, np.float32) for a in (q, k, v))
    heads, n, d = q.shape
    uniform = config.mode == "uniform"
    plan_q = block_plan(n, per_frame, config.ns, config.nt, config.q)
    plan_k = block_plan(n, per_frame, config.ns, config.nt, config.kv)
    n_out = int(round(config.outliers * n))
    gq, qm, km, vm, bias, mq, mk = merge_inputs(q, k, v, plan_q[:4], plan_k[:4], uniform, n_out)
    if out is None:
        out = np.empty((heads, n, d), np.float32)
    m_q, m_k = qm.shape[1], km.shape[1]
    s = None if scores is None else scores[:heads * m_q * m_k].reshape(heads, m_q, m_k)
    unmerge(attention(qm, km, vm, bias, scale, np.empty(qm.shape, np.float32), s), gq, out)
    return out, counters(heads, n, d, mq, mk, plan_q, plan_k, n_out)


def counters(heads, n, d, mq, mk, plan_q, plan_k, n_out) -> np.ndarray:
    """FIELDS for one image. match_macs: unit-length scaling (a MAC per feature) and the
    similarities of every matching, plus the outliers' distances; merge_adds: a feature per token and
    merged tensor (q when its queries merge, k and v when theirs do)."""
    match = merged = 0
    for plan, tensors in ((plan_q, 1), (plan_k, 2)):
        if plan[5]:
            width = heads * d     # head-wise: heads matchings of d features; uniform: one of heads*d
            match += n * width + plan[4] * width
            merged += tensors * heads * n * d
    if n_out:
        match += heads * n * d
    mq, mk = mq.tolist(), mk.tolist()
    executed = 2 * d * sum(a * b for a, b in zip(mq, mk))
    return np.array([2 * heads * n * n * d, executed, match, merged, sum(mq), sum(mk), heads * n], np.int64)
