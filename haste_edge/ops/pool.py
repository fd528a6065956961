"""MaxPool, AveragePool, GlobalAveragePool (float32 NCHW; the windowed pools are 2-D only).

Window geometry follows ONNX: output pixel p along an axis covers input positions
p*s - pad_begin + i*d for i < k. Positions outside [0, n) are padding: never a max candidate;
for the average they count only with count_include_pad=1, and then only up to n + pad_end
(a ceil_mode window may reach past the end padding: that part never counts).
Fast kernels are Numba loops parallel over (image, channel) planes; references are plain NumPy.
Max over an empty window (all padding) is -inf and its average NaN, in both. MaxPool also runs on
channel-blocked tensors (ops/conv_blocked.py: input and output 5-D), which the runtime keeps
between convs: a pool between two blocked convs then needs no layout change on either side.
"""
from __future__ import annotations

import numpy as np

from haste_edge.jit import njit, prange
from haste_edge.ops.window import valid_range
from haste_edge.ops.reduce import row_means as row_means_serial
from haste_edge.ops.conv_blocked import VL as BLOCK_VL
from haste_edge.ops.conv_blocked import means_call
from haste_edge.microkernel import max_into
from haste_edge.ops.registry import register
from haste_edge.threads import kernel_threads

MAXPOOL_ATTRS = ("kernel_shape", "strides", "pads", "dilations", "ceil_mode")
AVGPOOL_ATTRS = MAXPOOL_ATTRS + ("count_include_pad",)


# ---------------------------------------------------------------------------------------------
# shapes
# ---------------------------------------------------------------------------------------------

def _geometry(attrs):
    """(kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, ceil_mode) as Python ints."""
    kh, kw = (int(v) for v in attrs["kernel_shape"])
    sh, sw = (int(v) for v in attrs["strides"])
    dh, dw = (int(v) for v in attrs["dilations"])
    pt, pl, pb, pr = (int(v) for v in attrs["pads"])
    return kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, int(attrs["ceil_mode"])


def _out_size(n, k, s, d, p0, p1, ceil_mode):
    span = n + p0 + p1 - d * (k - 1) - 1
    if not ceil_mode:
        return span // s + 1
    out = -(-span // s) + 1
    # ONNX / PyTorch rule: the last window must start inside the input or the begin padding
    if (out - 1) * s >= n + p0:
        out -= 1
    return out


def _pool_infer(op):
    def infer(in_shapes, attrs):
        x = in_shapes[0]
        if x is None or len(x) != 4:
            raise ValueError(f"{op}: expects a 4-D NCHW input (2-D pooling only), got {x}")
        kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, ceil_mode = _geometry(attrs)
        if min(kh, kw, sh, sw, dh, dw) < 1 or min(pt, pl, pb, pr) < 0:
            raise ValueError(f"{op}: invalid kernel_shape/strides/dilations/pads {attrs} for input {tuple(x)}")
        ho = _out_size(x[2], kh, sh, dh, pt, pb, ceil_mode)
        wo = _out_size(x[3], kw, sw, dw, pl, pr, ceil_mode)
        if ho < 1 or wo < 1:
            raise ValueError(f"{op}: window {[kh, kw]} (dilations {[dh, dw]}) larger than padded input {tuple(x)}")
        return [(x[0], x[1], ho, wo)]
    return infer


maxpool_infer = _pool_infer("MaxPool")
avgpool_infer = _pool_infer("AveragePool")


def global_avgpool_infer(in_shapes, attrs):
    x = in_shapes[0]
    if x is None or len(x) < 3:
        raise ValueError(f"GlobalAveragePool: expects an input of rank >= 3 (N, C, spatial...), got {x}")
    return [tuple(x[:2]) + (1,) * (len(x) - 2)]


# ---------------------------------------------------------------------------------------------
# references
# ---------------------------------------------------------------------------------------------

def _window_positions(p, k, s, d, p0, n, p1):
    """Input positions of window p along one axis: (inside the input, inside input + pads)."""
    pos = [p * s - p0 + i * d for i in range(k)]
    return [q for q in pos if 0 <= q < n], [q for q in pos if q < n + p1]


def _pool_reference(x, attrs, infer, kind):
    x = np.asarray(x, dtype=np.float64)
    kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, _ = _geometry(attrs)
    (n, c, ho, wo), = infer([x.shape], attrs)
    h, w = x.shape[2], x.shape[3]
    y = np.empty((n, c, ho, wo))
    for p in range(ho):
        rows, rows_padded = _window_positions(p, kh, sh, dh, pt, h, pb)
        for q in range(wo):
            cols, cols_padded = _window_positions(q, kw, sw, dw, pl, w, pr)
            window = x[:, :, rows][:, :, :, cols]
            if kind == "max":
                y[:, :, p, q] = window.max(axis=(2, 3)) if window.size else -np.inf
            else:
                count = len(rows_padded) * len(cols_padded) if attrs["count_include_pad"] else len(rows) * len(cols)
                y[:, :, p, q] = window.sum(axis=(2, 3)) / count if count else np.nan
    return [y.astype(np.float32)]


def maxpool_reference(inputs, attrs):
    return _pool_reference(inputs[0], attrs, maxpool_infer, "max")


def avgpool_reference(inputs, attrs):
    return _pool_reference(inputs[0], attrs, avgpool_infer, "avg")


def global_avgpool_reference(inputs, attrs):
    x = np.asarray(inputs[0], dtype=np.float64)
    return [x.mean(axis=tuple(range(2, x.ndim)), keepdims=True).astype(np.float32)]


# ---------------------------------------------------------------------------------------------
# Numba kernels
# ---------------------------------------------------------------------------------------------

@njit(parallel=True)
def _pool(x, y, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, is_max, include_pad, n_chunks):
    """Max or average pooling, parallel over n_chunks runs of (image, channel) planes.

    Separable, every inner loop over contiguous floats (they vectorise at any stride): per output
    row, the rows its windows cover are reduced into one input-wide row (vertical pass), that row
    is split into its sw column phases (phase b holds columns u*sw + b), and each column tap adds
    one contiguous run of a phase to the outputs whose window holds the tap inside the input (a
    range computed once per tap). A stride-2 3x3 max pool took half the time of tap by tap with
    strided reads (README "Performance"). Average divisors separate into a row count times a
    column count."""
    n_img, c, h, w = x.shape
    wo = y.shape[3]
    cnt_w = np.empty(wo, dtype=np.float32)
    for q in range(wo):
        if include_pad:   # taps inside input + pads (windows start at >= -pl: only the end bounds)
            cnt_w[q] = valid_range(kw, q * sw, dw, w + pl + pr)[1]
        else:
            j_lo, j_hi = valid_range(kw, q * sw - pl, dw, w)
            cnt_w[q] = j_hi - j_lo
    # per column tap j: the outputs [q_lo, q_hi) whose window holds it inside the input, and where
    # it reads: column q*sw + j*dw - pl = phase b, index q + du
    q_rng = np.empty((kw, 4), dtype=np.int64)
    for j in range(kw):
        q_rng[j, 0], q_rng[j, 1] = valid_range(wo, j * dw - pl, sw, w)
        off = j * dw - pl
        q_rng[j, 2] = off % sw
        q_rng[j, 3] = (off - off % sw) // sw
    planes = n_img * c
    per = -(-planes // n_chunks)
    for chunk in prange(n_chunks):
        rows = np.empty(w, dtype=np.float32)                     # scratch per chunk, not per plane
        phases = np.empty((sw, -(-w // sw)), dtype=np.float32)   # read only where written
        for r in range(chunk * per, min(planes, (chunk + 1) * per)):
            _pool_plane(x[r // c, r % c], y[r // c, r % c], rows, phases, q_rng, cnt_w, kh, sh, sw, dh, pt, pb,
                        is_max, include_pad)


@njit(parallel=True)
def _maxpool_blocked(x, y, kh, kw, sh, sw, dh, dw, pt, pl, n_chunks):
    """MaxPool on channel-blocked x (N, CB, H, W, VL) into y (N, CB, Ho, Wo, VL), parallel over
    n_chunks runs of output rows. Separable as _pool: the rows an output row's windows cover are
    reduced into one (W, VL) row (contiguous loops), then each output pixel takes the max of its
    columns there, VL channels at a time."""
    n_img, n_cb, h, w = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    ho, wo = y.shape[2], y.shape[3]
    xf, yf = x.reshape(-1), y.reshape(-1)
    lowest = np.float32(-np.inf)
    tasks = n_img * n_cb * ho
    per = -(-tasks // n_chunks)
    for chunk in prange(n_chunks):
        rows = np.empty(w * BLOCK_VL, dtype=np.float32)             # scratch per chunk, not per row
        for task in range(chunk * per, min(tasks, (chunk + 1) * per)):
            _maxpool_blocked_row(xf, yf, rows, task // ho, task % ho, h, w, ho, wo, kh, kw, sh, sw, dh,
                                 dw, pt, pl, lowest)


@njit
def _maxpool_blocked_row(xf, yf, rows, plane, p, h, w, ho, wo, kh, kw, sh, sw, dh, dw, pt, pl, lowest):
    """_maxpool_blocked's output row p of one (image, channel block) plane."""
    # one vector of VL channels per step (microkernel.max_into): a lane loop here stayed scalar
    rows[:] = lowest
    i_lo, i_hi = valid_range(kh, p * sh - pt, dh, h)
    for i in range(i_lo, i_hi):
        src = (plane * h + p * sh - pt + i * dh) * w * BLOCK_VL
        for t in range(0, w * BLOCK_VL, BLOCK_VL):
            max_into(rows, t, xf, src + t)
    d = (plane * ho + p) * wo * BLOCK_VL
    yf[d:d + wo * BLOCK_VL] = lowest
    for q in range(wo):
        j_lo, j_hi = valid_range(kw, q * sw - pl, dw, w)
        for j in range(j_lo, j_hi):
            max_into(yf, d + q * BLOCK_VL, rows, (q * sw - pl + j * dw) * BLOCK_VL)


@njit
def _pool_plane(xp, yp, rows, phases, q_rng, cnt_w, kh, sh, sw, dh, pt, pb, is_max, include_pad):
    """_pool on one plane (its docstring)."""
    h, w = xp.shape
    ho, wo = yp.shape
    init = np.float32(-np.inf) if is_max else np.float32(0.0)
    for p in range(ho):
        yrow = yp[p]
        for q in range(wo):
            yrow[q] = init
        i_lo, i_hi = valid_range(kh, p * sh - pt, dh, h)
        if i_hi > i_lo:
            for t in range(w):
                rows[t] = init
            for i in range(i_lo, i_hi):
                src = xp[p * sh - pt + i * dh]
                if is_max:
                    for t in range(w):
                        rows[t] = rows[t] if rows[t] >= src[t] else src[t]
                else:
                    for t in range(w):
                        rows[t] += src[t]
            if sw > 1:
                for b in range(sw):
                    ph = phases[b]
                    for u in range(-(-(w - b) // sw)):
                        ph[u] = rows[u * sw + b]
            for j in range(q_rng.shape[0]):
                q_lo, q_hi, du = q_rng[j, 0], q_rng[j, 1], q_rng[j, 3]
                ys = yrow[q_lo:q_hi]          # slices from 0: no wraparound checks, vectorisable
                src1 = (rows if sw == 1 else phases[q_rng[j, 2]])[q_lo + du:q_hi + du]
                if is_max:
                    for t in range(q_hi - q_lo):
                        ys[t] = ys[t] if ys[t] >= src1[t] else src1[t]
                else:
                    for t in range(q_hi - q_lo):
                        ys[t] += src1[t]
        if not is_max:
            if include_pad:
                cnt_h = valid_range(kh, p * sh, dh, h + pt + pb)[1]
            else:
                cnt_h = i_hi - i_lo
            for q in range(wo):
                count = cnt_h * cnt_w[q]
                yrow[q] = yrow[q] / count if count > 0 else np.nan


_PARALLEL_MIN_ELEMENTS = 1 << 20


@njit(parallel=True)
def _row_means(x2, y1):
    """y1[r] = mean(x2[r, :]), accumulated in float64 (long rows: 7x7 to 112x112)."""
    length = x2.shape[1]
    for r in prange(x2.shape[0]):
        row = x2[r]
        s = 0.0
        for t in range(length):
            s += row[t]
        y1[r] = s / length


# ---------------------------------------------------------------------------------------------
# fast kernels
# ---------------------------------------------------------------------------------------------

def _chunks(x):
    """_pool's runs of planes: one per thread."""
    return max(1, min(x.shape[0] * x.shape[1], kernel_threads()))


def _out(outs, shape):
    return outs if outs is not None else [np.empty(shape, dtype=np.float32)]


@register("MaxPool", infer=maxpool_infer, reference=maxpool_reference, attrs=MAXPOOL_ATTRS)
def maxpool(inputs, attrs, outs=None):
    """A channel-blocked input (5-D) comes with its channel-blocked output buffer."""
    x = np.ascontiguousarray(inputs[0], dtype=np.float32)
    kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, _ = _geometry(attrs)
    if x.ndim == 5:
        n_rows = x.shape[0] * x.shape[1] * outs[0].shape[2]
        _maxpool_blocked(x, outs[0], kh, kw, sh, sw, dh, dw, pt, pl, max(1, min(n_rows, kernel_threads())))
        return outs
    outs = _out(outs, maxpool_infer([x.shape], attrs)[0])
    _pool(x, outs[0], kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, True, False, _chunks(x))
    return outs


@register("AveragePool", infer=avgpool_infer, reference=avgpool_reference, attrs=AVGPOOL_ATTRS)
def avgpool(inputs, attrs, outs=None):
    x = np.ascontiguousarray(inputs[0], dtype=np.float32)
    kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, _ = _geometry(attrs)
    outs = _out(outs, avgpool_infer([x.shape], attrs)[0])
    _pool(x, outs[0], kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, False, bool(attrs["count_include_pad"]),
          _chunks(x))
    return outs


def global_avgpool_calls(inputs, attrs, outs):
    """GlobalAveragePool's call on these arrays (a plan's replay); None unless x is C-contiguous
    float32 (else the kernel works on a copy)."""
    x = inputs[0]
    if not (x.flags.c_contiguous and x.dtype == np.float32):
        return None
    if x.ndim == 5:
        return [means_call(x, outs[0])]
    n, c = x.shape[:2]
    # parallel only when there is work to share: waking the pool's sleeping workers cost 0.26-0.31
    # ms at 2 threads on the bundled model's last layer (256 rows of 16), 20x the work itself
    mean = _row_means if x.size >= _PARALLEL_MIN_ELEMENTS else row_means_serial
    return [(mean, (x.reshape(n * c, -1), outs[0].reshape(n * c)))]


@register("GlobalAveragePool", infer=global_avgpool_infer, reference=global_avgpool_reference, attrs=(),
          calls=global_avgpool_calls)
def global_avgpool(inputs, attrs, outs=None):
    """A channel-blocked input (5-D, ops/conv_blocked.py) comes with its NCHW output buffer."""
    x = np.ascontiguousarray(inputs[0], dtype=np.float32)
    if outs is None:
        outs = _out(outs, global_avgpool_infer([x.shape], attrs)[0])
    for f, args in global_avgpool_calls([x], attrs, outs):
        f(*args)
    return outs
