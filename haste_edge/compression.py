"""Compression methods behind one interface: the runtime knows none of them by name.

A method (HASTE in haste/method.py; PROM and HTTM plug in the same way) is configured by its user
and asked once per model which nodes it takes:

    method.name                         "haste", ...: what reports call it
    method.layers(graph) -> {node name: layer}

A layer is one node's compressed form. It is prepared when made (derived weights, tables), kept
on the model, and run by the plan step of its node in place of the node's dense kernel:

    layer.run(inputs, attrs, outs) -> (outputs, counters)
        inputs, attrs, outs as the op's kernel gets them (ops/registry.py; a Conv's fused residual
        included); counters: int64 (N, len(layer.fields)), per image of the batch
    layer.fields      the counter columns; "dense_macs" and "executed_macs" among them
    layer.overhead    the columns that count the method's own work (hashing, merging, ...):
                      operations added to the layer, counted as one MAC each "with overhead"
    layer.replay(inputs, attrs, outs) -> (calls, counters) | None, optional: for a method whose
                      work depends on shapes only, the compiled calls (function, arguments) that
                      redo run() on these same arrays and the counters such a run gives

A layer reads and writes NCHW: plans keep the tensors around compressed layers NCHW (the others
may stay channel-blocked: runtime._blocked_tensors), and compressed steps run the usual way each
run unless their layer has replay (the replay in runtime.py: HASTE's work changes with its input). Model.compress(method) sets a method, Model.last_stats() reports
the counters per layer (stats.py).
"""
from __future__ import annotations

from typing import Protocol

import numpy as np


class Layer(Protocol):
    fields: tuple[str, ...]
    overhead: tuple[str, ...]

    def run(self, inputs: list, attrs: dict, outs: list) -> tuple[list, np.ndarray]: ...


class Method(Protocol):
    name: str

    def layers(self, graph) -> dict[str, Layer]: ...


REQUIRED_FIELDS = ("dense_macs", "executed_macs")


def check_method(method) -> None:
    """TypeError naming what is missing when `method` does not have the interface above."""
    missing = [a for a in ("name", "layers") if not hasattr(method, a)]
    if missing:
        raise TypeError(f"a compression method needs {missing}; got {type(method).__name__}")


def check_layers(method_name: str, layers: dict) -> None:
    """TypeError naming the node whose layer lacks run, a required counter column, or an overhead
    column among its fields (else last_stats would fail after the run)."""
    for node, layer in layers.items():
        fields = tuple(getattr(layer, "fields", ()))
        missing = [f for f in REQUIRED_FIELDS + tuple(getattr(layer, "overhead", ())) if f not in fields]
        if not callable(getattr(layer, "run", None)) or missing:
            raise TypeError(f"{method_name} layer for node '{node}': needs run() and counter fields "
                            f"{list(REQUIRED_FIELDS)} plus its overhead columns; missing {missing or ['run']}")
