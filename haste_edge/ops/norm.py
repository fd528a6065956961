"""BatchNormalization, inference form: y = (x - mean) / sqrt(var + eps) * scale + B.

Per channel this is an affine map y = x * s + t, so the kernel folds the four parameter
vectors into (s, t) once (in float64, rounded once) and then makes a single pass over
x viewed as (N*C, spatial) rows. Any rank >= 2; the channel axis is 1.
"""
from __future__ import annotations

import numpy as np

from haste_edge.jit import njit, prange

from .registry import register

# Same trade-off as in activation.py: small tensors stay on one thread.
PARALLEL_MIN = 1 << 17
CHUNK = 1 << 14


@njit
def _scale_shift(scale, bias, mean, var, eps):
    C = scale.size
    s = np.empty(C, np.float32)
    t = np.empty(C, np.float32)
    for c in range(C):
        k = scale[c] / np.sqrt(np.float64(var[c]) + eps)
        s[c] = k
        t[c] = bias[c] - mean[c] * k
    return s, t


@njit
def _affine_rows(x, out, s, t, r0, r1):
    """Rows r0..r1 of (N*C, spatial) arrays; row r belongs to channel r % C."""
    C = s.size
    for r in range(r0, r1):
        sc = s[r % C]
        sh = t[r % C]
        xr = x[r]      # row views: the inner loop indexes from 0 and vectorises
        orow = out[r]
        for j in range(xr.size):
            orow[j] = xr[j] * sc + sh


@njit
def _bn_serial(x, out, scale, bias, mean, var, eps):
    s, t = _scale_shift(scale, bias, mean, var, eps)
    _affine_rows(x, out, s, t, 0, x.shape[0])


@njit(parallel=True)
def _bn_parallel(x, out, scale, bias, mean, var, eps):
    s, t = _scale_shift(scale, bias, mean, var, eps)
    rows = x.shape[0]
    per_task = max(1, CHUNK // max(1, x.shape[1]))
    for k in prange((rows + per_task - 1) // per_task):
        r0 = k * per_task
        _affine_rows(x, out, s, t, r0, min(r0 + per_task, rows))


def _bn_infer(in_shapes, attrs):
    x = tuple(in_shapes[0])
    if len(x) < 2:
        raise ValueError(f"BatchNormalization: input must have rank >= 2, got shape {x}")
    for name, shape in zip(("scale", "B", "mean", "var"), in_shapes[1:5]):
        if tuple(shape) != (x[1],):
            raise ValueError(f"BatchNormalization: {name} shape {tuple(shape)} does not match "
                             f"({x[1]},) for input shape {x}")
    return [x]


def _bn_reference(inputs, attrs):
    x, scale, bias, mean, var = (np.asarray(a, dtype=np.float64) for a in inputs[:5])
    c = (1, -1) + (1,) * (x.ndim - 2)   # per-channel vectors broadcast along axis 1
    y = (x - mean.reshape(c)) / np.sqrt(var.reshape(c) + attrs["epsilon"]) * scale.reshape(c) \
        + bias.reshape(c)
    return [y.astype(np.float32)]


@register("BatchNormalization", infer=_bn_infer, reference=_bn_reference, attrs=("epsilon",))
def batch_normalization(inputs, attrs, outs):
    x, scale, bias, mean, var = inputs[:5]
    out = outs[0]
    if x.size == 0:
        return [out]
    rows = x.shape[0] * x.shape[1]
    x2 = np.ascontiguousarray(x).reshape(rows, -1)
    o2 = out.reshape(rows, -1)
    # One compiled call does both steps: the Python-side cost per node stays one dispatch.
    run = _bn_parallel if x.size >= PARALLEL_MIN else _bn_serial
    run(x2, o2, scale.ravel(), bias.ravel(), mean.ravel(), var.ravel(), float(attrs["epsilon"]))
    return [out]
