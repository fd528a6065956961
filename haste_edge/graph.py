"""The engine's own model graph: ops over named tensors, weights as NumPy arrays.

It is what the converter produces from ONNX and what the deployable file stores.
Every parameter an op needs at plan time (Reshape's shape, Pad's pads, Clip's
bounds, ...) lives in `attrs`; node inputs are tensors only (activations or weights).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import ModelFileError


@dataclass
class Node:
    op: str                 # ONNX op type, e.g. "Conv"
    name: str               # unique node name, used in errors and per-layer reports
    inputs: list[str]       # tensor names; "" marks an absent optional input
    outputs: list[str]
    attrs: dict = field(default_factory=dict)  # JSON-serialisable values only


@dataclass
class Graph:
    nodes: list[Node]                       # topologically ordered
    weights: dict[str, np.ndarray]          # constant tensors by name (float32 or int64)
    inputs: dict[str, tuple]                # input name -> shape; None marks the batch dim
    outputs: list[str]
    meta: dict = field(default_factory=dict)  # preprocessing, labels, source, opset

    def consumers(self, tensor: str) -> list[Node]:
        return [n for n in self.nodes if tensor in n.inputs]

    def producer(self, tensor: str) -> Node | None:
        for n in self.nodes:
            if tensor in n.outputs:
                return n
        return None

    def check(self) -> None:
        """Every tensor a node reads is defined before it: a graph input, a weight or an earlier output."""
        defined = set(self.inputs) | set(self.weights)
        for n in self.nodes:
            for x in n.inputs:
                if x and x not in defined:
                    raise ModelFileError(
                        f"{n.op} node '{n.name}': input '{x}' is not produced by any earlier node "
                        f"(is it computed from the batch size or from run-time data?)")
            defined.update(n.outputs)
        for o in self.outputs:
            if o not in defined:
                raise ModelFileError(f"graph output '{o}' is never produced")
