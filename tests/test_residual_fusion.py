"""The runtime's residual fusion: a Conv whose only reader is an Add (and that Add's only reader a
Relu) runs as one step, with the same results as the unfused nodes; anything else is left alone."""
from __future__ import annotations

import numpy as np
import pytest

import haste_edge
from haste_edge.graph import Graph, Node
from haste_edge.ops.registry import get
from haste_edge.runtime import Model

RNG = np.random.default_rng(5)


def _conv(name, x, y, c_in=4, c_out=4, act=""):
    return Node("Conv", name, [x, name + ".w", name + ".b"], [y],
                dict(kernel_shape=[3, 3], strides=[1, 1], dilations=[1, 1], pads=[1, 1, 1, 1], group=1,
                     activation=act, clip_min=None, clip_max=None))


def _weights(*names):
    out = {}
    for n in names:
        out[n + ".w"] = RNG.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3
        out[n + ".b"] = RNG.standard_normal(4).astype(np.float32)
    return out


def _unfused(graph, x):
    """Every node on its own through the registry's kernels (no plan, no fusion)."""
    env = {"x": x, **graph.weights}
    for n in graph.nodes:
        spec, args = get(n.op), [env[i] if i else None for i in n.inputs]
        outs = [np.empty(s, np.float32) for s in spec.infer([a.shape for a in args], n.attrs)]
        env.update(zip(n.outputs, spec.kernel(args, n.attrs, outs)))
    return env[graph.outputs[0]]


# name -> (nodes, steps the plan should have)
GRAPHS = {
    # conv2 -> Add(identity) -> Relu: one step for the three
    "block": ([_conv("c1", "x", "a", act="Relu"), _conv("c2", "a", "b"),
               Node("Add", "add", ["b", "x"], ["s"]), Node("Relu", "relu", ["s"], ["y"])], 2),
    # the residual computed after the conv (a shortcut conv listed later), no Relu
    "late-shortcut": ([_conv("c2", "x", "b"), _conv("sc", "x", "r"), Node("Add", "add", ["r", "b"], ["y"])], 2),
    # the conv's output read twice: nothing fused
    "two-readers": ([_conv("c2", "x", "b"), Node("Add", "add", ["b", "x"], ["s"]),
                     Node("Add", "add2", ["s", "b"], ["y"])], 3),
    # a fused activation already (Relu before the Add): nothing fused
    "activated": ([_conv("c2", "x", "b", act="Relu"), Node("Add", "add", ["b", "x"], ["y"])], 2),
    # Add of a per-channel constant (a broadcast): nothing fused
    "broadcast": ([_conv("c2", "x", "b"), Node("Add", "add", ["b", "k"], ["y"])], 2),
}


@pytest.mark.parametrize("name", GRAPHS)
def test_fused_steps_match_the_unfused_nodes(name):
    nodes, n_steps = GRAPHS[name]
    weights = _weights(*[n.name for n in nodes if n.op == "Conv"])
    weights["k"] = RNG.standard_normal((1, 4, 1, 1)).astype(np.float32)
    graph = Graph([Node(n.op, n.name, list(n.inputs), list(n.outputs), dict(n.attrs)) for n in nodes],
                  weights, {"x": (None, 4, 9, 7)}, ["y"])
    x = RNG.standard_normal((2, 4, 9, 7)).astype(np.float32)
    model = Model(graph)
    got = model.run({"x": x})["y"]
    assert len(model.last_plan.steps) == n_steps
    np.testing.assert_array_equal(got, _unfused(graph, x))      # same float32 operations, same order
    assert {r["name"] for r in model.layers()} == {n.name for n in nodes}   # every node still reported


def test_reference_of_a_fused_conv():
    """The Conv reference takes the 4th input as the kernel does: conv, round to float32, add, Relu."""
    x = RNG.standard_normal((1, 4, 6, 6)).astype(np.float32)
    w, b = _weights("c")["c.w"], _weights("c")["c.b"]
    r = RNG.standard_normal((1, 4, 6, 6)).astype(np.float32)
    attrs = dict(_conv("c", "x", "y").attrs, residual_activation="Relu")
    want = get("Conv").reference([x, w, b, r], attrs)[0]
    np.testing.assert_allclose(get("Conv").kernel([x, w, b, r], attrs)[0], want, rtol=1e-5, atol=1e-5)
    assert (want >= 0).all()


@pytest.mark.parametrize("haste", [None, "L=10,P=4"])
def test_bundled_model_fused_as_unfused(haste, monkeypatch):
    """The bundled ResNet's 8 residual blocks run as 16 steps fewer, dense and with HASTE, with
    the results (logits and HASTE's counts) of the unfused plan."""
    from haste_edge import runtime
    from haste_edge.ops import conv as conv_mod
    from haste_edge.preprocess import load_batch
    # unfused, a conv's output feeds an Add (NCHW), fused it may stay blocked and take Winograd:
    # another algorithm, other rounding; the fusion itself must change nothing
    monkeypatch.setattr(conv_mod, "_WINOGRAD4_BLOCKED", False)
    runs = {}
    for fuse in (False, True):
        monkeypatch.setattr(runtime, "FUSE_RESIDUALS", fuse)
        m = haste_edge.load()                       # a fresh model: plans are made with the flag
        m.set_haste(haste)
        x = load_batch(haste_edge.sample_images()[:2], m.meta["input"])
        y = m.run({"input": x})
        runs[fuse] = (y, len(m.last_plan.steps), m.last_stats())
    (y0, n0, s0), (y1, n1, s1) = runs[False], runs[True]
    assert n0 - n1 == 16
    for k in y0:
        np.testing.assert_array_equal(y0[k], y1[k])
    fused = {l.name: l.executed for l in s1.layers}       # the same layers (a conv may move later)
    assert sorted(fused) == sorted(l.name for l in s0.layers)
    for layer in s0.layers:
        np.testing.assert_array_equal(layer.executed, fused[layer.name])
