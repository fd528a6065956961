"""Activations: Relu, Clip, LeakyRelu, PRelu, Sigmoid, HardSigmoid, HardSwish, Tanh.

The piecewise-linear ops (Relu, Clip, LeakyRelu, HardSigmoid, HardSwish) share one Numba
kernel selected by an op code: one compile serves five ops (JIT time counts on a device's
first run), and the switch sits outside the loops, so each loop body is a tight,
vectorised select. Sigmoid and Tanh stay on NumPy: without Intel SVML, Numba calls scalar
expf/tanhf per element, measured 4-60x slower than NumPy's SIMD exp/tanh.

Comparisons are written so NaN falls through unchanged (`NaN < 0` is False): NaN
propagates as in ONNX/NumPy.
"""
from __future__ import annotations

import numpy as np

from haste_edge.jit import njit, prange

from .registry import register

# Below this many elements one thread wins: waking the worker pool costs more than the
# work (and much more when another process holds the other core).
PARALLEL_MIN = 1 << 17
# Elements per parallel task: large enough to amortise scheduling, small enough to balance.
CHUNK = 1 << 14

RELU, CLIP, LEAKY_RELU, HARD_SIGMOID, HARD_SWISH = range(5)


@njit
def _unary_range(x, out, lo, hi, op, a, b):
    """out[lo:hi] = f_op(x[lo:hi]) on 1-D C-contiguous float32 arrays; a, b: op parameters."""
    # Loop over slice views from 0: indices LLVM can prove non-negative need no wraparound
    # branch, so the loops vectorise (indexing x[i] for i in range(lo, hi) measured 5x slower).
    xs = x[lo:hi]
    os = out[lo:hi]
    n = xs.size
    a32 = np.float32(a)
    b32 = np.float32(b)
    zero = np.float32(0.0)
    one = np.float32(1.0)
    if op == RELU:
        for i in range(n):
            v = xs[i]
            os[i] = zero if v < zero else v
    elif op == CLIP:  # a = min, b = max; min > max yields max everywhere, as ONNX specifies
        for i in range(n):
            v = xs[i]
            v = a32 if v < a32 else v
            os[i] = b32 if v > b32 else v
    elif op == LEAKY_RELU:  # a = alpha
        for i in range(n):
            v = xs[i]
            os[i] = v * a32 if v < zero else v
    elif op == HARD_SIGMOID:  # a = alpha, b = beta
        for i in range(n):
            v = a32 * xs[i] + b32
            v = one if v > one else v
            os[i] = zero if v < zero else v
    elif op == HARD_SWISH:  # x * HardSigmoid(x) with alpha = 1/6, beta = 0.5
        six = np.float32(6.0)
        half = np.float32(0.5)
        for i in range(n):
            v = xs[i]
            h = v / six + half
            h = one if h > one else h
            h = zero if h < zero else h
            os[i] = v * h


@njit(parallel=True)
def _unary_parallel(x, out, op, a, b):
    n = x.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        lo = c * CHUNK
        _unary_range(x, out, lo, min(lo + CHUNK, n), op, a, b)


def _unary(x, out, op, a=0.0, b=0.0):
    """Apply op code `op` to x into the preallocated `out`; a, b must be Python floats."""
    xf = x.ravel()          # a view when x is contiguous, else one contiguous copy
    of = out.reshape(-1)    # out is C-contiguous: always a view
    n = xf.size
    if n >= PARALLEL_MIN:
        _unary_parallel(xf, of, op, a, b)
    else:
        _unary_range(xf, of, 0, n, op, a, b)
    return out


def _same_shape(in_shapes, attrs):
    return [tuple(in_shapes[0])]


def _f64(x):
    # References compute in float64 so they are an accurate oracle for the float32 kernels.
    return np.asarray(x, dtype=np.float64)


# ---- Relu ---------------------------------------------------------------------------

def _relu_ref(inputs, attrs):
    return [np.maximum(_f64(inputs[0]), 0.0).astype(np.float32)]


@register("Relu", infer=_same_shape, reference=_relu_ref)
def relu(inputs, attrs, outs):
    return [_unary(inputs[0], outs[0], RELU)]


# ---- Clip ---------------------------------------------------------------------------

def _clip_bounds(attrs):
    lo, hi = attrs["min"], attrs["max"]
    return (-np.inf if lo is None else float(lo)), (np.inf if hi is None else float(hi))


def _clip_ref(inputs, attrs):
    lo, hi = _clip_bounds(attrs)
    # ONNX: min > max sets everything to max, which is what min(max(x, lo), hi) gives.
    return [np.minimum(np.maximum(_f64(inputs[0]), lo), hi).astype(np.float32)]


@register("Clip", infer=_same_shape, reference=_clip_ref, attrs=("min", "max"))
def clip(inputs, attrs, outs):
    lo, hi = _clip_bounds(attrs)
    return [_unary(inputs[0], outs[0], CLIP, lo, hi)]


# ---- LeakyRelu ----------------------------------------------------------------------

def _leaky_relu_ref(inputs, attrs):
    x = _f64(inputs[0])
    return [np.where(x < 0, attrs["alpha"] * x, x).astype(np.float32)]


@register("LeakyRelu", infer=_same_shape, reference=_leaky_relu_ref, attrs=("alpha",))
def leaky_relu(inputs, attrs, outs):
    return [_unary(inputs[0], outs[0], LEAKY_RELU, float(attrs["alpha"]))]


# ---- PRelu --------------------------------------------------------------------------

def _prelu_infer(in_shapes, attrs):
    x, s = tuple(in_shapes[0]), tuple(in_shapes[1])
    # Unidirectional broadcast: slope aligns to x's trailing dims, each 1 or equal.
    if len(s) > len(x) or any(d not in (1, xd) for d, xd in zip(reversed(s), reversed(x))):
        raise ValueError(f"PRelu: slope shape {s} does not broadcast to input shape {x}")
    return [x]


def _prelu_ref(inputs, attrs):
    x, slope = _f64(inputs[0]), _f64(inputs[1])
    return [np.where(x < 0, x * slope, x).astype(np.float32)]


@njit
def _prelu_rows(x, out, slope, r0, r1):
    """Rows r0..r1 of x viewed as (N*C, spatial); row r belongs to channel r % C."""
    C = slope.size
    zero = np.float32(0.0)
    for r in range(r0, r1):
        s = slope[r % C]
        xr = x[r]      # row views: the inner loop indexes from 0 and vectorises
        orow = out[r]
        for j in range(xr.size):
            v = xr[j]
            orow[j] = v * s if v < zero else v


@njit(parallel=True)
def _prelu_parallel(x, out, slope):
    rows = x.shape[0]
    per_task = max(1, CHUNK // max(1, x.shape[1]))
    for t in prange((rows + per_task - 1) // per_task):
        r0 = t * per_task
        _prelu_rows(x, out, slope, r0, min(r0 + per_task, rows))


def _is_per_channel(slope_shape, x_shape):
    """True if slope, right-aligned to x, varies only along axis 1 (the CNN case, e.g. (C,1,1))."""
    pad = len(x_shape) - len(slope_shape)
    return all(d == 1 for i, d in enumerate(slope_shape, start=pad) if i != 1)


@register("PRelu", infer=_prelu_infer, reference=_prelu_ref)
def prelu(inputs, attrs, outs):
    x, slope = inputs
    out = outs[0]
    if slope.size == 1:  # a single slope is exactly LeakyRelu
        return [_unary(x, out, LEAKY_RELU, float(slope.flat[0]))]
    if x.ndim >= 2 and x.size and _is_per_channel(slope.shape, x.shape):
        # Per-channel slope: one Numba pass over (N*C, spatial) rows, no temporaries
        # (the NumPy formula below needs four passes and a temporary: measured ~3x slower).
        rows = x.shape[0] * x.shape[1]
        x2 = np.ascontiguousarray(x).reshape(rows, -1)
        o2 = out.reshape(rows, -1)
        s = slope.ravel()
        if x.size >= PARALLEL_MIN:
            _prelu_parallel(x2, o2, s)
        else:
            _prelu_rows(x2, o2, s, 0, rows)
        return [out]
    # Any other broadcast pattern (rare): NumPy, as min(x, 0) * slope + max(x, 0).
    # NaN stays NaN (through max), like the reference.
    np.minimum(x, 0.0, out=out)
    np.multiply(out, slope, out=out)
    np.add(out, np.maximum(x, 0.0), out=out)
    return [out]


# ---- Sigmoid, HardSigmoid, HardSwish, Tanh ------------------------------------------

def _sigmoid_ref(inputs, attrs):
    return [(1.0 / (1.0 + np.exp(-_f64(inputs[0])))).astype(np.float32)]


@register("Sigmoid", infer=_same_shape, reference=_sigmoid_ref)
def sigmoid(inputs, attrs, outs):
    # 1 / (1 + exp(-x)) in place in `out`: four SIMD passes over a buffer that stays in cache
    # beat one scalar-exp Numba pass ~4x. exp overflows to inf for x < -88, giving the exact
    # limit 0, so that overflow is expected, not an error worth a warning.
    out = outs[0]
    np.negative(inputs[0], out=out)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    np.add(out, 1.0, out=out)
    np.reciprocal(out, out=out)
    return [out]


def _hard_sigmoid_ref(inputs, attrs):
    y = attrs["alpha"] * _f64(inputs[0]) + attrs["beta"]
    return [np.minimum(np.maximum(y, 0.0), 1.0).astype(np.float32)]


@register("HardSigmoid", infer=_same_shape, reference=_hard_sigmoid_ref, attrs=("alpha", "beta"))
def hard_sigmoid(inputs, attrs, outs):
    return [_unary(inputs[0], outs[0], HARD_SIGMOID, float(attrs["alpha"]), float(attrs["beta"]))]


def _hard_swish_ref(inputs, attrs):
    x = _f64(inputs[0])
    return [(x * np.minimum(np.maximum(x / 6.0 + 0.5, 0.0), 1.0)).astype(np.float32)]


@register("HardSwish", infer=_same_shape, reference=_hard_swish_ref)
def hard_swish(inputs, attrs, outs):
    return [_unary(inputs[0], outs[0], HARD_SWISH)]


def _tanh_ref(inputs, attrs):
    return [np.tanh(_f64(inputs[0])).astype(np.float32)]


@register("Tanh", infer=_same_shape, reference=_tanh_ref)
def tanh(inputs, attrs, outs):
    return [np.tanh(inputs[0], out=outs[0])]
