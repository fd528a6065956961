"""The op registry: op type -> OpSpec (shape rule, fast kernel, reference kernel, MAC count).

Adding an op: write its module in haste_edge/ops/ with a NumPy reference and a fast
kernel, register it here with @register, add its input-count and attribute rule to checks.py,
a README row and a test.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

Shape = tuple[int, ...]


@dataclass(frozen=True)
class OpSpec:
    op: str
    # infer(input_shapes, attrs) -> output shapes. Inputs with name "" arrive as None.
    infer: Callable[[list, dict], list]
    # kernel(inputs, attrs, outs) -> outputs. `outs` are preallocated float32 buffers of the
    # inferred shapes that the kernel fills and returns; for view ops `outs` is None and the
    # kernel returns views of its input.
    kernel: Callable[[list, dict, list | None], list]
    # reference(inputs, attrs) -> outputs: plain NumPy, obviously correct, allocates freely.
    reference: Callable[[list, dict], list]
    # macs(input_shapes, output_shapes, attrs) -> multiply-accumulates of one call (dense).
    macs: Callable[[list, list, dict], int] | None = None
    view: bool = False      # output aliases input 0 (Reshape, Flatten, ...): no buffer
    # attrs the op understands; the converter rejects a node carrying any other attribute
    attrs: tuple[str, ...] = ()
    # calls(inputs, attrs, outs) -> [(function, args), ...]: the calls the kernel would make to
    # compute the same outputs from these same arrays again, or None if it cannot say (a plan's
    # replay keeps the list, runtime.py); without it the replay calls the kernel itself
    calls: Callable[[list, dict, list], list | None] | None = None


OPS: dict[str, OpSpec] = {}


class StepAttrs(dict):
    """A plan step's copy of its node's attrs, carrying `state`: what a kernel derives once for
    the step (packed weights, tile plans) and keeps while the plan lives, instead of in a
    module-level cache that outlives the model. Kernels called with a plain dict (tests, direct
    calls) fall back to a bounded cache of their own."""
    __slots__ = ("state",)

    def __init__(self, attrs):
        super().__init__(attrs)
        self.state = {}


class Held:
    """Arrays a step's state refers to but does not own (the plan's buffers, the graph's weights),
    kept to recognise them on the next call: Model.kernel_state_bytes does not count them (it
    walks dicts, lists, tuples and objects with a __dict__; this has none)."""
    __slots__ = ("items",)

    def __init__(self, *items):
        self.items = items


class Prepared:
    """A conv path's state for one node, made once (packed weights, offsets). calls(x, y, bias,
    plan) lists the compiled calls (function, arguments) that compute y from x: run makes and does
    them; a plan's replay (runtime.py) keeps the list and does them again on the next runs. A path
    with takes_residual also takes calls(..., residual=(r, lo)): y = max(y + r, lo) as y is stored
    (the fused residual Add); the others' callers add it in a pass of their own."""
    takes_residual = False

    def calls(self, x, y, bias, plan) -> list:
        raise NotImplementedError

    def run(self, x, y, bias, plan):
        for f, a in self.calls(x, y, bias, plan):
            f(*a)


def step_state(attrs) -> dict | None:
    """The per-step state dict when `attrs` comes from a plan step, else None."""
    return attrs.state if isinstance(attrs, StepAttrs) else None


def register(op: str, *, infer, reference, macs=None, view=False, attrs=(), calls=None):
    """Decorator for the fast kernel: registers the full spec under `op`."""
    def wrap(kernel):
        if op in OPS:
            raise RuntimeError(f"op {op} registered twice")
        OPS[op] = OpSpec(op, infer, kernel, reference, macs, view, tuple(attrs), calls)
        return kernel
    return wrap


def supported_ops() -> list[str]:
    return sorted(OPS)


def get(op: str) -> OpSpec:
    return OPS[op]


def run_reference(op: str, inputs: list, attrs: dict) -> list:
    return OPS[op].reference(inputs, attrs)


def as_f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)
