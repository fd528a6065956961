"""Shape inference over a graph: each op's infer function (ops/registry.py) in node order. Used
by plans (runtime.py) and by compression methods that choose layers by shape (haste/method.py)."""
from __future__ import annotations

from . import ops
from .errors import InputError
from .graph import Graph


def infer_shapes(graph: Graph, input_shapes: dict) -> dict[str, tuple]:
    """Every tensor's shape (inputs, weights, node outputs) for the given input shapes; InputError
    naming the node whose op rejects its input shapes."""
    shapes = dict(input_shapes)
    shapes.update({k: v.shape for k, v in graph.weights.items()})
    for n in graph.nodes:
        spec = ops.OPS[n.op]
        try:
            outs = spec.infer([shapes[x] if x else None for x in n.inputs], n.attrs)
        except ValueError as e:
            raise InputError(f"{n.op} node '{n.name}': {e} (input shapes "
                             f"{[shapes.get(x) for x in n.inputs if x]})") from None
        for name, s in zip(n.outputs, outs):
            shapes[name] = tuple(int(d) for d in s)
    return shapes
