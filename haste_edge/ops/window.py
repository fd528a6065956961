"""Sliding-window geometry shared by conv, pool and the conv paths: valid index ranges and the
stride-phase split of a zero-padded plane."""
from __future__ import annotations

from haste_edge.jit import njit
from haste_edge.microkernel import every_other16


@njit
def copy_every_other(src, s0, dst, n):
    """dst[t] = src[s0 + 2t] for t < n, src and dst unit-stride 1-D; never reads past src's end.
    Vector shuffles 16 at a time: a plain loop measured ~4x slower (split_phases with sw == 2 cost
    more than the depthwise conv after it)."""
    t = 0
    while t + 16 <= n and s0 + 2 * t + 32 <= src.shape[0]:
        every_other16(src, s0 + 2 * t, dst, t)
        t += 16
    for u in range(t, n):
        dst[u] = src[s0 + 2 * u]


@njit
def valid_range(n_out, start, step, size):
    """[lo, hi) of output indices o in [0, n_out) with 0 <= start + o*step < size (step >= 1).

    Hoisting the bounds test out of the inner loops leaves branch-free, vectorisable copies."""
    lo = 0
    if start < 0:
        lo = (-start + step - 1) // step
    hi = n_out
    if size - start <= 0:
        hi = 0
    else:
        hi = min(n_out, (size - start + step - 1) // step)
    if hi < lo:
        hi = lo
    return lo, hi


@njit
def split_phases(xp, ph, sh, sw, pt, pl, rows, wq, na, nb):
    """Stride phases of one zero-padded plane: ph[a, b, u*wq + v] = xpad[u*sh + a, v*sw + b].

    xp (H, W) is the unpadded plane, ph (sh, sw, >= rows*wq); only phases a < na, b < nb are
    built (the others no tap reads: see _phases_used). In phase (a, b) a strided convolution
    tap becomes a plain shift, so later stages copy or accumulate long contiguous runs instead
    of one short row segment per output row. Every cell of a built phase is written."""
    h, w = xp.shape
    for a in range(na):
        u_lo, u_hi = valid_range(rows, a - pt, sh, h)
        for b in range(nb):
            v_lo, v_hi = valid_range(wq, b - pl, sw, w)
            ph_ab = ph[a, b]
            for u in range(rows):
                d = ph_ab[u * wq:(u + 1) * wq]
                if u < u_lo or u >= u_hi:
                    for t in range(wq):
                        d[t] = 0.0
                    continue
                for t in range(v_lo):
                    d[t] = 0.0
                for t in range(v_hi, wq):
                    d[t] = 0.0
                # slices starting at the first valid element: the loop index starts at 0, so
                # Numba drops its negative-index wraparound and LLVM vectorises the copy
                dv = d[v_lo:v_hi]
                ih, iw = u * sh + a - pt, v_lo * sw + b - pl
                if sw == 1:   # a unit-stride slice copies ~7x faster than a stepped one
                    src1 = xp[ih, iw:iw + v_hi - v_lo]
                    for t in range(v_hi - v_lo):
                        dv[t] = src1[t]
                elif sw == 2:
                    copy_every_other(xp[ih], iw, dv, v_hi - v_lo)
                else:
                    src = xp[ih, iw::sw]
                    for t in range(v_hi - v_lo):
                        dv[t] = src[t]


