"""Erf and Gelu (ONNX opset 20: approximate "none" = x * (1 + erf(x / sqrt 2)) / 2, "tanh" =
x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))) / 2).

NumPy has no erf, so both run as one compiled pass over the flattened tensor calling libm's erf
(or tanh) per element; the torch export of nn.GELU (Div, Erf, Add, Mul, Mul) becomes one Gelu
node at conversion (converters/graph_passes.py), one pass instead of five. The references
compute in float64 with Python's math.erf.
"""
from __future__ import annotations

import math

import numpy as np

from haste_edge.jit import njit, prange

from .registry import register

PARALLEL_MIN = 1 << 16     # erf costs ~10 ns an element: threads pay off earlier than for Relu
CHUNK = 1 << 13
ERF, GELU, GELU_TANH = range(3)
_SQRT_HALF = math.sqrt(0.5)
_SQRT_2_PI = math.sqrt(2.0 / math.pi)


def _same_shape(in_shapes, attrs):
    return [tuple(in_shapes[0])]


@njit
def _range(x, out, lo, hi, op):
    for i in range(lo, hi):
        v = x[i]
        if op == ERF:
            out[i] = math.erf(v)
        elif op == GELU:
            out[i] = np.float32(0.5) * v * (np.float32(1.0) + math.erf(v * np.float32(_SQRT_HALF)))
        else:
            inner = np.float32(_SQRT_2_PI) * (v + np.float32(0.044715) * v * v * v)
            out[i] = np.float32(0.5) * v * (np.float32(1.0) + math.tanh(inner))


@njit(parallel=True)
def _parallel(x, out, op):
    n = x.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        lo = c * CHUNK
        _range(x, out, lo, min(lo + CHUNK, n), op)


def _apply(x, out, op):
    xf = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    of = out.reshape(-1)
    if xf.size >= PARALLEL_MIN:
        _parallel(xf, of, op)
    else:
        _range(xf, of, 0, xf.size, op)
    return [out]


def _erf_reference(inputs, attrs):
    x = np.asarray(inputs[0], dtype=np.float64)
    return [np.vectorize(math.erf, otypes=[np.float64])(x).astype(np.float32)]


@register("Erf", infer=_same_shape, reference=_erf_reference)
def erf(inputs, attrs, outs):
    return _apply(inputs[0], outs[0], ERF)


def _gelu_infer(in_shapes, attrs):
    if attrs["approximate"] not in ("none", "tanh"):
        raise ValueError(f"Gelu: approximate must be 'none' or 'tanh', got {attrs['approximate']!r}")
    return _same_shape(in_shapes, attrs)


def _gelu_reference(inputs, attrs):
    x = np.asarray(inputs[0], dtype=np.float64)
    if attrs["approximate"] == "tanh":
        y = 0.5 * x * (1.0 + np.tanh(_SQRT_2_PI * (x + 0.044715 * x ** 3)))
    else:
        y = 0.5 * x * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(x / math.sqrt(2.0)))
    return [y.astype(np.float32)]


@register("Gelu", infer=_gelu_infer, reference=_gelu_reference, attrs=("approximate",))
def gelu(inputs, attrs, outs):
    return _apply(inputs[0], outs[0], GELU_TANH if attrs["approximate"] == "tanh" else GELU)
