"""Softmax over the rows of float32 scores in loops LLVM vectorises: attention's inner step.

Two pieces Numba does not vectorise by itself: exp (np.exp stays a scalar libm call per element on
CPUs without SVML) and a row's maximum (a float max reduction is not vectorised under fast-math
without nnan; the maximum is taken over the floats' bit patterns mapped to ordered int32 keys
instead, which an integer max reduction vectorises).

exp, for softmax's exp(s - max), arguments <= 0:

exp(x) = 2^k * e^r with k = round(x / ln 2), r = x - k ln 2 in [-0.35, 0.35] (ln 2 split in a
high part exact in float32 and a low part), e^r by its Taylor polynomial to degree 6 (truncation
under 1.2e-7 relative), 2^k built from its exponent bits. Arguments under -87 give e^-87 (the
smallest normal float32 is e^-87.3). Relative error against float64 exp: under 5e-7
(tests/test_softmax.py).
"""
from __future__ import annotations

import numpy as np

from haste_edge.jit import njit

_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_FLOOR = np.float32(-87.0)


@njit(inline="always")
def exp_shifted(s, n, top, bits, scale):
    """s[t] = exp(s[t] - top) for t < n (every s[t] <= top); returns their sum. bits: int32
    scratch of at least n, scale: bits.view(np.float32) (made once by the caller: a view per row
    cost as much as the row's exps on rows of 200)."""
    for t in range(n):
        x = s[t] - top
        x = x if x > _FLOOR else _FLOOR
        k = np.float32(np.floor(x * _LOG2E + np.float32(0.5)))
        r = x - k * _LN2_HI - k * _LN2_LO
        p = np.float32(1 / 720)
        p = p * r + np.float32(1 / 120)
        p = p * r + np.float32(1 / 24)
        p = p * r + np.float32(1 / 6)
        p = p * r + np.float32(0.5)
        p = p * r + np.float32(1.0)
        s[t] = p * r + np.float32(1.0)
        bits[t] = (np.int32(k) + np.int32(127)) << np.int32(23)
    total = np.float32(0.0)
    for t in range(n):
        s[t] *= scale[t]
        total += s[t]
    return total


@njit
def exp_shifted_reference(s, n, top):
    """The same with the math library's exp, element by element."""
    total = np.float32(0.0)
    for t in range(n):
        s[t] = np.float32(np.exp(np.float64(s[t] - top)))
        total += s[t]
    return total


@njit(inline="always")
def _ordered(b):
    """An int32 key ordered as the float32 whose bits are b (negative floats' bits reversed)."""
    return b ^ ((b >> np.int32(31)) & np.int32(0x7FFFFFFF))


@njit(inline="always")
def row_max(r_bits, n, one, one_f):
    """The largest of the n float32 values whose bits are r_bits[:n] (no NaN among them); one /
    one_f: an int32 array of 1 and its float32 view."""
    top = np.int32(-2147483648)
    for t in range(n):
        key = _ordered(r_bits[t])
        top = key if key > top else top
    one[0] = _ordered(top)
    return one_f[0]


@njit
def softmax_rows(s, bias, scale):
    """s (H, M, N) <- softmax over its last axis of s * scale + bias[h] (bias (H, N), added to every
    row of head h: log group sizes in HTTM, zeros in dense attention)."""
    h, m, n = s.shape
    bits = np.empty(n, np.int32)
    bits_f = bits.view(np.float32)
    one = np.empty(1, np.int32)
    one_f = one.view(np.float32)
    for a in range(h):
        b = bias[a]
        for i in range(m):
            r = s[a, i]
            for t in range(n):
                r[t] = r[t] * scale + b[t]
            top = row_max(r.view(np.int32), n, one, one_f)
            inv = np.float32(1.0) / exp_shifted(r, n, top, bits, bits_f)
            for t in range(n):
                r[t] *= inv


def softmax_rows_reference(s, bias, scale):
    """softmax_rows in float64 NumPy; returns a new float32 array."""
    x = np.asarray(s, np.float64) * scale + np.asarray(bias, np.float64)[:, None, :]
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
