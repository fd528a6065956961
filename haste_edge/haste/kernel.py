"""HASTE conv, fast: one parallel Numba call runs every patch of every image of the batch.

Same semantics as reference.haste_conv_reference (same tiles, hyperplanes, buckets and counters;
outputs equal up to float rounding). The input is first zero-padded into a channels-last copy
(N, Hp*Wp, C_in), so each pixel's channels are one contiguous vector. Per patch, compiled:
  1. hash     project every channel on the L ternary hyperplanes: per +1 (-1) entry one vector
              addition (subtraction) of that pixel's channels, using per-layer index lists of the
              entries; then centre: <z_c, r> = <v_c, r> - <mean_j v_j, r> = <v_c, r> -
              mean_j <v_j, r>, so the channel mean is never formed (2*C_in*L operations instead
              of the 2*C_in*D of docs/METHOD.md section 1; the counter reports that, plus the
              C_in*D of the patch's max |x|).
              bit = (centred projection > HASH_RTOL * max|patch| * entries applied): see the
              reference's HASH_RTOL for why not > 0.
  2. bucket   equal codes via a small open-addressing table; a counting sort lists each bucket's
              channels in channel order.
  3. merge x  mean of each bucket's channels over the patch, float32.
  4. merge W  weights are kept as Wt (C_in, kh*kw, C_out), so a merged filter is a sum of
              contiguous kh*kw*C_out vectors; a singleton bucket uses its Wt slice in place.
  5. conv     reduced conv on the patch (no padding: the halo carries it) into a (tile pixels,
              C_out) accumulator, output channels in vector lanes; then bias, activation and the
              write into NCHW y. Stride 1 and P even: on the gathered microkernel tiles
              (microkernel.gather_tile: register-blocked, every bucket's taps one row of the
              product, singletons' weights read in place from the layer's packed panels, so the
              filter merge only touches merged buckets); else the plain loop, several kernel taps
              per pass (_accumulate_bucket). The tiles made the bundled model 1.24-1.32x faster
              than the loop at 1 thread with L=11..13, P=4 (results/haste_gathered_x86_64.md).
Counters are added up per patch as the work is done.

Bucket agreement with the reference: both hash in float64 (the reference centres the pixels, then
projects; this kernel projects, then centres the projections) and compare with the same threshold,
computed by the same float64 operations. The projections differ by float64 rounding only, ~1e-16
relative, far inside the threshold's rounding band, so a bit can differ only for a projection
within ~1e-16 of the threshold itself.

Parallelism: numba threads each take every n_blocks-th patch (interleaved, so costly and cheap
regions of an image spread evenly) and allocate their scratch once per call, never per patch.
Small outputs (<= _SERIAL_MAX_PIXELS output pixels in the batch) run on the calling thread alone:
there, waking the thread pool and handing the cores back and forth with OpenBLAS (which runs the
dense convs between them) costs more than it saves. Measured on the bundled ResNet, batch 1, 2
threads: HASTE on the 7x7 and 4x4 stages 1.0-1.5 ms per inference faster than with the work spread
over both threads, also when each 4x4 map's output channels were split between the threads. That
split was tried again once the one-patch 256-channel convs were known to be bound by reading their
weights (the filter merge reads all of them): no gain either, 0.65 vs 0.68 ms per conv with the
weights out of cache, 0.41 vs 0.30 ms (median) with them in cache; the second core adds no memory
bandwidth on this machine, and waking it costs tens of microseconds. That was the plain loop. On
the gathered tiles a small map's output panels (filter merge and reduced conv per panel of NR
channels) are spread over the pool (POOL_PANELS; hashing, bucketing and the input merge stay on
the calling thread): whole bundled model at 2 threads 1.23-1.25x faster with L=11 or 13, P=4,
1.02x with HASTE on the 4x4 stage alone (results/haste_gathered_x86_64.md).
"""
from __future__ import annotations

import threading
import time

import numpy as np

from haste_edge import microkernel as mk
from haste_edge.haste.config import LayerSetting
from haste_edge.haste.hyperplanes import layer_hyperplanes, patch_dims
from haste_edge.haste.reference import HASH_RTOL, N_STATS, STAT_FIELDS, check_haste_conv
from haste_edge.jit import njit, prange
from haste_edge.ops.conv import _clip_bounds, _geometry
from haste_edge.ops.registry import step_state
from haste_edge.scratch import scratch
from haste_edge.threads import kernel_threads

# stat columns (see reference.STAT_FIELDS)
_DENSE, _EXEC, _HASH, _CENTRE, _XMERGE, _WMERGE, _NBUCK, _PATCHES, _CHANNELS = range(N_STATS)
assert STAT_FIELDS[_CHANNELS] == "channels"

# phases; the hot path runs all of them, the profiler also prefixes of them
PHASES = ("hashing", "bucketing", "input_merge", "filter_merge", "reduced_conv")
_ALL = len(PHASES)


# ---------------------------------------------------------------------------------------------
# Numba kernels
# ---------------------------------------------------------------------------------------------

@njit
def _accumulate_bucket(xb, wb, acc, th, tw, pw, kh, kw, sh, sw, dh, dw):
    """One bucket's share of the reduced conv of a th x tw tile:
    acc[p*tw + q, :] += sum_{i,j} xb[(p*sh + i*dh)*pw + q*sw + j*dw] * wb[i*kw + j, :],
    xb the merged patch (ph x pw, flat), wb the merged filter (kh*kw, C_out).

    Several taps per pass over an accumulator row: with one tap per pass the loop does two loads
    and a store per multiply-add and is bound by them (about 2x slower than nine taps per pass in
    a single-thread micro-benchmark of a 64- and a 128-channel 3x3 case here)."""
    c_out = wb.shape[1]
    rs = dh * pw                       # flat distance between kernel rows in the patch
    if kh == 3 and kw == 3:            # the common case: all nine taps in one pass
        w0, w1, w2, w3, w4, w5, w6, w7, w8 = wb[0], wb[1], wb[2], wb[3], wb[4], wb[5], wb[6], wb[7], wb[8]
        for p in range(th):
            for q in range(tw):
                b0 = p * sh * pw + q * sw
                x0, x1, x2 = xb[b0], xb[b0 + dw], xb[b0 + 2 * dw]
                x3, x4, x5 = xb[b0 + rs], xb[b0 + rs + dw], xb[b0 + rs + 2 * dw]
                x6, x7, x8 = xb[b0 + 2 * rs], xb[b0 + 2 * rs + dw], xb[b0 + 2 * rs + 2 * dw]
                arow = acc[p * tw + q]
                for o in range(c_out):
                    arow[o] += (x0 * w0[o] + x1 * w1[o] + x2 * w2[o] + x3 * w3[o] + x4 * w4[o]
                                + x5 * w5[o] + x6 * w6[o] + x7 * w7[o] + x8 * w8[o])
        return
    kk = kh * kw
    for t in range(0, kk, 3):          # any other kernel: three taps per pass
        n_t = min(3, kk - t)
        f0 = (t // kw) * rs + (t % kw) * dw
        f1 = ((t + 1) // kw) * rs + ((t + 1) % kw) * dw
        f2 = ((t + 2) // kw) * rs + ((t + 2) % kw) * dw
        w0 = wb[t]
        w1 = wb[min(t + 1, kk - 1)]
        w2 = wb[min(t + 2, kk - 1)]
        for p in range(th):
            for q in range(tw):
                b0 = p * sh * pw + q * sw
                arow = acc[p * tw + q]
                x0 = xb[b0 + f0]
                if n_t == 3:
                    x1, x2 = xb[b0 + f1], xb[b0 + f2]
                    for o in range(c_out):
                        arow[o] += x0 * w0[o] + x1 * w1[o] + x2 * w2[o]
                elif n_t == 2:
                    x1 = xb[b0 + f1]
                    for o in range(c_out):
                        arow[o] += x0 * w0[o] + x1 * w1[o]
                else:
                    for o in range(c_out):
                        arow[o] += x0 * w0[o]


@njit
def _hash_patch(xln, wp, r0, c0, ph, pw, p_ptr, p_row, p_col, m_ptr, m_row, m_col, rtol, proj, codes):
    """Codes of the C_in channels of one patch; returns the hyperplane entries applied.

    Uncentred projections first, by additions over channels-last pixels (each a contiguous
    vector over C_in), float64; then centred by the mean projection over channels. A bit is 1 only
    if the centred projection exceeds rtol * max|patch| * (entries of that hyperplane on the
    patch): a projection that is 0 up to the rounding of the input (flat patches) is a 0 bit on
    every machine (reference.HASH_RTOL)."""
    L, c_in = proj.shape
    vmax = np.float32(0.0)                              # max |value| over the patch, all channels
    for r in range(ph):
        for t in range(pw):
            src = xln[(r0 + r) * wp + c0 + t]
            for c in range(c_in):
                vmax = max(vmax, abs(src[c]))
    scale = rtol * np.float64(vmax)
    for c in range(c_in):
        codes[c] = 0
    applied = 0
    for l in range(L):
        row = proj[l]
        for c in range(c_in):
            row[c] = 0.0
        n_l = 0
        for e in range(p_ptr[l], p_ptr[l + 1]):
            if p_row[e] < ph and p_col[e] < pw:         # edge patch: its pixels only
                n_l += 1
                src = xln[(r0 + p_row[e]) * wp + c0 + p_col[e]]
                for c in range(c_in):
                    row[c] += src[c]
        for e in range(m_ptr[l], m_ptr[l + 1]):
            if m_row[e] < ph and m_col[e] < pw:
                n_l += 1
                src = xln[(r0 + m_row[e]) * wp + c0 + m_col[e]]
                for c in range(c_in):
                    row[c] -= src[c]
        applied += n_l
        mean = 0.0
        for c in range(c_in):
            mean += row[c]
        mean /= c_in
        tol = scale * n_l
        bit = np.int64(1) << l
        for c in range(c_in):
            if row[c] - mean > tol:                     # strict test beyond the rounding band
                codes[c] |= bit
    return applied


@njit
def _bucket_patch(codes, tkey, tval, bucket_of, count, start, members):
    """Buckets of equal codes, numbered in order of first appearance; returns their number nb.
    Bucket b's channels, in channel order: members[start[b]:start[b+1]], count[b] of them."""
    c_in = codes.shape[0]
    mask = tkey.shape[0] - 1                            # open addressing, table >= 2*C_in
    for t in range(tkey.shape[0]):
        tkey[t] = -1                                    # codes are >= 0
    nb = 0
    for c in range(c_in):
        code = codes[c]
        h = ((code ^ (code >> 15)) * 0x2545F491) & mask
        while True:
            if tkey[h] == -1:
                tkey[h] = code
                tval[h] = nb
                bucket_of[c] = nb
                nb += 1
                break
            if tkey[h] == code:
                bucket_of[c] = tval[h]
                break
            h = (h + 1) & mask
    for bi in range(nb):                                # counting sort of channels by bucket
        count[bi] = 0
    for c in range(c_in):
        count[bucket_of[c]] += 1
    start[0] = 0
    for bi in range(nb):
        start[bi + 1] = start[bi] + count[bi]
    for c in range(c_in):                               # tval reused as fill pointers
        tval[c] = 0
    for c in range(c_in):
        bi = bucket_of[c]
        members[start[bi] + tval[bi]] = c
        tval[bi] += 1
    return nb


@njit
def _merge_inputs(xln, wp, r0, c0, ph, pw, nb, bucket_of, count, xm):
    """xm[b, :ph*pw] = mean over bucket b's channels of the patch: per pixel one pass over its
    contiguous channels-last vector, each channel added into its bucket's row."""
    c_in = bucket_of.shape[0]
    for bi in range(nb):
        for t in range(ph * pw):
            xm[bi, t] = 0.0
    for r in range(ph):
        for t in range(pw):
            src = xln[(r0 + r) * wp + c0 + t]
            pix = r * pw + t
            for c in range(c_in):
                xm[bucket_of[c], pix] += src[c]
    for bi in range(nb):
        if count[bi] > 1:
            inv = np.float32(1.0) / np.float32(count[bi])
            for t in range(ph * pw):
                xm[bi, t] *= inv


@njit
def _number_merged(nb, count, wslot):
    """wslot[b] = the slot of bucket b's merged filter (buckets of >= 2 channels, in bucket order),
    -1 for a singleton (its weights are used in place)."""
    n_merged = 0
    for bi in range(nb):
        if count[bi] == 1:
            wslot[bi] = -1
        else:
            wslot[bi] = n_merged
            n_merged += 1


@njit
def _merge_filters(wt, nb, count, start, members, bucket_of, wm, wslot):
    """Merged filter of each bucket with >= 2 channels into wm[wslot[b]]: a sum of contiguous
    (kh*kw*C_out) Wt slices. Singletons get wslot -1 and use their Wt slice in place.

    Wt is read in channel order, front to back, each slice added into its bucket's sum: one
    sequential pass that the hardware prefetchers follow. Bucket by bucket, the reads jump across
    the whole tensor; measured on the bundled ResNet's 256-channel layers (2.4 MB of weights, not in
    cache when the layer runs): the merge ran about twice as long that way."""
    kkc = wt.shape[1] * wt.shape[2]
    _number_merged(nb, count, wslot)
    for c in range(bucket_of.shape[0]):
        bi = bucket_of[c]
        if wslot[bi] < 0:
            continue
        wdst = wm[wslot[bi]].reshape(kkc)
        wsrc = wt[c].reshape(kkc)
        if c == members[start[bi]]:                     # the bucket's first channel
            for t in range(kkc):
                wdst[t] = wsrc[t]
        else:
            for t in range(kkc):
                wdst[t] += wsrc[t]


@njit
def _gather_offsets(nb, wslot, members, start, kk, kw, dh, dw, pw, d_max, nr, aoff_s, boff_s, aoff_m, boff_m):
    """The rows of a patch's reduced conv on the gathered tiles: every bucket's k*k taps, where its
    merged input lies (xm row bi, patch row width pw) and where its weights lie (a singleton's in
    the layer's panel wl[cb], at its channel; a merged bucket's in wm[cb], at its slot). Returns
    (singleton rows, merged rows)."""
    ks, km = 0, 0
    for bi in range(nb):
        slot = wslot[bi]
        for t in range(kk):
            toff = bi * d_max + (t // kw) * dh * pw + (t % kw) * dw
            if slot < 0:
                aoff_s[ks] = toff
                boff_s[ks] = (members[start[bi]] * kk + t) * nr
                ks += 1
            else:
                aoff_m[km] = toff
                boff_m[km] = (slot * kk + t) * nr
                km += 1
    return ks, km


@njit
def _panel(cb, gvar, xm, wl, wm, bucket_of, members, start, wslot, ks, km, aoff_s, boff_s, aoff_m, boff_m,
           th, tw, pw, P, acc, bias, yn, p0, q0, lo32, hi32, conv):
    """One panel of NR output channels of a patch on the gathered path: its merged filters (the
    layer's packed weights wl[cb] summed per merged bucket into wm[cb], one sequential pass), then,
    if conv, the reduced conv into acc[p*P + q, panel's channels] in runs of MR pixels (an edge
    tile's run may compute pixels past tw, read from the halo or the slack after xm, never written
    out) and the write of those channels into yn with bias and activation. Panels touch disjoint
    parts of wm, acc and yn: any number may run at once."""
    c_in = bucket_of.shape[0]
    kkn = wl.shape[1] // c_in
    src_p, dst_p = wl[cb], wm[cb]
    for c in range(c_in):
        bi = bucket_of[c]
        slot = wslot[bi]
        if slot < 0:
            continue
        s0, d0 = c * kkn, slot * kkn
        if c == members[start[bi]]:
            for t in range(kkn):
                dst_p[d0 + t] = src_p[s0 + t]
        else:
            for t in range(kkn):
                dst_p[d0 + t] += src_p[s0 + t]
    if not conv:
        return
    mr = mk.GATHER_SHAPES[gvar][0]
    ldc = acc.shape[1]
    nr = ldc // wl.shape[0]
    accf = acc.reshape(-1)
    for p in range(th):
        for q in range(0, tw, mr):
            c_off = (p * P + q) * ldc + cb * nr
            a_off = p * pw + q
            if ks > 0:
                mk.gather_tile(gvar, xm, aoff_s, a_off, src_p, boff_s, ks, accf, c_off, ldc, False)
            if km > 0:
                mk.gather_tile(gvar, xm, aoff_m, a_off, dst_p, boff_m, km, accf, c_off, ldc, ks > 0)
    _write_tile(acc, P, cb * nr, min(yn.shape[0], (cb + 1) * nr), bias, yn, p0, q0, th, tw, lo32, hi32)


@njit
def _panels_serial(gvar, xm, wl, wm, bucket_of, members, start, wslot, ks, km, aoff_s, boff_s, aoff_m, boff_m,
                   th, tw, pw, P, acc, bias, yn, p0, q0, lo32, hi32, conv):
    for cb in range(wl.shape[0]):
        _panel(cb, gvar, xm, wl, wm, bucket_of, members, start, wslot, ks, km, aoff_s, boff_s, aoff_m, boff_m,
               th, tw, pw, P, acc, bias, yn, p0, q0, lo32, hi32, conv)


@njit(parallel=True)
def _panels_pool(gvar, xm, wl, wm, bucket_of, members, start, wslot, ks, km, aoff_s, boff_s, aoff_m, boff_m,
                 th, tw, pw, P, acc, bias, yn, p0, q0, lo32, hi32, conv):
    """_panels_serial with the panels spread over the pool (a small map run on the calling thread
    otherwise: module docstring)."""
    for cb in prange(wl.shape[0]):
        _panel(cb, gvar, xm, wl, wm, bucket_of, members, start, wslot, ks, km, aoff_s, boff_s, aoff_m, boff_m,
               th, tw, pw, P, acc, bias, yn, p0, q0, lo32, hi32, conv)


@njit
def _write_tile(acc, pitch, o0, o1, bias, yn, p0, q0, th, tw, lo32, hi32):
    """yn[o, p0 + p, q0 + q] = clamp(acc[p*pitch + q, o] + bias[o]) for channels o0 <= o < o1:
    bias once, then the activation."""
    for o in range(o0, o1):
        bv = bias[o]
        for p in range(th):
            yrow = yn[o, p0 + p]
            for q in range(tw):
                yrow[q0 + q] = min(max(acc[p * pitch + q, o] + bv, lo32), hi32)


@njit
def _run_block(blk, n_blocks, xlast, wp, wt, wl, gvar, pool_panels, bias, lo, hi, y, kh, kw, sh, sw, dh, dw, P,
               p_ptr, p_row, p_col, m_ptr, m_row, m_col, rtol, upto, pstats):
    """Patches blk, blk + n_blocks, ... of the batch (one thread's share), all phases. gvar >= 0:
    the reduced conv on gathered tile gvar with the lanes-packed weights wl (wt unused), else on
    _accumulate_bucket with wt (wl unused)."""
    n_img, c_in = xlast.shape[0], xlast.shape[2]
    kk, c_out = kh * kw, y.shape[1]
    ho, wo = y.shape[2], y.shape[3]
    L = p_ptr.shape[0] - 1
    d_max = ((P - 1) * sh + (kh - 1) * dh + 1) * ((P - 1) * sw + (kw - 1) * dw + 1)
    n_tj = (wo + P - 1) // P
    tiles = ((ho + P - 1) // P) * n_tj
    table_size = 4
    while table_size < 2 * c_in:
        table_size *= 2
    lo32, hi32 = np.float32(lo), np.float32(hi)

    # scratch, allocated once per call and thread, reused by every patch of the block
    proj = np.empty((L, c_in), dtype=np.float64)
    codes = np.empty(c_in, dtype=np.int64)
    tkey = np.empty(table_size, dtype=np.int64)
    tval = np.empty(table_size, dtype=np.int64)
    bucket_of = np.empty(c_in, dtype=np.int64)
    count = np.empty(c_in, dtype=np.int64)
    start = np.empty(c_in + 1, dtype=np.int64)
    members = np.empty(c_in, dtype=np.int64)
    wslot = np.empty(c_in, dtype=np.int64)
    gathered = gvar >= 0
    mr = mk.GATHER_SHAPES[gvar][0] if gathered else 1
    nr = mk.GATHER_SHAPES[gvar][1] * mk.GATHER_VW if gathered else 1
    xm_flat = np.empty(c_in * d_max + 2 * mr, dtype=np.float32)   # slack: an edge run reads past its row
    xm = xm_flat[:c_in * d_max].reshape(c_in, d_max)
    if gathered:
        wm = np.empty((1, 1, 1), dtype=np.float32)
        wml = np.empty((wl.shape[0], (c_in // 2 + 1) * kk * nr), dtype=np.float32)
        acc = np.empty((P * P, wl.shape[0] * nr), dtype=np.float32)
        aoff_s = np.empty(c_in * kk, dtype=np.int64)
        boff_s = np.empty(c_in * kk, dtype=np.int64)
        aoff_m = np.empty(c_in * kk, dtype=np.int64)
        boff_m = np.empty(c_in * kk, dtype=np.int64)
    else:
        wm = np.empty((c_in // 2 + 1, kk, c_out), dtype=np.float32)   # merged buckets have >= 2 channels
        wml = np.empty((1, 1), dtype=np.float32)
        acc = np.empty((P * P, c_out), dtype=np.float32)
        aoff_s = boff_s = aoff_m = boff_m = np.empty(0, dtype=np.int64)

    for item in range(blk, n_img * tiles, n_blocks):
        n = item // tiles
        p0, q0 = ((item % tiles) // n_tj) * P, ((item % tiles) % n_tj) * P
        th, tw = min(P, ho - p0), min(P, wo - q0)
        ph, pw = (th - 1) * sh + (kh - 1) * dh + 1, (tw - 1) * sw + (kw - 1) * dw + 1
        r0, c0 = p0 * sh, q0 * sw                       # patch corner in the padded input
        D = ph * pw
        st = pstats[item]
        st[:] = 0

        applied = _hash_patch(xlast[n], wp, r0, c0, ph, pw, p_ptr, p_row, p_col, m_ptr, m_row, m_col,
                              rtol, proj, codes)
        st[_HASH] = applied * c_in
        st[_CENTRE] = 3 * c_in * D
        if upto < 2:
            continue
        nb = _bucket_patch(codes, tkey, tval, bucket_of, count, start, members)
        st[_NBUCK] = nb
        if upto < 3:
            continue
        _merge_inputs(xlast[n], wp, r0, c0, ph, pw, nb, bucket_of, count, xm)
        st[_XMERGE] = c_in * D
        if upto < 4:
            continue
        st[_WMERGE] = c_out * (c_in - nb) * kk
        tpix = th * tw
        if upto >= 5:
            st[_DENSE] = c_out * c_in * kk * tpix
            st[_EXEC] = c_out * nb * kk * tpix
            st[_PATCHES] = 1
        if gathered:
            _number_merged(nb, count, wslot)
            ks, km = _gather_offsets(nb, wslot, members, start, kk, kw, dh, dw, pw, d_max, nr,
                                     aoff_s, boff_s, aoff_m, boff_m)
            if pool_panels:
                _panels_pool(gvar, xm_flat, wl, wml, bucket_of, members, start, wslot, ks, km, aoff_s, boff_s,
                             aoff_m, boff_m, th, tw, pw, P, acc, bias, y[n], p0, q0, lo32, hi32, upto >= 5)
            else:
                _panels_serial(gvar, xm_flat, wl, wml, bucket_of, members, start, wslot, ks, km, aoff_s, boff_s,
                               aoff_m, boff_m, th, tw, pw, P, acc, bias, y[n], p0, q0, lo32, hi32, upto >= 5)
            continue
        _merge_filters(wt, nb, count, start, members, bucket_of, wm, wslot)
        if upto < 5:
            continue
        # reduced conv, output channels innermost
        for t in range(tpix):
            for o in range(c_out):
                acc[t, o] = 0.0
        for bi in range(nb):
            if wslot[bi] < 0:
                _accumulate_bucket(xm[bi], wt[members[start[bi]]], acc, th, tw, pw, kh, kw, sh, sw, dh, dw)
            else:
                _accumulate_bucket(xm[bi], wm[wslot[bi]], acc, th, tw, pw, kh, kw, sh, sw, dh, dw)
        _write_tile(acc, tw, 0, c_out, bias, y[n], p0, q0, th, tw, lo32, hi32)


@njit
def _pad_channels_last(x, xlast, pt, pl, wp):
    """xlast (N, Hp*Wp, C) = x (N, C, H, W) zero-padded, channels last, so each pixel's channels are
    one contiguous vector (hashing and input merging read them whole). Compiled: on the 4x4-7x7 maps
    NumPy's strided copy costs ~10 us of Python per call, more than the copy."""
    n_img, c_in, h, w = x.shape
    hp = xlast.shape[1] // wp
    for n in range(n_img):
        xl = xlast[n]
        for r in range(hp):                             # the zero border
            inside = pt <= r < pt + h
            for t in range(wp):
                if not inside or t < pl or t >= pl + w:
                    for c in range(c_in):
                        xl[r * wp + t, c] = 0.0
        for r in range(h):                              # the image, transposed
            base = (r + pt) * wp + pl
            for c in range(c_in):
                src = x[n, c, r]
                for t in range(w):
                    xl[base + t, c] = src[t]


@njit
def _image_stats(pstats, stats, c_in):
    """stats[n] = sum of image n's patch counters (patches are numbered image by image)."""
    n_img = stats.shape[0]
    tiles = pstats.shape[0] // n_img
    for n in range(n_img):
        for k in range(N_STATS):
            tot = 0
            for t in range(n * tiles, (n + 1) * tiles):
                tot += pstats[t, k]
            stats[n, k] = tot
        stats[n, _CHANNELS] = c_in


@njit(parallel=True)
def _haste_patches(x, pt, pl, xlast, wp, wt, wl, gvar, pool_panels, bias, lo, hi, y, kh, kw, sh, sw, dh, dw, P,
                   p_ptr, p_row, p_col, m_ptr, m_row, m_col, rtol, n_blocks, pstats, stats, upto):
    """All patches of all images, spread over the threads. x (N, C, H, W) the input, padded (pt, pl)
    into xlast (N, Hp*Wp, C), channels-last, rows Wp pixels wide; wt (C, kh*kw, C_out), bias
    (C_out,), y (N, C_out, Ho, Wo) output; hyperplanes as CSR lists per hyperplane l of the (row,
    col) positions of their +1 (p_*) and -1 (m_*) entries in the full patch grid. pstats (N * tiles,
    N_STATS) receives each patch's counters, stats (N, N_STATS) their sums per image. upto < 5
    stops after that many phases, 0 after the padding (profiling only; y is then left unwritten).
    The parallel loop body is a single call: Numba's parfor passes then compile quickly."""
    _pad_channels_last(x, xlast.reshape(x.shape[0], -1, x.shape[1]), pt, pl, wp)
    if upto > 0:
        for blk in prange(n_blocks):
            _run_block(blk, n_blocks, xlast, wp, wt, wl, gvar, False, bias, lo, hi, y, kh, kw, sh, sw, dh, dw, P,
                       p_ptr, p_row, p_col, m_ptr, m_row, m_col, rtol, upto, pstats)
        _image_stats(pstats, stats, x.shape[1])


@njit
def _haste_serial(x, pt, pl, xlast, wp, wt, wl, gvar, pool_panels, bias, lo, hi, y, kh, kw, sh, sw, dh, dw, P,
                  p_ptr, p_row, p_col, m_ptr, m_row, m_col, rtol, n_blocks, pstats, stats, upto):
    """_haste_patches on the calling thread alone (n_blocks must be 1): for small outputs, where
    waking the thread pool costs more than the work (module docstring). Not parallel, so no thread
    switching or parallel-region launch per call."""
    _pad_channels_last(x, xlast.reshape(x.shape[0], -1, x.shape[1]), pt, pl, wp)
    if upto > 0:
        _run_block(0, 1, xlast, wp, wt, wl, gvar, pool_panels, bias, lo, hi, y, kh, kw, sh, sw, dh, dw, P,
                   p_ptr, p_row, p_col, m_ptr, m_row, m_col, rtol, upto, pstats)
        _image_stats(pstats, stats, x.shape[1])


# ---------------------------------------------------------------------------------------------
# per-layer data, scratch, public entry
# ---------------------------------------------------------------------------------------------

# the reduced conv on the gathered microkernel tiles where it applies (stride 1, P a multiple of 2);
# False: always the output-channels-innermost loop (_accumulate_bucket), for comparisons
GATHERED = True
# a small map's gathered conv (run on the calling thread) spreads its output panels over the pool
POOL_PANELS = True
_UNUSED3 = np.zeros((1, 1, 1), dtype=np.float32)
_UNUSED2 = np.zeros((1, 1), dtype=np.float32)


def gather_variant(P: int, c_out: int, sh: int, sw: int) -> int:
    """The gathered tile a layer's reduced conv runs on, -1 for the plain loop."""
    if not GATHERED or sh != 1 or sw != 1:
        return -1
    v = mk.choose_gather(P, c_out)
    return -1 if v is None else v


def _pack_gathered(W, variant: int) -> np.ndarray:
    """W (C_out, C_in, kh, kw) as panels of NR output channels, channel-major then tap:
    wl[cb, (c*kk + t)*NR + j] = W[cb*NR + j, c, t]."""
    c_out = W.shape[0]
    nr = mk.GATHER_SHAPES[variant][1] * mk.GATHER_VW
    return mk.pack_lanes(np.asarray(W, dtype=np.float32).reshape(c_out, -1), nr)


class _Layer:
    """What a layer derives from W and its setting once: its packed weights (Wt for the plain
    reduced conv, or the gathered tiles' panels) and the hyperplane index lists."""

    def __init__(self, W, setting: LayerSetting, geo, packed=None):
        kh, kw, sh, sw, dh, dw = geo
        self.W = W                 # held so id(W) cannot be reused by another array while cached
        c_out, c_in = W.shape[0], W.shape[1]
        self.gvar = gather_variant(setting.P, c_out, sh, sw)
        if packed is None:
            if self.gvar >= 0:
                packed = _pack_gathered(W, self.gvar)
            else:
                packed = np.ascontiguousarray(
                    np.asarray(W, dtype=np.float32).transpose(1, 2, 3, 0).reshape(c_in, kh * kw, c_out))
        self.packed = packed
        self.wt = packed if self.gvar < 0 else _UNUSED3
        self.wl = packed if self.gvar >= 0 else _UNUSED2
        R = layer_hyperplanes(setting.L, setting.s, setting.seed, *patch_dims(setting.P, kh, kw, sh, sw, dh, dw))
        self.plus = _csr(R > 0)
        self.minus = _csr(R < 0)


def _csr(mask):
    """(ptr (L+1,), rows, cols) int64 of the True entries of mask (L, PH, PW), per hyperplane."""
    ls, rows, cols = np.nonzero(mask)                       # row-major: grouped by l, sorted
    ptr = np.zeros(mask.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(ls, minlength=mask.shape[0]), out=ptr[1:])
    return ptr, rows.astype(np.int64), cols.astype(np.int64)


_layers: dict = {}
_layers_lock = threading.Lock()
_MAX_LAYERS = 64


def _get_layer(W, setting, geo):
    key = (id(W), setting, geo)
    entry = _layers.get(key)
    if entry is not None and entry.W is W:
        return entry
    entry = _Layer(W, setting, geo)
    with _layers_lock:
        if len(_layers) >= _MAX_LAYERS:                     # throwaway weights (tests): bounded
            _layers.clear()
        _layers[key] = entry
    return entry


class _Call:
    """What a HASTE conv call derives from its arguments other than x's values, kept so that a model
    running the same conv again skips it (on a small board the Python set-up per call is tens of us)."""

    def __init__(self, x_shape, W, b, attrs, setting, layer=None):
        self.W, self.b, self.attrs = W, b, attrs   # held: their ids key the cache
        self.out_shape = tuple(check_haste_conv(x_shape, np.shape(W), attrs))
        self.geo = _geometry(attrs)
        kh, kw, sh, sw, dh, dw, pt, pl, pb, pr = self.geo
        self.layer = layer or _get_layer(W, setting, (kh, kw, sh, sw, dh, dw))
        n_img, c_in, h, w = x_shape
        self.hp, self.wp = h + pt + pb, w + pl + pr
        c_out = self.out_shape[1]
        self.bias = np.zeros(c_out, np.float32) if b is None else np.ascontiguousarray(b, dtype=np.float32)
        _, lo, hi = _clip_bounds(attrs)
        self.lo, self.hi = float(lo), float(hi)
        self.tiles = -(-self.out_shape[2] // setting.P) * -(-self.out_shape[3] // setting.P)


_calls: dict = {}
_SERIAL_MAX_PIXELS = 64      # output pixels in the batch at or below which one thread runs the conv (module docstring)


def _step_call(state, x_shape, W, b, attrs, setting) -> _Call:
    """The call set-up kept on the plan step (StepAttrs.state): lives and dies with the model.
    The packed weights are shared by every setting the step runs with that packs them alike."""
    calls = state.setdefault("haste", {})
    call = calls.get((x_shape, setting))
    if call is not None and call.W is W and call.b is b:
        return call
    geo = _geometry(attrs)[:6]
    packs = state.setdefault("haste_packed", {})      # by gathered tile variant, -1 the plain loop's Wt
    variant = gather_variant(setting.P, W.shape[0], geo[2], geo[3])
    held = packs.get(variant)
    layer = _Layer(W, setting, geo, held[1] if held is not None and held[0] is W else None)
    packs[variant] = (W, layer.packed)
    call = calls[(x_shape, setting)] = _Call(x_shape, W, b, attrs, setting, layer)
    return call


def _get_call(x_shape, W, b, attrs, setting) -> _Call:
    state = step_state(attrs)
    if state is not None:
        return _step_call(state, x_shape, W, b, attrs, setting)
    key = (x_shape, id(W), id(b), id(attrs), setting)
    call = _calls.get(key)
    if call is not None and call.W is W and call.b is b and call.attrs is attrs:
        return call
    call = _Call(x_shape, W, b, attrs, setting)
    with _layers_lock:
        if len(_calls) >= _MAX_LAYERS:                      # throwaway arguments (tests): bounded
            _calls.clear()
        _calls[key] = call
    return call


def _prepare(x, W, b, attrs, setting, y_out):
    """(kernel, args, y) for one call: kernel(*args, upto) runs it (see _haste_patches); args end
    with the per-patch and per-image counter arrays, and y is the output array."""
    if not isinstance(setting, LayerSetting):
        raise TypeError(f"HASTE conv: setting must be a LayerSetting, got {type(setting).__name__}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    call = _get_call(x.shape, W, b, attrs, setting)
    kh, kw, sh, sw, dh, dw, pt, pl, _, _ = call.geo
    n_img, c_in = x.shape[0], x.shape[1]
    xlast = scratch("xlast", n_img * call.hp * call.wp * c_in).reshape(n_img, call.hp * call.wp, c_in)
    out_shape = call.out_shape
    if y_out is None:
        y_out = np.empty(out_shape, dtype=np.float32)
    elif y_out.shape != out_shape or y_out.dtype != np.float32 or not y_out.flags.c_contiguous:
        raise ValueError(f"HASTE conv: y_out must be C-contiguous float32 {out_shape}, got "
                         f"{y_out.dtype} {y_out.shape}")
    serial = n_img * out_shape[2] * out_shape[3] <= _SERIAL_MAX_PIXELS
    n_blocks = 1 if serial else max(1, min(n_img * call.tiles, kernel_threads()))
    layer = call.layer
    pstats = np.empty((n_img * call.tiles, N_STATS), dtype=np.int64)
    stats = np.empty((n_img, N_STATS), dtype=np.int64)
    pool_panels = serial and POOL_PANELS and layer.gvar >= 0 and layer.wl.shape[0] > 1 and kernel_threads() > 1
    args = (x, pt, pl, xlast, call.wp, layer.wt, layer.wl, layer.gvar, pool_panels, call.bias, call.lo, call.hi,
            y_out, kh, kw, sh, sw, dh, dw, setting.P, *layer.plus, *layer.minus, HASH_RTOL, n_blocks, pstats, stats)
    return (_haste_serial if serial else _haste_patches), args, y_out


def haste_conv(x, W, b, attrs, setting: LayerSetting, y_out=None):
    """HASTE conv of x (N, C_in, H, W) with weights W (C_out, C_in, kh, kw), optional bias b, the
    canonical Conv attrs (group must be 1) and the layer's setting.

    Returns (y, stats): y float32 (N, C_out, Ho, Wo) (written into y_out if given: C-contiguous
    float32 of that shape), stats int64 (N, len(STAT_FIELDS)) per image.
    Per-layer data (transposed weights, hyperplane index lists) and per-call set-up are kept on
    the plan step when attrs come from a model (registry.StepAttrs), else in small caches keyed by
    (id(W), setting, geometry) and (x's shape, id(W), id(b), id(attrs), setting): W and attrs must
    not be modified in place while in use (new arrays or dicts are fine)."""
    kernel, args, y = _prepare(x, W, b, attrs, setting, y_out)
    kernel(*args, _ALL)
    return y, args[-1]


def profile_haste_conv(x, W, b, attrs, setting: LayerSetting, repeats: int = 5, clock=time.perf_counter) -> dict:
    """Seconds per call spent in each phase (PHASES), plus "pad" (the zero-padded channels-last
    copy of the input) and "total". Measured by running the kernel stopped after the padding and
    after 1, 2, ... 5 phases (best of `repeats` each) and differencing, so a phase's figure includes
    nothing of the later ones; it is noisy when the machine is busy (a phase can then come out
    slightly negative). On a shared machine, clock=time.process_time with one thread counts CPU
    time only, not time spent descheduled."""
    kernel, args, _ = _prepare(x, W, b, attrs, setting, None)
    kernel(*args, _ALL)                                     # compile / warm up
    cumulative = []
    for upto in range(0, _ALL + 1):
        best = np.inf
        for _ in range(repeats):
            t0 = clock()
            kernel(*args, upto)
            best = min(best, clock() - t0)
        cumulative.append(best)
    out = {"pad": cumulative[0]}
    for name, t, prev in zip(PHASES, cumulative[1:], cumulative):
        out[name] = t - prev
    out["total"] = cumulative[-1]
    return out
