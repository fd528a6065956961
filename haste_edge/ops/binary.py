"""Elementwise binary ops: Add, Sub, Mul, Div with NumPy multidirectional broadcasting.

The fast path is the NumPy ufunc writing straight into the preallocated buffer: it
broadcasts without materialising either operand and accepts strided views as they are.
The op is memory-bound, so a Numba kernel has nothing to win: measured on the 2-core
target, a same-shape Numba add matched NumPy on one thread and was slower in parallel.
"""
from __future__ import annotations

import numpy as np

from .registry import register


def _make_infer(op):
    def infer(in_shapes, attrs):
        a, b = tuple(in_shapes[0]), tuple(in_shapes[1])
        try:
            return [np.broadcast_shapes(a, b)]
        except ValueError:
            raise ValueError(f"{op}: input shapes {a} and {b} are not broadcastable") from None
    return infer


def _make_reference(fn):
    def reference(inputs, attrs):
        # float64 then round once: the oracle is at least as accurate as the kernel.
        a = np.asarray(inputs[0], dtype=np.float64)
        b = np.asarray(inputs[1], dtype=np.float64)
        return [fn(a, b).astype(np.float32)]
    return reference


def _make_kernel(ufunc):
    def kernel(inputs, attrs, outs):
        # out= fills the buffer in place; the ufunc casts (e.g. an int64 weight) as needed.
        return [ufunc(inputs[0], inputs[1], out=outs[0])]
    return kernel


for _op, _ufunc in (("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply),
                    ("Div", np.divide)):
    register(_op, infer=_make_infer(_op), reference=_make_reference(_ufunc))(_make_kernel(_ufunc))


def _sum_infer(in_shapes, attrs):
    try:
        return [np.broadcast_shapes(*[tuple(s) for s in in_shapes])]
    except ValueError:
        raise ValueError(f"Sum: input shapes {[tuple(s) for s in in_shapes]} are not broadcastable") from None


def _sum_reference(inputs, attrs):
    total = np.zeros(np.broadcast_shapes(*[np.shape(x) for x in inputs]), dtype=np.float64)
    for x in inputs:
        total = total + np.asarray(x, dtype=np.float64)
    return [total.astype(np.float32)]


@register("Sum", infer=_sum_infer, reference=_sum_reference)
def _sum_kernel(inputs, attrs, outs):
    """Variadic Add (older exporters' residual connections)."""
    out = outs[0]
    if len(inputs) == 1:
        out[...] = inputs[0]
        return [out]
    np.add(inputs[0], inputs[1], out=out)
    for x in inputs[2:]:
        np.add(out, x, out=out)
    return [out]
