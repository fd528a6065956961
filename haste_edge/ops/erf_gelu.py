"""Erf and Gelu (ONNX opset 20: approximate "none" = x * (1 + erf(x / sqrt 2)) / 2, "tanh" =
x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))) / 2).

NumPy has no erf, so both run as one compiled pass over the flattened tensor, erf by a vectorised
approximation (below; tanh from libm per element); the torch export of nn.GELU (Div, Erf, Add, Mul, Mul) becomes one Gelu
node at conversion (converters/graph_passes.py), one pass instead of five. The references
compute in float64 with Python's math.erf.
"""
from __future__ import annotations

import math

import numpy as np

from haste_edge.jit import njit, prange
from haste_edge.softmax import exp_shifted

from .registry import register

PARALLEL_MIN = 1 << 16     # elements from which the pass is split over the threads
CHUNK = 1 << 13
ERF, GELU, GELU_TANH = range(3)
_SQRT_HALF = math.sqrt(0.5)
_SQRT_2_PI = math.sqrt(2.0 / math.pi)


def _same_shape(in_shapes, attrs):
    return [tuple(in_shapes[0])]


# erf(x) for |x| < 0.8: its Taylor series to x^15 (truncation < 4e-8); above: Abramowitz and Stegun
# 7.1.26, 1 - t (a1 + a2 t + ... + a5 t^4) exp(-x^2), t = 1 / (1 + p |x|) (absolute error < 1.5e-7),
# exp from softmax.py's vectorised loop. Both are computed and one selected, so the loop has no
# branch and LLVM vectorises it (with error_model="numpy": Python's zero-division check on the
# division would otherwise keep it scalar). Against float64 erf: under 2.5e-7 absolute and 3e-7
# relative (tests/test_ops_transformer.py).
_SMALL = np.float32(0.8)
_TAYLOR = tuple(np.float32((-1) ** n / (math.factorial(n) * (2 * n + 1)) * 2 / math.sqrt(math.pi))
                for n in range(8))
_C0, _C1, _C2, _C3, _C4, _C5, _C6, _C7 = _TAYLOR
_P = np.float32(0.3275911)
_A1, _A2, _A3, _A4, _A5 = (np.float32(v) for v in (0.254829592, -0.284496736, 1.421413741, -1.453152027,
                                                    1.061405429))
_BLOCK = 512


@njit(inline="always")
def _erf_from(v, e):
    """erf(v), e = exp(-v^2)."""
    a = abs(v)
    z = v * v
    small = v * (_C0 + z * (_C1 + z * (_C2 + z * (_C3 + z * (_C4 + z * (_C5 + z * (_C6 + z * _C7)))))))
    u = np.float32(1.0) / (np.float32(1.0) + _P * a)
    large = np.float32(1.0) - u * (_A1 + u * (_A2 + u * (_A3 + u * (_A4 + u * _A5)))) * e
    large = large if v >= 0 else -large
    return small if a < _SMALL else large


@njit(error_model="numpy")
def _range(x, out, lo, hi, op):
    e = np.empty(_BLOCK, np.float32)
    bits = np.empty(_BLOCK, np.int32)
    bits_f = bits.view(np.float32)
    for b in range(lo, hi, _BLOCK):
        n = min(_BLOCK, hi - b)
        # block views, not x[b + t]: indexed with the offset the loops below ran about 3x slower,
        # whole ViT 0.93-0.94x with views (results/gelu_block_views_vit.md)
        xb, ob = x[b:b + n], out[b:b + n]
        if op == GELU_TANH:
            for t in range(n):
                v = xb[t]
                inner = np.float32(_SQRT_2_PI) * (v + np.float32(0.044715) * v * v * v)
                ob[t] = np.float32(0.5) * v * (np.float32(1.0) + math.tanh(inner))
            continue
        arg = np.float32(1.0) if op == ERF else np.float32(_SQRT_HALF)
        for t in range(n):
            v = xb[t] * arg
            e[t] = -(v * v)
        exp_shifted(e, n, np.float32(0.0), bits, bits_f)
        if op == ERF:
            for t in range(n):
                ob[t] = _erf_from(xb[t], e[t])
        else:
            for t in range(n):
                v = xb[t]
                ob[t] = np.float32(0.5) * v * (np.float32(1.0) + _erf_from(v * arg, e[t]))


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
