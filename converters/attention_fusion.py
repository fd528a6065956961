"""Conversion passes for transformers: an exported attention becomes one ScaledDotProductAttention
node (haste_edge/ops/attention.py), an exported erf GELU one Gelu node.

Attention, as torch exports softmax(q @ k.transpose(-2, -1) * scale) @ v with q, k, v of shape
(B, heads, N, d):

    Kt = Transpose(K, perm [0, 1, 3, 2])    (absent when K^T is computed some other way)
    S  = MatMul(Q, Kt)
    S' = Mul(S, c) | Mul(c, S) | Div(S, c)  (c a constant scalar; absent = scale 1)
    P  = Softmax(S', last axis)
    Y  = MatMul(P, V)

becomes Y = ScaledDotProductAttention(Q, K, V, scale). Every intermediate must have no other
reader and not be a graph output; Q, K and V must be 4-D with equal batch and head dims (no
broadcasting). Where K^T does not come from such a Transpose, a Transpose making K is inserted.

GELU, as torch exports nn.GELU(): Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)), 0.5) -> Gelu(x).
"""
from __future__ import annotations

import math

import numpy as np

from haste_edge.graph import Graph, Node
from haste_edge.shapes import infer_shapes


def _only_reader(graph: Graph, tensor: str) -> Node | None:
    users = graph.consumers(tensor)
    if len(users) == 1 and tensor not in graph.outputs:
        return users[0]
    return None


def _scalar(graph: Graph, name: str) -> float | None:
    w = graph.weights.get(name)
    if w is None or w.size != 1 or w.dtype != np.float32:
        return None
    return float(w.reshape(()))


def _batch_one_shapes(graph: Graph) -> dict | None:
    try:
        return infer_shapes(graph, {k: tuple(1 if d is None else d for d in s) for k, s in graph.inputs.items()})
    except Exception:        # a shape error is reported, with its node, by the graph's validation
        return None


def _scale_node(graph: Graph, node: Node, scores: str) -> float | None:
    """The scale a Mul/Div node applies to `scores`, or None when it is not a constant scaling."""
    other = [x for x in node.inputs if x != scores]
    if len(other) != 1 or len(node.inputs) != 2:
        return None
    c = _scalar(graph, other[0])
    if c is None:
        return None
    if node.op == "Mul":
        return c
    if node.op == "Div" and node.inputs[0] == scores and c != 0.0:
        return 1.0 / c
    return None


def _match_attention(graph: Graph, softmax: Node, shapes: dict):
    """(Q, K source, K^T Transpose node or None, V, scale, nodes replaced) or None."""
    rank = len(shapes.get(softmax.inputs[0], ()))
    axis = softmax.attrs["axis"] % rank if rank else -1
    if rank != 4 or axis != 3:
        return None
    second = _only_reader(graph, softmax.outputs[0])
    if second is None or second.op != "MatMul" or second.inputs[0] != softmax.outputs[0] \
            or second.inputs[1] == softmax.outputs[0]:
        return None
    replaced = [softmax, second]
    scores, scale = softmax.inputs[0], 1.0
    node = graph.producer(scores)
    if node is not None and node.op in ("Mul", "Div") and _only_reader(graph, scores) is softmax:
        inner = [x for x in node.inputs if graph.producer(x) is not None and graph.producer(x).op == "MatMul"]
        scale = _scale_node(graph, node, inner[0]) if len(inner) == 1 else None
        if scale is None:
            return None
        replaced.append(node)
        scores = inner[0]
        node = graph.producer(scores)
    if node is None or node.op != "MatMul" or _only_reader(graph, scores) not in replaced:
        return None
    replaced.append(node)
    q, kt, v = node.inputs[0], node.inputs[1], second.inputs[1]
    if not all(len(shapes.get(x, ())) == 4 for x in (q, kt, v)) \
            or not shapes[q][:2] == shapes[kt][:2] == shapes[v][:2]:
        return None
    transpose = graph.producer(kt)
    if transpose is not None and transpose.op == "Transpose" and transpose.attrs.get("perm") == [0, 1, 3, 2]:
        return q, transpose.inputs[0], transpose, v, scale, replaced
    return q, kt, None, v, scale, replaced


def fuse_attention(graph: Graph) -> int:
    """Replace each matched attention by one node; returns how many were fused."""
    shapes = _batch_one_shapes(graph)
    if shapes is None:
        return 0
    fused = 0
    for softmax in [n for n in graph.nodes if n.op == "Softmax"]:
        match = _match_attention(graph, softmax, shapes)
        if match is None:
            continue
        q, k, transpose, v, scale, replaced = match
        second = replaced[1]
        extra = []
        if transpose is None:                       # K^T from elsewhere: make K from it
            extra = [Node("Transpose", second.name + ".k", [k], [k + ".k"], {"perm": [0, 1, 3, 2]})]
            k = extra[0].outputs[0]
        elif _only_reader(graph, transpose.outputs[0]) is not None:
            replaced.append(transpose)             # K^T read by the scores only: no longer needed
        attention = Node("ScaledDotProductAttention", second.name, [q, k, v], list(second.outputs),
                         {"scale": float(scale)})
        drop = {id(n) for n in replaced}
        out = []
        for n in graph.nodes:
            if n is second:
                out += extra + [attention]
            elif id(n) not in drop:
                out.append(n)
        graph.nodes = out
        fused += 1
    return fused


def fuse_gelu(graph: Graph) -> int:
    """Replace each erf GELU (torch's export of nn.GELU()) by one Gelu node; returns the count."""
    fused = 0
    for div in [n for n in graph.nodes if n.op == "Div"]:
        if len(div.inputs) != 2 or not _close(_scalar(graph, div.inputs[1]), math.sqrt(2.0)):
            continue
        x = div.inputs[0]
        erf = _only_reader(graph, div.outputs[0])
        add = erf and erf.op == "Erf" and _only_reader(graph, erf.outputs[0])
        if not add or add.op != "Add" or not _close(_scalar(graph, _other(add, erf.outputs[0])), 1.0):
            continue
        mul = _only_reader(graph, add.outputs[0])
        if not mul or mul.op != "Mul" or _other(mul, add.outputs[0]) != x:
            continue
        half = _only_reader(graph, mul.outputs[0])
        if not half or half.op != "Mul" or not _close(_scalar(graph, _other(half, mul.outputs[0])), 0.5):
            continue
        gelu = Node("Gelu", half.name, [x], list(half.outputs), {"approximate": "none"})
        drop = {id(n) for n in (div, erf, add, mul)}
        graph.nodes = [gelu if n is half else n for n in graph.nodes if id(n) not in drop]
        fused += 1
    return fused


def _other(node: Node, tensor: str) -> str | None:
    """The input of a two-input node that is not `tensor`."""
    rest = [x for x in node.inputs if x != tensor]
    return rest[0] if len(node.inputs) == 2 and len(rest) == 1 else None


def _close(value: float | None, target: float) -> bool:
    return value is not None and abs(value - target) <= 1e-6 * abs(target)
