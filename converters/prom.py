"""PROM quantisation of a converted graph (`haste-edge convert model.onnx --prom --calib DIR`).

Every Conv becomes a PromConv and every Gemm (classifier form) a PromGemm (haste_edge/prom/ops.py):
1x1 group-1 conv weights ternary per output channel (mode "prom"; int8 in mode "int8"), all other
weights int8 per output channel, each layer's input int8 per tensor with scale max|x| / 127 over the
calibration inputs, observed in the float graph. Rules: haste_edge/prom/quantize.py.
"""
from __future__ import annotations

import numpy as np

from haste_edge.graph import Graph, Node
from haste_edge.prom.quantize import TERNARY_THRESHOLD, act_scale, int8_weights, ternary

MODES = ("prom", "int8")


def _quantisable(graph: Graph, n: Node) -> bool:
    if n.op == "Conv":
        return len(n.inputs) > 1 and n.inputs[1] in graph.weights and len(n.inputs) <= 3
    if n.op == "Gemm":
        a = n.attrs
        return (n.inputs[1] in graph.weights and not a["transA"] and a["alpha"] == 1
                and (len(n.inputs) < 3 or not n.inputs[2] or (a["beta"] == 1 and n.inputs[2] in graph.weights
                                                                and graph.weights[n.inputs[2]].ndim == 1)))
    return False


def input_ranges(graph: Graph, calib: np.ndarray, batch: int = 64) -> dict[str, float]:
    """max|x| of every quantisable node's input tensor over the calibration inputs (float graph)."""
    from haste_edge.runtime import Model
    watched = sorted({n.inputs[0] for n in graph.nodes if _quantisable(graph, n)})
    probe = Graph(graph.nodes, graph.weights, graph.inputs, list(graph.outputs) + watched, graph.meta)
    model = Model(probe)
    name = model.input_names[0]
    seen = dict.fromkeys(watched, 0.0)
    for i in range(0, len(calib), batch):
        outs = model.run({name: np.ascontiguousarray(calib[i:i + batch], np.float32)}, watched)
        for t in watched:
            seen[t] = max(seen[t], float(np.abs(outs[t]).max()))
    return seen


def quantize_graph(graph: Graph, calib: np.ndarray, mode: str = "prom",
                   threshold: float = TERNARY_THRESHOLD) -> Graph:
    """A new graph with PromConv / PromGemm nodes in place of the quantisable Conv / Gemm nodes."""
    if mode not in MODES:
        raise ValueError(f"quantisation mode must be one of {MODES}, got {mode!r}")
    if len(calib) == 0:
        raise ValueError("no calibration inputs")
    ranges = input_ranges(graph, calib)
    weights = dict(graph.weights)
    nodes, kinds = [], {"ternary": 0, "int8": 0}
    for n in graph.nodes:
        if not _quantisable(graph, n):
            nodes.append(n)
            continue
        w = graph.weights[n.inputs[1]]
        attrs = dict(n.attrs)
        if n.op == "Gemm":
            w = w if attrs["transB"] else w.T
            attrs = {}
        pointwise = n.op == "Conv" and w.shape[2:] == (1, 1) and attrs["group"] == 1
        kind = "ternary" if mode == "prom" and pointwise else "int8"
        codes, scale = ternary(w, threshold) if kind == "ternary" else int8_weights(w)
        kinds[kind] += 1
        weights[f"{n.name}:codes"] = np.ascontiguousarray(codes)
        weights[f"{n.name}:w_scale"] = scale
        attrs["x_scale"] = act_scale(ranges[n.inputs[0]])
        if n.op == "Conv":
            attrs["weights"] = kind
        bias = n.inputs[2] if len(n.inputs) > 2 else ""
        nodes.append(Node("PromConv" if n.op == "Conv" else "PromGemm", n.name,
                          [n.inputs[0], f"{n.name}:codes", f"{n.name}:w_scale", bias], list(n.outputs), attrs))
    used = {x for n in nodes for x in n.inputs}
    meta = dict(graph.meta)
    meta["quantization"] = {"mode": mode, "ternary_threshold": threshold if mode == "prom" else None,
                            "calibration_inputs": int(len(calib)), "ternary_layers": kinds["ternary"],
                            "int8_layers": kinds["int8"]}
    out = Graph(nodes, {k: v for k, v in weights.items() if k in used}, dict(graph.inputs), list(graph.outputs), meta)
    out.check()
    return out
