"""Shape ops.

View ops (Flatten, Reshape, Squeeze, Unsqueeze, Identity) return a NumPy view of input 0;
NumPy copies only when the input's strides make a view impossible. Transpose, Concat and
Pad move data into the preallocated buffer with NumPy slice assignment, which already
runs at memory speed for these copies.
"""
from __future__ import annotations

import math

import numpy as np

from .registry import register


def normalize_axis(axis, rank, op, shape, allow_end=False):
    """Normalise a possibly negative axis; allow_end admits axis == rank (Flatten)."""
    hi = rank + 1 if allow_end else rank
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < hi:
        raise ValueError(f"{op}: axis {axis} out of range for input shape {tuple(shape)}")
    return a


# ---- Identity -----------------------------------------------------------------------

def _identity_infer(in_shapes, attrs):
    return [tuple(in_shapes[0])]


def _identity_reference(inputs, attrs):
    return [np.array(inputs[0], dtype=np.float32)]


@register("Identity", infer=_identity_infer, reference=_identity_reference, view=True)
def identity(inputs, attrs, outs=None):
    return [inputs[0]]


# ---- Flatten ------------------------------------------------------------------------

def _flatten_shape(shape, attrs):
    a = normalize_axis(attrs["axis"], len(shape), "Flatten", shape, allow_end=True)
    return (math.prod(shape[:a]), math.prod(shape[a:]))


def _flatten_infer(in_shapes, attrs):
    return [_flatten_shape(tuple(in_shapes[0]), attrs)]


def _flatten_reference(inputs, attrs):
    x = np.asarray(inputs[0], dtype=np.float32)
    a = attrs["axis"] + x.ndim if attrs["axis"] < 0 else attrs["axis"]
    rows = cols = 1
    for i, d in enumerate(x.shape):
        if i < a:
            rows *= d
        else:
            cols *= d
    return [x.reshape(rows, cols).copy()]


@register("Flatten", infer=_flatten_infer, reference=_flatten_reference, view=True,
          attrs=("axis",))
def flatten(inputs, attrs, outs=None):
    x = inputs[0]
    return [x.reshape(_flatten_shape(x.shape, attrs))]


# ---- Reshape ------------------------------------------------------------------------

def _reshape_shape(shape, attrs):
    """Resolve 0 (copy the input dim, unless allowzero) and one -1 into a concrete shape."""
    target = list(attrs["shape"])
    allowzero = attrs["allowzero"]
    where = f"Reshape: input shape {tuple(shape)} to {tuple(target)}"
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            if i >= len(shape):
                raise ValueError(f"{where}: 0 at position {i} copies a dim the input lacks")
            target[i] = shape[i]
        elif d < -1:
            raise ValueError(f"{where}: invalid dim {d}")
    total = math.prod(shape)
    if target.count(-1) > 1:
        raise ValueError(f"{where}: more than one -1")
    if -1 in target:
        known = math.prod(d for d in target if d != -1)
        if known == 0 or total % known:
            raise ValueError(f"{where}: cannot infer the -1 dim ({total} elements)")
        target[target.index(-1)] = total // known
    elif math.prod(target) != total:
        raise ValueError(f"{where}: element counts differ ({total} vs {math.prod(target)})")
    return tuple(target)


def _reshape_infer(in_shapes, attrs):
    return [_reshape_shape(tuple(in_shapes[0]), attrs)]


def _reshape_reference(inputs, attrs):
    x = np.asarray(inputs[0], dtype=np.float32)
    return [x.reshape(_reshape_shape(x.shape, attrs)).copy()]


@register("Reshape", infer=_reshape_infer, reference=_reshape_reference, view=True,
          attrs=("shape", "allowzero"))
def reshape(inputs, attrs, outs=None):
    x = inputs[0]
    shape = attrs["shape"]
    if attrs["allowzero"] or 0 not in shape:
        return [x.reshape(shape)]   # NumPy resolves -1 itself: skip the Python resolution
    return [x.reshape(_reshape_shape(x.shape, attrs))]


# ---- Squeeze / Unsqueeze ------------------------------------------------------------

def _squeeze_axes(shape, attrs):
    axes = attrs["axes"]
    if axes is None:
        return tuple(i for i, d in enumerate(shape) if d == 1)
    norm = tuple(sorted({normalize_axis(a, len(shape), "Squeeze", shape) for a in axes}))
    if len(norm) != len(axes):
        raise ValueError(f"Squeeze: repeated axes {list(axes)} for input shape {tuple(shape)}")
    for a in norm:
        if shape[a] != 1:
            raise ValueError(f"Squeeze: axis {a} of input shape {tuple(shape)} is not 1")
    return norm


def _squeeze_infer(in_shapes, attrs):
    shape = tuple(in_shapes[0])
    axes = _squeeze_axes(shape, attrs)
    return [tuple(d for i, d in enumerate(shape) if i not in axes)]


def _squeeze_reference(inputs, attrs):
    x = np.asarray(inputs[0], dtype=np.float32)
    axes = _squeeze_axes(x.shape, attrs)
    return [x.reshape([d for i, d in enumerate(x.shape) if i not in axes]).copy()]


@register("Squeeze", infer=_squeeze_infer, reference=_squeeze_reference, view=True,
          attrs=("axes",))
def squeeze(inputs, attrs, outs=None):
    x = inputs[0]
    axes = attrs["axes"]
    return [np.squeeze(x, axis=None if axes is None else tuple(axes))]


def _unsqueeze_axes(shape, attrs):
    axes = attrs["axes"]
    rank = len(shape) + len(axes)   # negative axes count from the OUTPUT rank
    norm = tuple(sorted({normalize_axis(a, rank, "Unsqueeze", shape) for a in axes}))
    if len(norm) != len(axes):
        raise ValueError(f"Unsqueeze: repeated axes {list(axes)} for input shape {tuple(shape)}")
    return norm


def _unsqueeze_infer(in_shapes, attrs):
    shape = tuple(in_shapes[0])
    axes = _unsqueeze_axes(shape, attrs)
    dims = iter(shape)
    return [tuple(1 if i in axes else next(dims) for i in range(len(shape) + len(axes)))]


def _unsqueeze_reference(inputs, attrs):
    x = np.asarray(inputs[0], dtype=np.float32)
    out_shape = _unsqueeze_infer([x.shape], attrs)[0]
    return [x.reshape(out_shape).copy()]


@register("Unsqueeze", infer=_unsqueeze_infer, reference=_unsqueeze_reference, view=True,
          attrs=("axes",))
def unsqueeze(inputs, attrs, outs=None):
    return [np.expand_dims(inputs[0], tuple(attrs["axes"]))]


# ---- Transpose ----------------------------------------------------------------------

def _perm(shape, attrs):
    perm = attrs["perm"]
    if perm is None:
        return tuple(range(len(shape) - 1, -1, -1))
    if sorted(perm) != list(range(len(shape))):
        raise ValueError(f"Transpose: perm {list(perm)} is not a permutation of the axes of "
                         f"input shape {tuple(shape)}")
    return tuple(perm)


def _transpose_infer(in_shapes, attrs):
    shape = tuple(in_shapes[0])
    return [tuple(shape[p] for p in _perm(shape, attrs))]


def _transpose_reference(inputs, attrs):
    x = np.asarray(inputs[0], dtype=np.float32)
    perm = _perm(x.shape, attrs)
    out = np.empty([x.shape[p] for p in perm], np.float32)
    for idx in np.ndindex(*x.shape):   # out[idx permuted] = x[idx], element by element
        out[tuple(idx[p] for p in perm)] = x[idx]
    return [out]


@register("Transpose", infer=_transpose_infer, reference=_transpose_reference,
          attrs=("perm",))
def transpose(inputs, attrs, outs):
    x, out = inputs[0], outs[0]
    np.copyto(out, x.transpose(attrs["perm"]))   # perm None reverses, as in ONNX
    return [out]


# ---- Concat -------------------------------------------------------------------------

def _concat_infer(in_shapes, attrs):
    shapes = [tuple(s) for s in in_shapes]
    first = shapes[0]
    a = normalize_axis(attrs["axis"], len(first), "Concat", first)
    for s in shapes[1:]:
        if len(s) != len(first) or any(d != e for i, (d, e) in enumerate(zip(s, first)) if i != a):
            raise ValueError(f"Concat: input shapes {shapes} differ outside axis {attrs['axis']}")
    return [first[:a] + (sum(s[a] for s in shapes),) + first[a + 1:]]


def _concat_reference(inputs, attrs):
    return [np.concatenate([np.asarray(x, np.float32) for x in inputs], axis=attrs["axis"])]


@register("Concat", infer=_concat_infer, reference=_concat_reference, attrs=("axis",))
def concat(inputs, attrs, outs):
    out = outs[0]
    a = attrs["axis"] % out.ndim
    lead = (slice(None),) * a
    start = 0
    for x in inputs:
        stop = start + x.shape[a]
        out[lead + (slice(start, stop),)] = x
        start = stop
    return [out]


# ---- Pad ----------------------------------------------------------------------------

def _pad_check(shape, attrs):
    pads = attrs["pads"]
    r = len(shape)
    mode = attrs.get("mode", "constant")   # the converter may leave it out: constant is implied
    if mode != "constant":
        raise ValueError(f"Pad: only mode 'constant' is supported, got {mode!r}")
    if len(pads) != 2 * r:
        raise ValueError(f"Pad: {len(pads)} pads for input shape {tuple(shape)} (need {2 * r})")
    out = tuple(d + pads[i] + pads[i + r] for i, d in enumerate(shape))
    if min(out, default=0) < 0:
        raise ValueError(f"Pad: pads {list(pads)} crop input shape {tuple(shape)} below zero")
    return out


def _pad_infer(in_shapes, attrs):
    return [_pad_check(tuple(in_shapes[0]), attrs)]


def _pad_reference(inputs, attrs):
    x = np.asarray(inputs[0], dtype=np.float32)
    pads, r = attrs["pads"], x.ndim
    # Pad by the positive amounts, then crop the negative ones from the padded array.
    grown = np.pad(x, [(max(pads[i], 0), max(pads[i + r], 0)) for i in range(r)],
                   mode="constant", constant_values=attrs["value"])
    crop = tuple(slice(max(-pads[i], 0), grown.shape[i] - max(-pads[i + r], 0)) for i in range(r))
    return [grown[crop].copy()]


@register("Pad", infer=_pad_infer, reference=_pad_reference, attrs=("pads", "value", "mode"))
def pad(inputs, attrs, outs):
    x, out = inputs[0], outs[0]
    pads, r = attrs["pads"], x.ndim
    src, dst = [], []
    for i, d in enumerate(x.shape):
        b, e = pads[i], pads[i + r]
        s0, s1 = max(-b, 0), d - max(-e, 0)   # the part of x that survives cropping
        if s1 <= s0:                           # nothing survives: all padding
            out.fill(attrs["value"])
            return [out]
        src.append(slice(s0, s1))
        dst.append(slice(max(b, 0), max(b, 0) + s1 - s0))
    # Write the padding only where x does not land (one border slab per side per axis;
    # slabs overlap at corners, harmlessly), so no element is written twice in bulk.
    for i, sl in enumerate(dst):
        lead = (slice(None),) * i
        if sl.start > 0:
            out[lead + (slice(0, sl.start),)] = attrs["value"]
        if sl.stop < out.shape[i]:
            out[lead + (slice(sl.stop, None),)] = attrs["value"]
    out[tuple(dst)] = x[tuple(src)]
    return [out]
