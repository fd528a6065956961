"""Rewrites on the engine's Graph that keep its outputs and make it cheaper to run.

- Identity / inference Dropout disappear (their consumers read the input directly).
- BatchNormalization right after a Conv folds into the conv's weights and bias.
- Relu / Clip right after a Conv becomes the conv's fused epilogue.
- A transformer's exported attention becomes one ScaledDotProductAttention node, its exported erf
  GELU one Gelu node (attention_fusion.py).
"""
from __future__ import annotations

import numpy as np

from haste_edge.graph import Graph, Node

from .attention_fusion import fuse_attention, fuse_gelu


def _single_consumer(graph: Graph, tensor: str) -> Node | None:
    users = graph.consumers(tensor)
    if len(users) == 1 and tensor not in graph.outputs:
        return users[0]
    return None


def _rename_input(graph: Graph, old: str, new: str):
    for n in graph.nodes:
        n.inputs = [new if x == old else x for x in n.inputs]


def remove_identities(graph: Graph) -> None:
    keep = []
    for n in graph.nodes:
        src, dst = n.inputs[0], n.outputs[0]
        if n.op == "Identity" and dst not in graph.outputs:
            _rename_input(graph, dst, src)
        elif n.op == "Identity" and graph.producer(src) is not None and src not in graph.outputs \
                and len(graph.consumers(src)) == 1:
            graph.producer(src).outputs[0] = dst  # let the producer write the graph output itself
        else:
            keep.append(n)
    graph.nodes = keep


def fold_batch_norms(graph: Graph) -> None:
    """Conv -> BN becomes one Conv: W' = W * g / sqrt(v + eps), b' = (b - m) * g / sqrt(v + eps) + beta."""
    drop = set()
    for conv in graph.nodes:
        if conv.op != "Conv" or conv.inputs[1] not in graph.weights:
            continue
        bn = _single_consumer(graph, conv.outputs[0])
        if bn is None or bn.op != "BatchNormalization" or not all(x in graph.weights for x in bn.inputs[1:5]):
            continue
        gamma, beta, mean, var = (graph.weights[x].astype(np.float64) for x in bn.inputs[1:5])
        scale = gamma / np.sqrt(var + bn.attrs["epsilon"])
        w = graph.weights[conv.inputs[1]].astype(np.float64)
        has_bias = len(conv.inputs) > 2 and conv.inputs[2]
        b = graph.weights[conv.inputs[2]].astype(np.float64) if has_bias else np.zeros(w.shape[0])
        w_name, b_name = conv.name + ".weight_bn", conv.name + ".bias_bn"
        graph.weights[w_name] = (w * scale[:, None, None, None]).astype(np.float32)
        graph.weights[b_name] = ((b - mean) * scale + beta).astype(np.float32)
        conv.inputs = [conv.inputs[0], w_name, b_name]
        conv.outputs = list(bn.outputs[:1])
        drop.add(id(bn))
    graph.nodes = [n for n in graph.nodes if id(n) not in drop]


def fuse_activations(graph: Graph) -> None:
    drop = set()
    for conv in graph.nodes:
        if conv.op != "Conv" or conv.attrs.get("activation"):
            continue
        act = _single_consumer(graph, conv.outputs[0])
        if act is None or act.op not in ("Relu", "Clip"):
            continue
        conv.attrs["activation"] = act.op
        if act.op == "Clip":
            conv.attrs["clip_min"], conv.attrs["clip_max"] = act.attrs["min"], act.attrs["max"]
        conv.outputs = list(act.outputs)
        drop.add(id(act))
    graph.nodes = [n for n in graph.nodes if id(n) not in drop]


def drop_unused_weights(graph: Graph) -> None:
    used = {x for n in graph.nodes for x in n.inputs}
    graph.weights = {k: v for k, v in graph.weights.items() if k in used}


def optimise(graph: Graph) -> Graph:
    remove_identities(graph)
    fold_batch_norms(graph)
    fuse_activations(graph)
    fuse_attention(graph)
    fuse_gelu(graph)
    drop_unused_weights(graph)
    graph.check()
    return graph
