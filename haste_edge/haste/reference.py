"""HASTE conv, plain NumPy: docs/METHOD.md section 1 steps 1-7 written out literally. The oracle for the
fast kernel (kernel.py); clarity over speed (Python loops over images and patches, float64).
"""
from __future__ import annotations

import numpy as np

from haste_edge.haste.config import LayerSetting
from haste_edge.haste.hyperplanes import layer_hyperplanes, patch_dims
from haste_edge.ops.conv import _clip_bounds, _geometry, conv_infer

# Per-image counters, int64, in this column order (the fast kernel fills the same array):
#   dense_macs         C_out * C_in * k^2 * tile pixels, summed over patches (what dense conv does)
#   executed_macs      C_out * |B| * k^2 * tile pixels (the reduced convs)
#   hash_adds          nonzeros of the hyperplane entries applied to the patch * C_in
#   centre_ops         3 * C_in * D (docs/METHOD.md section 1: mean over channels and subtract,
#                      plus the patch's max |x| for the rounding band below)
#   input_merge_adds   C_in * D
#   filter_merge_adds  C_out * (C_in - |B|) * k^2
#   buckets_sum        sum over patches of |B|
#   patches            number of patches (output tiles)
#   channels           C_in (so mean buckets per patch relative to C_in can be formed)
# D is the patch's pixel count (edge patches are smaller), |B| its number of buckets.
STAT_FIELDS = ("dense_macs", "executed_macs", "hash_adds", "centre_ops", "input_merge_adds",
               "filter_merge_adds", "buckets_sum", "patches", "channels")
N_STATS = len(STAT_FIELDS)

# A centred projection counts as 0 (bit 0) unless it exceeds HASH_RTOL * max|patch| * n_l, n_l the
# entries of hyperplane l on the patch. Why: on flat patches (a black background) every channel is a
# constant, the centred projection on a hyperplane whose entries sum to 0 is 0 in exact arithmetic,
# and the strict "> 0" of docs/METHOD.md section 1 then takes its bit from rounding noise in the
# layer's input. That noise differs between machines (a BLAS kernel for AVX2, AVX-512 or NEON rounds
# differently), and so did the buckets: 1.8 % of all projections on the bundled model are such
# zeros. The input's rounding moves a projection by about n_l * max|patch| * (relative error), and
# that error reached 8e-7 of an image's max|x| between AVX2 and AVX-512 kernels (README,
# "Reproducibility"): 1e-4 leaves a margin of ~100x, and sets to 0 only 0.2 % more bits than exact
# zeros do. A projection that falls within the rounding error of this threshold can still differ
# between machines: rare, measured there.
HASH_RTOL = 1e-4


def check_haste_conv(x_shape, w_shape, attrs) -> tuple:
    """Output shape of the conv; ValueError if HASTE cannot run it (shapes, group != 1)."""
    if int(attrs["group"]) != 1:
        raise ValueError(f"HASTE conv: needs group 1, got group={attrs['group']} (W {tuple(w_shape)})")
    (out_shape,) = conv_infer([tuple(x_shape), tuple(w_shape)], attrs)
    return out_shape


def haste_conv_reference(x, W, b, attrs, setting: LayerSetting):
    """(y float32 (N, C_out, Ho, Wo), stats int64 (N, len(STAT_FIELDS))) for one Conv with HASTE."""
    x = np.asarray(x, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    n_img, c_out, ho, wo = check_haste_conv(x.shape, W.shape, attrs)
    c_in = x.shape[1]
    kh, kw, sh, sw, dh, dw, pt, pl, pb, pr = _geometry(attrs)
    P, L = setting.P, setting.L
    R = layer_hyperplanes(L, setting.s, setting.seed, *patch_dims(P, kh, kw, sh, sw, dh, dw)).astype(np.float64)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    y = np.zeros((n_img, c_out, ho, wo))
    stats = np.zeros((n_img, N_STATS), dtype=np.int64)

    for n in range(n_img):                   # each image is hashed on its own
        st = dict.fromkeys(STAT_FIELDS, 0)
        for p0 in range(0, ho, P):           # step 1: P x P output tiles, edge tiles smaller
            for q0 in range(0, wo, P):
                th, tw = min(P, ho - p0), min(P, wo - q0)
                ph, pw = patch_dims(P, kh, kw, sh, sw, dh, dw, th, tw)
                r0, c0 = p0 * sh, q0 * sw    # the tile's receptive field in the padded input
                patch = xp[n, :, r0:r0 + ph, c0:c0 + pw]          # (C_in, ph, pw), halo included
                D = ph * pw
                v = patch.reshape(c_in, D)                       # step 2: one vector per channel
                z = v - v.mean(axis=0, keepdims=True)            # step 3: centre (hashing only)
                Rp = R[:, :ph, :pw].reshape(L, D)                # edge patch: its pixels' entries
                # step 4: strict test beyond the rounding band (HASH_RTOL), (C_in, L)
                tol = HASH_RTOL * np.abs(patch).max() * np.count_nonzero(Rp, axis=1).astype(np.float64)
                bits = (z @ Rp.T) > tol
                codes = (bits.astype(np.int64) << np.arange(L, dtype=np.int64)).sum(axis=1)
                uniq, label = np.unique(codes, return_inverse=True)   # step 5: equal codes
                nb = len(uniq)
                xm = np.empty((nb, ph, pw))
                wm = np.empty((c_out, nb, kh, kw))
                for bi in range(nb):                             # step 6: merge
                    members = np.flatnonzero(label == bi)
                    xm[bi] = patch[members].mean(axis=0)         # mean of the uncentred channels
                    wm[:, bi] = W[:, members].sum(axis=1)        # sum of the filter slices
                tile = np.zeros((c_out, th, tw))                 # step 7: reduced conv, no padding
                for i in range(kh):
                    for j in range(kw):
                        src = xm[:, i * dh:i * dh + (th - 1) * sh + 1:sh, j * dw:j * dw + (tw - 1) * sw + 1:sw]
                        tile += np.einsum("bpq,ob->opq", src, wm[:, :, i, j])
                y[n, :, p0:p0 + th, q0:q0 + tw] = tile
                st["dense_macs"] += c_out * c_in * kh * kw * th * tw
                st["executed_macs"] += c_out * nb * kh * kw * th * tw
                st["hash_adds"] += int(np.count_nonzero(Rp)) * c_in
                st["centre_ops"] += 3 * c_in * D
                st["input_merge_adds"] += c_in * D
                st["filter_merge_adds"] += c_out * (c_in - nb) * kh * kw
                st["buckets_sum"] += nb
                st["patches"] += 1
        st["channels"] = c_in
        stats[n] = [st[f] for f in STAT_FIELDS]
    if b is not None:                                            # bias once, after the conv
        y += np.asarray(b, dtype=np.float64)[None, :, None, None]
    has_act, lo, hi = _clip_bounds(attrs)                        # same fused epilogue as Conv
    if has_act:
        y = np.minimum(np.maximum(y, lo), hi)
    return y.astype(np.float32), stats
