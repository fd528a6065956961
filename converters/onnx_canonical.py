"""ONNX attributes and parameter inputs -> the engine's canonical attrs, one rule per op.

ONNX moved several parameters from attributes to inputs across opsets (Clip, Pad, Squeeze,
Unsqueeze, ReduceMean) and changed defaults (Softmax). Each rule here reads whichever form the
model's opset uses and returns (attrs, tensor_inputs): the parameters every kernel needs as plain
values, with every default filled in, and the inputs that stay tensors at run time.
"""
from __future__ import annotations

import numpy as np

from haste_edge.errors import UnsupportedOpError


class NodeView:
    """What a rule sees of one node: ONNX attributes, input names, constant values, shapes."""

    def __init__(self, node, attrs: dict, consts: dict, shapes: dict, opset: int):
        self.node, self.attrs, self.opset = node, attrs, opset
        self.inputs = list(node.input)
        self._consts, self._shapes = consts, shapes

    def has(self, i: int) -> bool:
        return i < len(self.inputs) and self.inputs[i] != ""

    def const(self, i: int, what: str, dtypes: tuple[str, ...], vector: bool = True):
        """Value of input i, which must be known before run time (a weight or a folded shape) and have
        one of `dtypes` (the types the ONNX spec allows there; onnxruntime refuses others). Integer
        parameters must be 1-D unless vector is False (Gather's indices may have any rank)."""
        if not self.has(i):
            return None
        name = self.inputs[i]
        if name not in self._consts:
            raise UnsupportedOpError(
                f"{self.node.op_type} node '{self.node.name}': its {what} (input '{name}') is computed "
                f"at run time; only constant {what} is supported")
        v = np.asarray(self._consts[name])
        if v.dtype.name not in dtypes:
            self.fail(f"its {what} (input '{name}') has dtype {v.dtype}, expected {' or '.join(dtypes)}")
        if vector and v.dtype.kind == "i" and v.ndim != 1:  # integer parameters (axes, pads, shape) are vectors
            self.fail(f"its {what} (input '{name}') has shape {list(v.shape)}, expected a 1-D tensor")
        return v

    def shape(self, i: int) -> tuple:
        return self._shapes[self.inputs[i]]

    def fail(self, why: str):
        raise UnsupportedOpError(f"{self.node.op_type} node '{self.node.name}' (opset {self.opset}): {why}")


INT64, FLOAT = ("int64",), ("float32",)


def _given(v, default) -> list[int]:
    """The attribute's ints, or `default` when it is absent (an empty list is kept: checks refuse it)."""
    return default if v is None else _ints(v)


def _ints(v):
    return None if v is None else [int(x) for x in np.asarray(v).reshape(-1)]


def _flag(v) -> int:
    """onnxruntime reads int flags (transA, ceil_mode, ...) as booleans: any nonzero value is 1."""
    return 1 if v else 0


def _spatial(nv: NodeView, kernel: list[int], strides: list[int], dilations: list[int]) -> list[int]:
    """Resolve auto_pad into explicit [top, left, bottom, right] pads."""
    auto = nv.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode(errors="replace")  # a bogus value is refused below, named
    if auto in ("NOTSET", ""):
        pads = _given(nv.attrs.get("pads"), [0] * (2 * len(kernel)))
        return pads
    if auto == "VALID":
        return [0] * (2 * len(kernel))
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        nv.fail(f"unknown auto_pad {auto!r}")
    size = nv.shape(0)[2:]
    begin, end = [], []
    for n, k, s, d in zip(size, kernel, strides, dilations):
        out = -(-n // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - n)
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return begin + end


def _required_ints(nv: NodeView, name: str) -> list[int]:
    if nv.attrs.get(name) is None:
        nv.fail(f"attribute {name} is required")
    return _ints(nv.attrs[name])


def _window(nv: NodeView, kernel: list[int]) -> dict:
    if len(kernel) != 2:
        nv.fail(f"only 2-D windows are supported, got kernel_shape {kernel}")
    strides = _given(nv.attrs.get("strides"), [1, 1])
    dilations = _given(nv.attrs.get("dilations"), [1, 1])
    # checked here because resolving auto_pad divides by the strides
    for name, v in (("kernel_shape", kernel), ("strides", strides), ("dilations", dilations)):
        if len(v) != 2 or min(v) < 1:
            nv.fail(f"{name} must be 2 positive integers, got {v}")
    return dict(kernel_shape=kernel, strides=strides, dilations=dilations,
                pads=_spatial(nv, kernel, strides, dilations))


def conv(nv: NodeView):
    if len(nv.shape(1)) != 4:
        nv.fail(f"only 2-D convolutions are supported, weight shape is {list(nv.shape(1))}")
    kernel = _given(nv.attrs.get("kernel_shape"), list(nv.shape(1)[2:]))
    attrs = _window(nv, kernel)
    attrs.update(group=int(nv.attrs.get("group", 1)), activation="", clip_min=None, clip_max=None)
    return attrs, nv.inputs[:3]


def max_pool(nv: NodeView):
    if len(nv.node.output) > 1 and nv.node.output[1]:
        nv.fail("the Indices output is not supported")
    attrs = _window(nv, _required_ints(nv, "kernel_shape"))
    attrs["ceil_mode"] = _flag(nv.attrs.get("ceil_mode", 0))
    return attrs, nv.inputs[:1]


def average_pool(nv: NodeView):
    attrs = _window(nv, _required_ints(nv, "kernel_shape"))
    attrs["ceil_mode"] = _flag(nv.attrs.get("ceil_mode", 0))
    attrs["count_include_pad"] = _flag(nv.attrs.get("count_include_pad", 0))
    return attrs, nv.inputs[:1]


def gemm(nv: NodeView):
    return dict(alpha=float(nv.attrs.get("alpha", 1.0)), beta=float(nv.attrs.get("beta", 1.0)),
                transA=_flag(nv.attrs.get("transA", 0)), transB=_flag(nv.attrs.get("transB", 0))), nv.inputs[:3]


def batch_norm(nv: NodeView):
    if int(nv.attrs.get("training_mode", 0)) or (len(nv.node.output) > 1 and any(nv.node.output[1:])):
        nv.fail("training mode (running-statistics outputs) is not supported")
    return dict(epsilon=float(nv.attrs.get("epsilon", 1e-5))), nv.inputs[:5]


def clip(nv: NodeView):
    if nv.opset < 11:
        lo, hi = nv.attrs.get("min"), nv.attrs.get("max")
    else:
        lo, hi = nv.const(1, "min", FLOAT), nv.const(2, "max", FLOAT)
    for what, v in (("min", lo), ("max", hi)):
        if v is not None and np.size(v) != 1:
            nv.fail(f"{what} must be a scalar, got shape {list(np.shape(v))}")
    lo = None if lo is None else float(np.asarray(lo).reshape(()))
    hi = None if hi is None else float(np.asarray(hi).reshape(()))
    return dict(min=lo, max=hi), nv.inputs[:1]


def softmax(nv: NodeView):
    legacy = nv.opset < 13
    return dict(axis=int(nv.attrs.get("axis", 1 if legacy else -1)), coerce_2d=int(legacy)), nv.inputs[:1]


def reduce_mean(nv: NodeView):
    axes = _ints(nv.attrs.get("axes")) if nv.opset < 18 else _ints(nv.const(1, "axes", INT64))
    return dict(axes=axes, keepdims=int(nv.attrs.get("keepdims", 1)),
                noop_with_empty_axes=int(nv.attrs.get("noop_with_empty_axes", 0))), nv.inputs[:1]


def squeeze_like(nv: NodeView):
    axes = _ints(nv.attrs.get("axes")) if nv.opset < 13 else _ints(nv.const(1, "axes", INT64))
    return dict(axes=axes), nv.inputs[:1]


def reshape(nv: NodeView):
    if nv.opset < 5:
        shape = _ints(nv.attrs["shape"])
    else:
        shape = _ints(nv.const(1, "shape", INT64))
    return dict(shape=shape, allowzero=int(nv.attrs.get("allowzero", 0))), nv.inputs[:1]


def pad(nv: NodeView):
    mode = nv.attrs.get("mode", "constant")
    mode = mode.decode(errors="replace") if isinstance(mode, bytes) else mode
    if mode != "constant":
        nv.fail(f"only mode 'constant' is supported, got {mode!r}")
    if nv.opset < 11:
        pads, value = _ints(nv.attrs.get("pads") or nv.attrs.get("paddings")), nv.attrs.get("value", 0.0)
    else:
        pads = _ints(nv.const(1, "pads", INT64))
        value = nv.const(2, "constant_value", FLOAT)
        axes = _ints(nv.const(3, "axes", ("int32", "int64")))
        if axes is not None:  # opset 18: pads given for `axes` only
            rank = len(nv.shape(0))
            full = [0] * (2 * rank)
            for j, a in enumerate(axes):
                a %= rank
                full[a], full[a + rank] = pads[j], pads[j + len(axes)]
            pads = full
    value = 0.0 if value is None else float(np.asarray(value).reshape(-1)[0]) if np.size(value) else 0.0
    return dict(pads=pads, value=value), nv.inputs[:1]


def layer_norm(nv: NodeView):
    stash = int(nv.attrs.get("stash_type", 1))
    if stash != 1:
        nv.fail(f"stash_type {stash} is not supported (only 1: statistics in float32 or wider)")
    return dict(axis=int(nv.attrs.get("axis", -1)), epsilon=float(nv.attrs.get("epsilon", 1e-5))), nv.inputs[:3]


def gelu(nv: NodeView):
    approximate = nv.attrs.get("approximate", "none")
    approximate = approximate.decode(errors="replace") if isinstance(approximate, bytes) else approximate
    if approximate not in ("none", "tanh"):
        nv.fail(f"unknown approximate {approximate!r} (expected 'none' or 'tanh')")
    return dict(approximate=approximate), nv.inputs[:1]


def split(nv: NodeView):
    """Resolve the part sizes: input `split` (opset >= 13), attribute `split` (older), num_outputs
    (opset >= 18: equal parts, the last one smaller when the dim does not divide), else equal parts
    for the outputs."""
    axis = int(nv.attrs.get("axis", 0))
    shape = nv.shape(0)
    if not -len(shape) <= axis < len(shape):
        nv.fail(f"axis {axis} out of range for input shape {tuple(shape)}")
    dim = shape[axis]
    outputs = len(nv.node.output)
    parts = _ints(nv.const(1, "split", INT64)) if nv.opset >= 13 else _ints(nv.attrs.get("split"))
    if parts is None:
        count = int(nv.attrs.get("num_outputs", outputs))
        if count != outputs or count < 1:
            nv.fail(f"num_outputs {count} but {outputs} outputs")
        if nv.opset >= 18 and "num_outputs" in nv.attrs:
            size = -(-dim // count)
            parts = [min(size, max(0, dim - i * size)) for i in range(count)]
        elif dim % count:
            nv.fail(f"dim {dim} of axis {axis} does not split into {count} equal parts")
        else:
            parts = [dim // count] * count
    if len(parts) != outputs or sum(parts) != dim or min(parts) < 0:
        nv.fail(f"split {parts} does not cut dim {dim} of axis {axis} into {outputs} parts")
    return dict(axis=axis, split=parts), nv.inputs[:1]


def gather(nv: NodeView):
    indices = nv.const(1, "indices", ("int32", "int64"), vector=False)
    return dict(axis=int(nv.attrs.get("axis", 0)), indices=indices.astype(np.int64).tolist()), nv.inputs[:1]


def check_inference_dropout(nv: NodeView, used: set):
    """Dropout runs as identity: only when not training and its mask output is unused."""
    if len(nv.node.output) > 1 and nv.node.output[1] in used:
        nv.fail("the mask output is not supported (inference only)")
    ratio = nv.const(1, "ratio", ("float16", "float32", "float64")) if nv.opset >= 12 else None
    if ratio is not None and ratio.ndim != 0:
        nv.fail(f"ratio must be a scalar, got shape {list(ratio.shape)}")
    training = nv.attrs.get("is_test", 1) == 0 if nv.opset < 7 else False
    if nv.has(2):
        training = nv.inputs[2] not in nv._consts or bool(np.asarray(nv._consts[nv.inputs[2]]))
    if training:
        nv.fail("training mode is not supported (inference only)")


def _plain(*names_defaults):
    def rule(nv: NodeView):
        out = {}
        for name, default in names_defaults:
            v = nv.attrs.get(name, default)
            out[name] = _ints(v) if isinstance(v, (list, tuple, np.ndarray)) else v
        return out, nv.inputs
    return rule


RULES = {
    "Conv": conv,
    "MaxPool": max_pool,
    "AveragePool": average_pool,
    "GlobalAveragePool": _plain(),
    "Gemm": gemm,
    "MatMul": _plain(),
    "BatchNormalization": batch_norm,
    "Relu": _plain(),
    "Clip": clip,
    "LeakyRelu": _plain(("alpha", 0.01)),
    "PRelu": _plain(),
    "Sigmoid": _plain(),
    "HardSigmoid": _plain(("alpha", 0.2), ("beta", 0.5)),
    "HardSwish": _plain(),
    "Tanh": _plain(),
    "Add": _plain(), "Sub": _plain(), "Mul": _plain(), "Div": _plain(), "Sum": _plain(),
    "LRN": _plain(("size", None), ("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)),
    "ReduceMean": reduce_mean,
    "Softmax": softmax,
    "Flatten": _plain(("axis", 1)),
    "Reshape": reshape,
    "Transpose": _plain(("perm", None)),
    "Squeeze": squeeze_like,
    "Unsqueeze": squeeze_like,
    "Concat": _plain(("axis", None)),
    "Pad": pad,
    "Identity": _plain(),
    "LayerNormalization": layer_norm,
    "Erf": _plain(),
    "Gelu": gelu,
    "Split": split,
    "Gather": gather,
}


def canonical(nv: NodeView):
    """(attrs, tensor inputs) for node `nv` in the engine's canonical form."""
    attrs, inputs = RULES[nv.node.op_type](nv)
    return attrs, list(inputs)
