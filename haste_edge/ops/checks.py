"""Attribute and arity rules per op, checked when a model loads so no bad value reaches a kernel.

The rules follow onnxruntime's: what it refuses at session creation is refused here (pool pads
must be smaller than the kernel, LRN size odd and alpha, beta > 0, strides and dilations >= 1...).
One addition: float attributes must be finite, since a NaN or infinite one only yields NaN outputs.
Attributes are in the engine's canonical form (converters/onnx_canonical.py), as stored in .haste.
check(op, attrs, n_inputs, n_outputs) raises ValueError naming the attribute.
"""
from __future__ import annotations

import math

INT_MAX = 2**31 - 1   # kernels take int64; no real model has a parameter near this
MANY = 1 << 16


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(attrs, name, lo=-INT_MAX, hi=INT_MAX):
    v = attrs.get(name)
    if not _is_int(v) or not lo <= v <= hi:
        raise ValueError(f"attribute {name}: expected an integer in [{lo}, {hi}], got {v!r}")


def _ints(attrs, name, n=None, lo=-INT_MAX, optional=False):
    v = attrs.get(name)
    if v is None and optional:
        return
    if not isinstance(v, (list, tuple)) or (n is not None and len(v) != n) \
            or not all(_is_int(x) and lo <= x <= INT_MAX for x in v):
        count = f"{n} " if n is not None else ""
        raise ValueError(f"attribute {name}: expected a list of {count}integers >= {lo}, got {v!r}")


def _float(attrs, name, optional=False, positive=False):
    v = attrs.get(name)
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
        kind = "a finite number > 0" if positive else "a finite number"
        raise ValueError(f"attribute {name}: expected {kind}, got {v!r}")


def _window(attrs, pool):
    _ints(attrs, "kernel_shape", 2, lo=1)
    _ints(attrs, "strides", 2, lo=1)
    _ints(attrs, "dilations", 2, lo=1)
    _ints(attrs, "pads", 4, lo=0)
    if pool:
        k, p = attrs["kernel_shape"], attrs["pads"]
        if any(p[i] >= k[i % 2] for i in range(4)):
            raise ValueError(f"attribute pads: {list(p)} must be smaller than kernel_shape {list(k)}")


def _conv(a):
    _window(a, pool=False)
    _int(a, "group", lo=1)
    if a.get("activation") not in ("", "Relu", "Clip"):
        raise ValueError(f"attribute activation: expected '', 'Relu' or 'Clip', got {a.get('activation')!r}")
    _float(a, "clip_min", optional=True)
    _float(a, "clip_max", optional=True)


def _prom_conv(a):
    _conv(a)
    _float(a, "x_scale", positive=True)
    if a.get("weights") not in ("ternary", "int8"):
        raise ValueError(f"attribute weights: expected 'ternary' or 'int8', got {a.get('weights')!r}")


def _pool(a, avg):
    _window(a, pool=True)
    _int(a, "ceil_mode", 0, 1)
    if avg:
        _int(a, "count_include_pad", 0, 1)


def _lrn(a):
    _int(a, "size", lo=1)
    if a["size"] % 2 == 0:
        raise ValueError(f"attribute size: must be odd, got {a['size']}")
    _float(a, "alpha", positive=True)
    _float(a, "beta", positive=True)
    _float(a, "bias")


def _pad(a):
    _ints(a, "pads")
    _float(a, "value")
    if a.get("mode", "constant") != "constant":
        raise ValueError(f"attribute mode: only 'constant' is supported, got {a.get('mode')!r}")


def _none(a):
    pass


def _gelu(a):
    if a.get("approximate") not in ("none", "tanh"):
        raise ValueError(f"attribute approximate: expected 'none' or 'tanh', got {a.get('approximate')!r}")


def _gather(a):
    _int(a, "axis")
    v = a.get("indices")
    while isinstance(v, list) and v and isinstance(v[0], list):   # nested lists: check the leaves
        v = [x for row in v for x in row]
    if not (_is_int(v) or (isinstance(v, list) and all(_is_int(x) for x in v))):
        raise ValueError(f"attribute indices: expected an integer or (nested) lists of integers, got {v!r}")


# ops with more than one output: (min, max) outputs; every other op has exactly one
OUTPUTS = {"LayerNormalization": (1, 3), "Split": (1, MANY)}


# op -> (min inputs, max inputs, attribute rule); inputs past min may be "" (absent optional)
RULES = {
    "Conv": (2, 3, _conv),
    "MaxPool": (1, 1, lambda a: _pool(a, avg=False)),
    "AveragePool": (1, 1, lambda a: _pool(a, avg=True)),
    "GlobalAveragePool": (1, 1, _none),
    "Gemm": (2, 3, lambda a: (_float(a, "alpha"), _float(a, "beta"), _int(a, "transA", 0, 1),
                              _int(a, "transB", 0, 1))),
    "MatMul": (2, 2, _none),
    "BatchNormalization": (5, 5, lambda a: _float(a, "epsilon")),
    "Relu": (1, 1, _none),
    "Clip": (1, 1, lambda a: (_float(a, "min", optional=True), _float(a, "max", optional=True))),
    "LeakyRelu": (1, 1, lambda a: _float(a, "alpha")),
    "PRelu": (2, 2, _none),
    "Sigmoid": (1, 1, _none),
    "HardSigmoid": (1, 1, lambda a: (_float(a, "alpha"), _float(a, "beta"))),
    "HardSwish": (1, 1, _none),
    "Tanh": (1, 1, _none),
    "Add": (2, 2, _none), "Sub": (2, 2, _none), "Mul": (2, 2, _none), "Div": (2, 2, _none),
    "Sum": (1, MANY, _none),
    "LRN": (1, 1, _lrn),
    "ReduceMean": (1, 1, lambda a: (_ints(a, "axes", optional=True), _int(a, "keepdims", 0, 1),
                                    _int(a, "noop_with_empty_axes", 0, 1))),
    "Softmax": (1, 1, lambda a: (_int(a, "axis"), _int(a, "coerce_2d", 0, 1))),
    "Flatten": (1, 1, lambda a: _int(a, "axis")),
    "Reshape": (1, 1, lambda a: (_ints(a, "shape", lo=-1), _int(a, "allowzero", 0, 1))),
    "Transpose": (1, 1, lambda a: _ints(a, "perm", lo=0, optional=True)),
    "Squeeze": (1, 1, lambda a: _ints(a, "axes", optional=True)),
    "Unsqueeze": (1, 1, lambda a: _ints(a, "axes")),
    "Concat": (1, MANY, lambda a: _int(a, "axis")),
    "Pad": (1, 1, _pad),
    "Identity": (1, 1, _none),
    "LayerNormalization": (2, 3, lambda a: (_int(a, "axis"), _float(a, "epsilon", positive=True))),
    "Erf": (1, 1, _none),
    "Gelu": (1, 1, _gelu),
    "Split": (1, 1, lambda a: (_int(a, "axis"), _ints(a, "split", lo=0))),
    "Gather": (1, 1, _gather),
    "ScaledDotProductAttention": (3, 3, lambda a: _float(a, "scale")),
    "PromConv": (3, 4, _prom_conv),
    "PromGemm": (3, 4, lambda a: _float(a, "x_scale", positive=True)),
}


def check(op: str, attrs: dict, inputs: list, outputs: list, known: tuple) -> None:
    """Raise ValueError if the node's inputs, outputs or attributes are not valid for `op`.
    `known` is the op's registered attribute names (registry.OpSpec.attrs)."""
    lo, hi, rule = RULES[op]
    if not lo <= len(inputs) <= hi:
        want = str(lo) if lo == hi else f"{lo} to {hi}"
        raise ValueError(f"expected {want} inputs, got {len(inputs)}")
    # only single optional inputs (Conv's B, Gemm's C) may be absent, never a variadic one
    missing = [i for i, x in enumerate(inputs) if not x and (i < lo or hi == MANY)]
    if missing:
        raise ValueError(f"required input {missing[0]} is absent")
    out_lo, out_hi = OUTPUTS.get(op, (1, 1))
    if not out_lo <= len(outputs) <= out_hi:
        want = str(out_lo) if out_lo == out_hi else f"{out_lo} to {out_hi}"
        raise ValueError(f"expected {want} outputs, got {len(outputs)}")
    if not all(outputs):
        raise ValueError(f"output {[bool(o) for o in outputs].index(False)} is absent (unnamed)")
    unknown = sorted(set(attrs) - set(known))
    if unknown:
        raise ValueError(f"unknown attribute {unknown[0]!r}")
    # canonical attrs are complete (defaults filled in, null for "not given"); Pad's mode may be left out
    missing = [k for k in known if k not in attrs and (op, k) != ("Pad", "mode")]
    if missing:
        raise ValueError(f"attribute {missing[0]} is missing")
    rule(attrs)
    if op == "Split" and len(attrs["split"]) != len(outputs):
        raise ValueError(f"attribute split: {len(attrs['split'])} parts for {len(outputs)} outputs")
