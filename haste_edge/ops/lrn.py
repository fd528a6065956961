"""LRN: local response normalisation across channels (AlexNet-era nets).

y[c] = x[c] / (bias + alpha / size * sum_{c' in window(c)} x[c']^2) ** beta, where the window
runs from c - floor((size-1)/2) to c + ceil((size-1)/2), clipped to the valid channels.
"""
from __future__ import annotations

import numpy as np

from ..jit import njit, prange
from .registry import register


def _infer(in_shapes, attrs):
    if len(in_shapes[0]) < 3:
        raise ValueError(f"LRN: input must have a channel axis and spatial dims, got shape {in_shapes[0]}")
    return [tuple(in_shapes[0])]


def _reference(inputs, attrs):
    x = np.asarray(inputs[0], dtype=np.float64)
    size = attrs["size"]
    lo, hi = (size - 1) // 2, -(-(size - 1) // 2)
    sq = np.zeros_like(x)
    for c in range(x.shape[1]):
        sq[:, c] = (x[:, max(0, c - lo):min(x.shape[1], c + hi + 1)] ** 2).sum(axis=1)
    y = x / (attrs["bias"] + attrs["alpha"] / size * sq) ** attrs["beta"]
    return [y.astype(np.float32)]


@njit(parallel=True)
def _lrn(x, y, size, alpha, beta, bias):
    # x, y: (N, C, P) with P the flattened spatial size
    n, c, p = x.shape
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    for i in prange(n * c):
        b, ch = i // c, i % c
        first, last = max(0, ch - lo), min(c - 1, ch + hi)
        for j in range(p):
            s = 0.0
            for k in range(first, last + 1):
                v = x[b, k, j]
                s += v * v
            y[b, ch, j] = x[b, ch, j] / (bias + alpha / size * s) ** beta


@register("LRN", infer=_infer, reference=_reference, attrs=("size", "alpha", "beta", "bias"))
def kernel(inputs, attrs, outs):
    x = np.ascontiguousarray(inputs[0], dtype=np.float32)
    n, c = x.shape[:2]
    _lrn(x.reshape(n, c, -1), outs[0].reshape(n, c, -1), int(attrs["size"]), float(attrs["alpha"]),
         float(attrs["beta"]), float(attrs["bias"]))
    return outs
