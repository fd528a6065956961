"""Sliding-window geometry shared by conv, pool and the conv paths: valid index ranges and the
stride-phase split of a zero-padded plane."""
from __future__ import annotations

from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from haste_edge.jit import njit

_EVEN16 = ir.Constant(ir.VectorType(ir.IntType(32), 16), list(range(0, 32, 2)))


@intrinsic
def _every_other16(typingctx, src, s_off, dst, d_off):
    """dst[d_off + t] = src[s_off + 2t] for t < 16: one 32-float load and a shuffle. LLVM does not
    vectorise the stride-2 copy loop itself (a scalar loop measured ~4x slower: split_phases with
    sw == 2 cost more than the depthwise conv after it). Both arrays must be unit-stride."""
    sig = types.void(src, types.int64, dst, types.int64)

    def codegen(context, builder, signature, args):
        s_v, s_o, d_v, d_o = args
        sp = context.make_array(signature.args[0])(context, builder, s_v).data
        dp = context.make_array(signature.args[2])(context, builder, d_v).data
        v32, v16 = ir.VectorType(ir.FloatType(), 32), ir.VectorType(ir.FloatType(), 16)
        x = builder.load(builder.bitcast(builder.gep(sp, [s_o]), v32.as_pointer()), align=4)
        even = builder.shuffle_vector(x, ir.Constant(v32, ir.Undefined), _EVEN16)
        builder.store(even, builder.bitcast(builder.gep(dp, [d_o]), v16.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


@njit
def copy_every_other(src, s0, dst, n):
    """dst[t] = src[s0 + 2t] for t < n, src and dst unit-stride 1-D; never reads past src's end."""
    t = 0
    while t + 16 <= n and s0 + 2 * t + 32 <= src.shape[0]:
        _every_other16(src, s0 + 2 * t, dst, t)
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


