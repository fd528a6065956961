"""Whole-graph checks run when a model loads (from .haste or .onnx), before any plan or kernel:
every node's arity and attributes (ops/checks.py), one producer per tensor, and every shape
inferred at batch 1 with each tensor under the memory limit (limits.py)."""
from __future__ import annotations

import math

from . import limits, ops
from .errors import ModelFileError, UnsupportedOpError
from .graph import Graph
from .ops import checks


def check_graph(graph: Graph, where: str) -> dict[str, tuple]:
    """Raise a one-line error naming the node and field; return the shapes at batch 1."""
    for n in graph.nodes:
        if n.op not in ops.OPS:
            raise UnsupportedOpError(f"{where}: node '{n.name}': op {n.op!r} is not supported by this "
                                     f"haste-edge")
        try:
            checks.check(n.op, n.attrs, n.inputs, n.outputs, ops.OPS[n.op].attrs)
        except ValueError as e:
            raise ModelFileError(f"{where}: {n.op} node '{n.name}': {e}") from None
    defined = set(graph.inputs)
    for name in list(graph.weights) + [o for n in graph.nodes for o in n.outputs]:
        if name in defined:
            raise ModelFileError(f"{where}: tensor '{name}' is defined twice")
        defined.add(name)

    shapes = {}
    for name, shape in graph.inputs.items():
        shapes[name] = tuple(1 if d is None else d for d in shape)
        limits.check(4 * math.prod(shapes[name]), f"{where}: input '{name}' {shapes[name]}", ModelFileError)
    shapes.update({k: v.shape for k, v in graph.weights.items()})
    for n in graph.nodes:
        in_shapes = [shapes[x] if x else None for x in n.inputs]
        try:
            outs = ops.OPS[n.op].infer(in_shapes, n.attrs)
        except ValueError as e:
            raise ModelFileError(f"{where}: {n.op} node '{n.name}': {e} (input shapes "
                                 f"{[s for s in in_shapes if s is not None]})") from None
        for name, s in zip(n.outputs, outs):
            s = tuple(int(d) for d in s)
            if any(d < 0 for d in s):
                raise ModelFileError(f"{where}: {n.op} node '{n.name}': negative output shape {s}")
            limits.check(4 * math.prod(s), f"{where}: {n.op} node '{n.name}': output {s} at batch 1",
                         ModelFileError)
            shapes[name] = s
    return shapes
