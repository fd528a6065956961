"""A plan's replay (runtime.py): the runs after the first make only the recorded compiled calls.
They must give bit for bit what stepping through the plan gives, take each run's new input, and be
recorded again whenever what they were bound to changes (threads, scratch buffers, HASTE)."""
from __future__ import annotations

import numpy as np
import pytest

import haste_edge
from haste_edge import runtime
from haste_edge.graph import Graph, Node
from haste_edge.prom.method import totals
from haste_edge.runtime import Model
from haste_edge.threads import get_threads, set_threads

from model_zoo import get_model

RNG = np.random.default_rng(11)


@pytest.fixture
def restore():
    threads, replay = get_threads(), runtime.REPLAY
    yield
    set_threads(threads)
    runtime.REPLAY = replay


def _runs(model, xs, replay):
    runtime.REPLAY = replay
    name = model.input_names[0]
    return [model.run({name: x})[model.output_names[0]] for x in xs]


def _inputs(model, n=4):
    return [RNG.standard_normal(model.input_shape(1)).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", ["bundled", "resnet_tiny", "mobilenetv2_tiny", "mobilenetv3_tiny", "vgg_tiny"])
def test_replayed_runs_equal_stepped_runs_bit_for_bit(name, threads, restore):
    set_threads(threads)
    model = haste_edge.load(None if name == "bundled" else get_model(name))
    xs = _inputs(model)
    stepped = _runs(model, xs, replay=False)
    replayed = _runs(model, xs, replay=True)      # the first records, the others replay
    plan = model.last_plan
    assert plan.replay is not None
    # every step replayed by its compiled calls, the input's conv taking each run's input
    assert runtime._again not in [f for f, _ in plan.replay.calls]
    assert [f for f, _ in plan.replay.calls].count(runtime._with_feeds) == 1
    # each call names the step it was recorded from, in plan order (benchmarks/replay_calls.py)
    order = [st.node_name for st in plan.steps]
    assert len(plan.replay.steps) == len(plan.replay.calls)
    positions = [order.index(n) for n in plan.replay.steps]
    assert positions == sorted(positions) and positions[0] == 0
    for a, b in zip(stepped, replayed):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(replayed[0], replayed[1])   # each run took its own input


def test_replay_is_recorded_again_when_the_thread_count_changes(restore):
    model = haste_edge.load()
    xs = _inputs(model, 3)
    set_threads(1)
    one = _runs(model, xs, replay=True)
    key1 = model.last_plan.replay.key
    set_threads(2)
    two = _runs(model, xs, replay=True)
    assert model.last_plan.replay.key != key1
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)   # other splits, other sums


def test_replay_is_recorded_again_when_scratch_grows(restore):
    """Another model in the same thread reallocates a scratch buffer the first one's calls hold."""
    from haste_edge.scratch import _tls, scratch
    set_threads(1)
    small = haste_edge.load(get_model("resnet_tiny"))
    xs = _inputs(small, 3)
    before = _runs(small, xs, replay=True)
    key = small.last_plan.replay.key
    scratch("phases", _tls.bufs["phases"].size + 1)       # what a bigger layer's call does
    after = _runs(small, xs, replay=True)
    assert small.last_plan.replay.key != key
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_haste_change_drops_the_replay(restore):
    model = haste_edge.load()
    xs = _inputs(model, 3)
    dense = _runs(model, xs, replay=True)
    model.set_haste("L=8,P=2")
    haste_stepped = _runs(model, xs, replay=False)
    haste_replayed = _runs(model, xs, replay=True)
    for a, b in zip(haste_stepped, haste_replayed):
        np.testing.assert_array_equal(a, b)
    assert model.last_stats().summary()["reduction"] > 0      # HASTE steps still count
    model.set_haste(None)
    for a, b in zip(dense, _runs(model, xs, replay=True)):
        np.testing.assert_array_equal(a, b)


def test_views_of_the_input_follow_each_run(restore):
    """Reshape of the graph input is redone every run; Flatten of a buffer is not (a view stays valid)."""
    nodes = [Node("Reshape", "r", ["x"], ["xr"], {"shape": [1, 6, 4, 1], "allowzero": 0}),
             Node("Relu", "relu", ["xr"], ["a"]),
             Node("Flatten", "f", ["a"], ["af"], {"axis": 1}), Node("Relu", "relu2", ["af"], ["y"])]
    graph = Graph(nodes, {}, {"x": (1, 2, 3, 4)}, ["y"])
    model = Model(graph)
    xs = [RNG.standard_normal((1, 2, 3, 4)).astype(np.float32) for _ in range(3)]
    for x, y in zip(xs, _runs(model, xs, replay=True)):
        np.testing.assert_array_equal(y, np.maximum(x.reshape(1, 24), 0))
    kinds = [f for f, _ in model.last_plan.replay.calls]
    assert kinds.count(runtime._again) == 2          # Reshape and the Relu reading it


@pytest.mark.parametrize("c_shape", [(3,), (1, 3), (3, 1), (3, 3), ()])
def test_gemm_bias_of_every_broadcast(c_shape, restore):
    """A few-row Gemm replays by the row kernel and its C added as a row or broadcast."""
    w = RNG.standard_normal((3, 5)).astype(np.float32)
    c = RNG.standard_normal(c_shape).astype(np.float32)
    node = Node("Gemm", "fc", ["x", "w", "c"], ["y"], {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 1})
    model = Model(Graph([Node("Relu", "relu", ["x0"], ["x"]), node], {"w": w, "c": c}, {"x0": (3, 5)}, ["y"]))
    xs = [RNG.standard_normal((3, 5)).astype(np.float32) for _ in range(3)]
    for x, y in zip(xs, _runs(model, xs, replay=True)):
        np.testing.assert_allclose(y, np.maximum(x, 0) @ w.T + c, rtol=1e-5, atol=1e-5)
    assert "_rows_times_bt" in [getattr(f, "__name__", "") for f, _ in model.last_plan.replay.calls]


@pytest.mark.parametrize("threads", [1, 2])
def test_prom_layers_are_replayed_with_their_counters(threads, restore):
    """PROM's layers (work fixed by shapes) replay by their compiled calls, the one reading the
    graph input too (its calls take each run's array): the same logits bit for bit and the same
    counters as stepping through, every layer's put back by one call."""
    set_threads(threads)
    model = haste_edge.load("fashion_mobilenetv2_prom")
    xs = _inputs(model)
    stepped = _runs(model, xs, replay=False)
    stepped_counts = totals(model.last_stats())
    replayed = _runs(model, xs, replay=True)
    calls = [f for f, _ in model.last_plan.replay.calls]
    n_layers = sum(st.layer is not None for st in model.last_plan.steps)
    assert runtime._again not in calls and runtime._with_feeds in calls and n_layers > 30
    put = [a for f, a in model.last_plan.replay.calls if f == model.last_plan.last_counters.update]
    assert len(put) == 1 and len(put[0][0]) == n_layers
    for a, b in zip(stepped, replayed):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(replayed[0], replayed[1])
    assert totals(model.last_stats()) == stepped_counts and stepped_counts["int32_adds"] > 0
    assert sum(layer.method == "prom" for layer in model.last_stats().layers) == n_layers
