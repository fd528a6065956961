"""The compression interface (haste_edge/compression.py): any method with `name` and `layers(graph)`
plugs into a model; its layers run their steps and their counters reach last_stats by field name."""
from __future__ import annotations

import numpy as np
import pytest

import haste_edge
from haste_edge.haste import Haste, HasteLayer
from haste_edge.ops.registry import get

RNG = np.random.default_rng(3)


class EveryOtherConv:
    """A stand-in method: every second Conv runs dense through a layer that counts it, with a
    made-up overhead column, so the runtime's side can be checked apart from any real method."""
    name = "every-other"

    def layers(self, graph):
        convs = [n for n in graph.nodes if n.op == "Conv"]
        return {n.name: CountingLayer() for n in convs[1::2]}


class CountingLayer:
    fields = ("dense_macs", "executed_macs", "extra_ops")
    overhead = ("extra_ops",)

    def __init__(self):
        self.calls = 0

    def run(self, inputs, attrs, outs):
        self.calls += 1
        spec = get("Conv")
        outs = spec.kernel(inputs, attrs, outs)
        n = inputs[0].shape[0]
        macs = spec.macs([a.shape if a is not None else None for a in inputs], [outs[0].shape], attrs) // n
        counters = np.tile(np.array([macs, macs // 2, 7], np.int64), (n, 1))
        return outs, counters


def _logits(model, x):
    return model.run({model.input_names[0]: x})[model.output_names[0]]


def test_a_method_plugs_in_and_its_counters_are_reported():
    model = haste_edge.load()
    x = RNG.standard_normal(model.input_shape(2)).astype(np.float32)
    dense = _logits(model, x)
    layers = model.compress(EveryOtherConv())
    assert layers and set(layers) == set(model.compressed)
    got = _logits(model, x)
    np.testing.assert_allclose(got, dense, rtol=1e-4, atol=1e-4)     # it ran the conv, on NCHW tensors
    assert all(layer.calls == 1 for layer in layers.values())
    rows = {r.name: r for r in model.last_stats().layers}
    for name in layers:
        r = rows[name]
        assert r.method == "every-other" and r.counters["extra_ops"].tolist() == [7, 7]
        assert (r.executed * 2 <= r.dense).all() and r.overhead.tolist() == [7, 7]
    assert not any(rows[n].method for n in rows if n not in layers)
    model.compress(None)
    assert not model.compressed
    np.testing.assert_array_equal(_logits(model, x), dense)
    assert not any(r.method for r in model.last_stats().layers)


def test_haste_is_a_method_like_any_other():
    model = haste_edge.load()
    settings = model.set_haste("L=8,P=2")
    assert all(isinstance(layer, HasteLayer) for layer in model.compressed.values())
    assert settings == {name: layer.setting for name, layer in model.compressed.items()}
    x = RNG.standard_normal(model.input_shape(1)).astype(np.float32)
    shorthand = _logits(model, x)
    model.compress(Haste("L=8,P=2"))
    np.testing.assert_array_equal(_logits(model, x), shorthand)
    assert {r.method for r in model.last_stats().layers} == {"", "haste"}


def test_something_else_is_refused_by_name():
    model = haste_edge.load()
    with pytest.raises(TypeError, match="compression method needs"):
        model.compress("L=8")
    with pytest.raises(TypeError, match="HASTE takes"):
        Haste(8)


class NoCounters:
    name = "broken"

    def layers(self, graph):
        layer = CountingLayer()
        layer.fields = ("dense_macs",)                     # no executed_macs, overhead not a field
        return {next(n.name for n in graph.nodes if n.op == "Conv"): layer}


def test_a_layer_without_the_required_counters_is_refused_before_any_run():
    model = haste_edge.load()
    with pytest.raises(TypeError, match="broken layer for node .*missing \\['executed_macs', 'extra_ops'\\]"):
        model.compress(NoCounters())
    assert not model.compressed


def test_dense_layers_keep_the_blocked_layout_beside_compressed_ones():
    """Only the tensors a compressed layer reads or writes are NCHW: HASTE on the last stage leaves
    the earlier convs channel-blocked, and the run gives what an all-NCHW plan gives (same
    buckets; outputs within float rounding, the dense convs' paths differing by layout)."""
    from haste_edge.runtime import check_feeds, execute
    model = haste_edge.load()
    model.set_haste("L=4,P=4,start=15")
    x = np.random.default_rng(3).standard_normal(model.input_shape(2)).astype(np.float32)
    feeds = check_feeds(model.graph, {model.input_names[0]: x})
    mixed = model.plan({k: v.shape for k, v in feeds.items()})
    flat = model.plan({k: v.shape for k, v in feeds.items()}, blocked=False)
    assert any(st.buffers and st.buffers[0].ndim == 5 for st in mixed.steps)          # blocked tensors left
    for st in mixed.steps:
        if st.layer is not None:                                                       # compressed: NCHW around it
            assert st.buffers[0].ndim == 4
    out_mixed = execute(mixed, feeds)[0].copy()
    counters_mixed = {k: v.copy() for k, v in mixed.last_counters.items()}
    out_flat = execute(flat, feeds)[0]
    assert np.abs(out_mixed - out_flat).max() <= 1e-4 * max(1.0, np.abs(out_flat).max())
    assert counters_mixed.keys() == flat.last_counters.keys()
    for k, v in counters_mixed.items():
        np.testing.assert_array_equal(v, flat.last_counters[k])
