"""Split and Gather on run-time data with constant parameters (a transformer's q, k, v taken apart).

- Split: attrs axis, split (the part sizes, resolved by the converter from the opset's input,
  attribute or num_outputs). A view op: each output is a slice of the input, no copy.
- Gather: attrs axis, indices (a nested list or a single int, constant; may be negative). The
  output replaces the axis by the indices' shape (a single int removes it), as numpy.take.
"""
from __future__ import annotations

import numpy as np

from .registry import register
from .shape import normalize_axis


# ---- Split --------------------------------------------------------------------------

def _split_infer(in_shapes, attrs):
    x = tuple(in_shapes[0])
    a = normalize_axis(attrs["axis"], len(x), "Split", x)
    parts = list(attrs["split"])
    if any(p < 0 for p in parts) or sum(parts) != x[a]:
        raise ValueError(f"Split: parts {parts} do not add up to dim {x[a]} of axis {attrs['axis']} "
                         f"of input shape {x}")
    return [x[:a] + (p,) + x[a + 1:] for p in parts]


def _split_reference(inputs, attrs):
    x = np.asarray(inputs[0], dtype=np.float32)
    a = attrs["axis"] % x.ndim
    bounds = np.cumsum(attrs["split"])[:-1]
    return [part.copy() for part in np.split(x, bounds, axis=a)]


@register("Split", infer=_split_infer, reference=_split_reference, view=True, attrs=("axis", "split"))
def split(inputs, attrs, outs=None):
    x = inputs[0]
    a = attrs["axis"] % x.ndim
    lead = (slice(None),) * a
    views, start = [], 0
    for p in attrs["split"]:
        views.append(x[lead + (slice(start, start + p),)])
        start += p
    return views


# ---- Gather -------------------------------------------------------------------------

def _gather_check(x, attrs):
    """(axis, indices array) after checking the indices are within the axis."""
    a = normalize_axis(attrs["axis"], len(x), "Gather", x)
    idx = np.asarray(attrs["indices"], dtype=np.int64)
    if idx.size and (idx.min() < -x[a] or idx.max() >= x[a]):
        raise ValueError(f"Gather: indices {attrs['indices']} out of range for dim {x[a]} of axis "
                         f"{attrs['axis']} of input shape {x}")
    return a, idx


def _gather_infer(in_shapes, attrs):
    x = tuple(in_shapes[0])
    a, idx = _gather_check(x, attrs)
    return [x[:a] + idx.shape + x[a + 1:]]


def _gather_reference(inputs, attrs):
    x = np.asarray(inputs[0], dtype=np.float32)
    a, idx = _gather_check(x.shape, attrs)
    out = np.empty(x.shape[:a] + idx.shape + x.shape[a + 1:], np.float32)
    for pos in np.ndindex(*idx.shape):       # one slice of the axis per index
        i = int(idx[pos]) % x.shape[a]
        out[(slice(None),) * a + pos] = x[(slice(None),) * a + (i,)]
    return [out]


@register("Gather", infer=_gather_infer, reference=_gather_reference, attrs=("axis", "indices"))
def gather(inputs, attrs, outs):
    x, out = inputs[0], outs[0]
    a = attrs["axis"] % x.ndim
    np.take(x, np.asarray(attrs["indices"], dtype=np.int64), axis=a, out=out)
    return [out]
