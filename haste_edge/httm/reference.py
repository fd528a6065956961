"""HTTM in plain NumPy, one image at a time: the oracle the kernel (kernel.py) is tested against.

Attention of one image: q, k, v (heads, N, d) -> out (heads, N, d) = softmax(q k^T * scale) v, with
tokens merged per head first:

1. Blocks (block_tokens): the N tokens are T frames of P patches; a block is ns neighbouring patches
   (row-major runs) of nt consecutive frames, ordered patch by patch, frames inside.
2. Matching (match_groups), per block of S tokens keeping K = ceil(kept * S): min(K, ceil(S / 2))
   destinations evenly spaced in block order (every other token while K >= S / 2, as ToMe's
   bipartite split: with nt = 2 one frame's tokens, so a repeated frame merges exactly into its
   copy), the other tokens sources; each source finds its most
   cosine-similar destination (the first on ties) and the S - K sources with the highest similarity
   (the earlier on ties) join their destination's group. Every other token is its own group.
   Queries and keys are matched independently, each head on its own vectors ("head") or all heads on
   their vectors side by side with one matching for all ("uniform", the ToMe-style baseline).
3. Outliers (queries only): the round(outliers * N) positions farthest (L2 distance to their group's
   mean, summed over heads) leave their groups in every head and stay single.
4. Attention on the groups' means: scores get log(group size) added per key (a key standing for m
   equal keys weighs as those m would), values are averaged over the key groups.
5. Unmerge: every query position takes the output of its group.

With kept = 1 every group is one token and the result is dense attention.
"""
from __future__ import annotations

import math

import numpy as np


def block_tokens(n_tokens: int, per_frame: int, ns: int, nt: int) -> list[np.ndarray]:
    """Token indices of each matching block (module docstring, step 1)."""
    if per_frame <= 0 or n_tokens % per_frame:
        per_frame = n_tokens                     # not a whole number of frames: one frame
    frames = n_tokens // per_frame
    blocks = []
    for f0 in range(0, frames, nt):
        for p0 in range(0, per_frame, ns):
            blocks.append(np.array([f * per_frame + p for p in range(p0, min(p0 + ns, per_frame))
                                    for f in range(f0, min(f0 + nt, frames))], dtype=np.int64))
    return blocks


def destinations(size: int, kept: float) -> tuple[int, np.ndarray]:
    """(tokens kept, block positions of the destinations) for a block of `size` tokens."""
    k = min(size, max(1, math.ceil(kept * size - 1e-9)))
    n_dst = min(k, (size + 1) // 2)
    return k, np.array([i * size // n_dst for i in range(n_dst)], dtype=np.int64)


def _groups_from_parent(parent: np.ndarray) -> np.ndarray:
    """group index per token from parent (a token's group representative), groups numbered in the
    order of their first token."""
    group = np.empty(len(parent), np.int64)
    number = {}
    for i in range(len(parent)):
        root = parent[i]
        first = min(np.flatnonzero(parent == root))
        if first not in number:
            number[first] = len(number)
        group[i] = number[first]
    return group


def match_groups(x: np.ndarray, blocks: list[np.ndarray], kept: float) -> np.ndarray:
    """x (N, c) token vectors -> group index per token (module docstring, step 2)."""
    x = np.asarray(x, np.float64)
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    parent = np.arange(len(x))
    for blk in blocks:
        size = len(blk)
        k, dst_pos = destinations(size, kept)
        if k == size:
            continue
        src_pos = np.array([p for p in range(size) if p not in set(dst_pos.tolist())], np.int64)
        sims = unit[blk[src_pos]] @ unit[blk[dst_pos]].T           # (sources, destinations)
        best = sims.argmax(axis=1)                                   # first maximum on ties
        score = sims[np.arange(len(src_pos)), best]
        order = sorted(range(len(src_pos)), key=lambda s: (-score[s], s))
        for s in order[:size - k]:
            parent[blk[src_pos[s]]] = blk[dst_pos[best[s]]]
    return _groups_from_parent(parent)


def group_means(x: np.ndarray, group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(means (M, d) of x's rows per group, sizes (M,))."""
    m = int(group.max()) + 1
    sizes = np.bincount(group, minlength=m).astype(np.float64)
    sums = np.zeros((m, x.shape[1]))
    np.add.at(sums, group, np.asarray(x, np.float64))
    return sums / sizes[:, None], sizes


def split_outliers(q: np.ndarray, groups: list[np.ndarray], fraction: float) -> list[np.ndarray]:
    """Per-head query groups with the round(fraction * N) farthest positions made single (step 3)."""
    heads, n = q.shape[0], q.shape[1]
    n_out = int(round(fraction * n))
    if n_out == 0:
        return groups
    dist = np.zeros(n)
    for h in range(heads):
        means, _ = group_means(q[h], groups[h])
        dist += np.linalg.norm(np.asarray(q[h], np.float64) - means[groups[h]], axis=1)
    out = sorted(range(n), key=lambda i: (-dist[i], i))[:n_out]
    result = []
    for h in range(heads):
        parent = np.arange(n)
        # a group keeps its members but the outliers: its representative is its first other member
        for i in range(n):
            members = [j for j in np.flatnonzero(groups[h] == groups[h][i]) if j not in out]
            parent[i] = i if i in out or not members else members[0]
        result.append(_groups_from_parent(parent))
    return result


def httm_attention(q, k, v, scale: float, config, per_frame: int) -> tuple[np.ndarray, dict]:
    """(out (heads, N, d) float32, counts) for one image; counts as kernel.httm_attention's."""
    heads, n, d = q.shape
    blocks = block_tokens(n, per_frame, config.ns, config.nt)

    def matched(x, kept):
        if config.mode == "uniform":
            g = match_groups(np.concatenate(list(x), axis=1), blocks, kept)
            return [g] * heads
        return [match_groups(x[h], blocks, kept) for h in range(heads)]

    gq = split_outliers(q, matched(q, config.q), config.outliers)
    gk = matched(k, config.kv)
    out = np.empty((heads, n, d), np.float32)
    for h in range(heads):
        qm, _ = group_means(q[h], gq[h])
        km, ksize = group_means(k[h], gk[h])
        vm, _ = group_means(v[h], gk[h])
        s = qm @ km.T * scale + np.log(ksize)[None, :]
        p = np.exp(s - s.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        out[h] = (p @ vm)[gq[h]]
    counts = {"queries_kept": sum(int(g.max()) + 1 for g in gq),
              "keys_kept": sum(int(g.max()) + 1 for g in gk)}
    return out, counts
