"""LayerNormalization (ONNX opset 17): normalise over the trailing axes from `axis` on.

  Mean = mean(X over axes >= axis), InvStdDev = 1 / sqrt(var + epsilon) (biased variance),
  Y = (X - Mean) * InvStdDev * Scale + B

X viewed as (rows, n) rows, n the product of the normalised dims: one compiled pass per row
computes the statistics in float64 (two passes over a row that sits in cache: no cancellation
from E[x^2] - E[x]^2) and writes Y. Scale and B broadcast to the normalised shape; they are
expanded to n-vectors once per call (a transformer's are (n,) already: no copy). The optional
Mean and InvStdDev outputs have X's shape with the normalised dims set to 1.
"""
from __future__ import annotations

import math

import numpy as np

from haste_edge.jit import njit, prange

from .registry import register
from .shape import normalize_axis

# Below this many elements one thread wins (as activation.py)
PARALLEL_MIN = 1 << 17


def _dims(x_shape, attrs):
    """(axis, rows, n) for X viewed as (rows, n)."""
    a = normalize_axis(attrs["axis"], len(x_shape), "LayerNormalization", tuple(x_shape))
    return a, math.prod(x_shape[:a]), math.prod(x_shape[a:])


def _broadcasts(shape, target) -> bool:
    """True when `shape` broadcasts unidirectionally to `target`."""
    return len(shape) <= len(target) and all(d in (1, t) for d, t in zip(reversed(shape), reversed(target)))


def _infer(in_shapes, attrs):
    x = tuple(in_shapes[0])
    if len(x) == 0:
        raise ValueError("LayerNormalization: input X must have rank >= 1, got a scalar")
    a, _, _ = _dims(x, attrs)
    normalised = x[a:]
    for name, s in zip(("Scale", "B"), in_shapes[1:3]):
        if s is not None and not _broadcasts(tuple(s), normalised):
            raise ValueError(f"LayerNormalization: {name} shape {tuple(s)} does not broadcast to the "
                             f"normalised shape {normalised} (X {x}, axis {attrs['axis']})")
    stats = x[:a] + (1,) * (len(x) - a)
    return [x, stats, stats]


def _reference(inputs, attrs):
    x = np.asarray(inputs[0], dtype=np.float64)
    a = normalize_axis(attrs["axis"], x.ndim, "LayerNormalization", x.shape)
    axes = tuple(range(a, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(var + attrs["epsilon"])
    y = (x - mean) * inv * np.asarray(inputs[1], dtype=np.float64)
    if len(inputs) > 2 and inputs[2] is not None:
        y = y + np.asarray(inputs[2], dtype=np.float64)
    return [y.astype(np.float32), mean.astype(np.float32), inv.astype(np.float32)]


@njit
def _rows(x, y, scale, bias, mean, inv, eps, r0, r1):
    """Rows r0..r1 of (rows, n) arrays x -> y; mean[r], inv[r] written too."""
    n = x.shape[1]
    for r in range(r0, r1):
        xr = x[r]
        yr = y[r]
        s = 0.0
        for j in range(n):
            s += xr[j]
        m = s / n
        v = 0.0
        for j in range(n):
            d = xr[j] - m
            v += d * d
        k = 1.0 / np.sqrt(v / n + eps)
        mean[r] = m
        inv[r] = k
        m32 = np.float32(m)
        k32 = np.float32(k)
        for j in range(n):
            yr[j] = (xr[j] - m32) * k32 * scale[j] + bias[j]


@njit
def _serial(x, y, scale, bias, mean, inv, eps):
    _rows(x, y, scale, bias, mean, inv, eps, 0, x.shape[0])


@njit(parallel=True)
def _parallel(x, y, scale, bias, mean, inv, eps):
    rows = x.shape[0]
    per_task = max(1, (1 << 14) // max(1, x.shape[1]))
    for t in prange((rows + per_task - 1) // per_task):
        r0 = t * per_task
        _rows(x, y, scale, bias, mean, inv, eps, r0, min(r0 + per_task, rows))


def _vector(p, normalised, n):
    """Scale or B as a contiguous float32 n-vector (zeros when absent)."""
    if p is None:
        return np.zeros(n, np.float32)
    return np.ascontiguousarray(np.broadcast_to(p, normalised), dtype=np.float32).reshape(n)


@register("LayerNormalization", infer=_infer, reference=_reference, attrs=("axis", "epsilon"))
def layer_normalization(inputs, attrs, outs):
    x = inputs[0]
    y = outs[0]
    a, rows, n = _dims(x.shape, attrs)
    if x.size == 0:
        return outs
    normalised = x.shape[a:]
    scale = _vector(inputs[1], normalised, n)
    bias = _vector(inputs[2] if len(inputs) > 2 else None, normalised, n)
    # statistics go to the requested outputs, else to a small scratch pair
    mean = outs[1].reshape(rows) if len(outs) > 1 else np.empty(rows, np.float32)
    inv = outs[2].reshape(rows) if len(outs) > 2 else np.empty(rows, np.float32)
    run = _parallel if x.size >= PARALLEL_MIN else _serial
    run(np.ascontiguousarray(x, dtype=np.float32).reshape(rows, n), y.reshape(rows, n), scale, bias,
        mean, inv, float(attrs["epsilon"]))
    return outs
