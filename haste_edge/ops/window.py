"""Sliding-window geometry shared by conv, pool and the conv paths: valid index ranges and the
stride-phase split of a zero-padded plane."""
from __future__ import annotations

from haste_edge.jit import njit
from haste_edge.microkernel import MASKED_MOVES, copy_upto16, every_other16, every_other_upto16, zero_upto16


# Short runs (a 28-pixel row, its 1-pixel pads) are most of a small map's copying: per run one
# masked vector move on x86 instead of a loop (with its scalar tail) that costs more than it copies.

@njit
def copy_run(src, s0, dst, d0, n):
    """dst[d0 + t] = src[s0 + t] for t < n (1-D arrays); nothing outside is read or written."""
    if MASKED_MOVES:
        for t in range(0, n, 16):
            copy_upto16(src, s0 + t, dst, d0 + t, min(16, n - t))
    else:
        for t in range(n):
            dst[d0 + t] = src[s0 + t]


@njit
def zero_run(dst, d0, n):
    """dst[d0:d0 + n] = 0 (n <= 0: nothing)."""
    if MASKED_MOVES:
        for t in range(0, n, 16):
            zero_upto16(dst, d0 + t, min(16, n - t))
    else:
        for t in range(n):
            dst[d0 + t] = 0.0


@njit
def copy_every_other(src, s0, dst, d0, n):
    """dst[d0 + t] = src[s0 + 2t] for t < n, src and dst unit-stride 1-D; never reads past src's
    end nor writes past dst[d0 + n - 1]. Vector shuffles 16 at a time, the rest masked on x86: a
    plain loop measured ~4x slower (split_phases with sw == 2 cost more than the depthwise conv
    after it)."""
    t = 0
    while t + 16 <= n and s0 + 2 * t + 32 <= src.shape[0]:
        every_other16(src, s0 + 2 * t, dst, d0 + t)
        t += 16
    if MASKED_MOVES:
        while t < n:
            c = min(16, n - t)
            every_other_upto16(src, s0 + 2 * t, dst, d0 + t, c)
            t += c
    else:
        for u in range(t, n):
            dst[d0 + u] = src[s0 + 2 * u]


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
            zero_run(ph_ab, 0, u_lo * wq)                    # rows wholly in the padding
            zero_run(ph_ab, u_hi * wq, (rows - u_hi) * wq)
            n = v_hi - v_lo
            for u in range(u_lo, u_hi):
                base = u * wq
                zero_run(ph_ab, base, v_lo)
                zero_run(ph_ab, base + v_hi, wq - v_hi)
                src = xp[u * sh + a - pt]
                iw = v_lo * sw + b - pl
                if sw == 1:
                    copy_run(src, iw, ph_ab, base + v_lo, n)
                elif sw == 2:
                    copy_every_other(src, iw, ph_ab, base + v_lo, n)
                else:
                    for t in range(n):
                        ph_ab[base + v_lo + t] = src[iw + t * sw]
