"""HASTE inside the runtime: steerable on a loaded model, counted per layer and per image."""
from __future__ import annotations

import numpy as np
import pytest

import haste_edge
from haste_edge.haste import HasteConfig, channels_kept
from model_zoo import get_model


@pytest.fixture(scope="module")
def model_and_input():
    model = haste_edge.load(get_model("resnet_tiny"))
    x = np.random.default_rng(0).standard_normal(model.input_shape(2)).astype(np.float32)
    return model, {model.input_names[0]: x}


def _logits(model, feeds):
    return model.run(feeds)[model.output_names[0]]


def test_dense_counts_equal_dense_macs(model_and_input):
    model, feeds = model_and_input
    model.set_haste(None)
    _logits(model, feeds)
    st = model.last_stats()
    assert (st.dense() == st.executed()).all() and (st.overhead() == 0).all()
    assert int(st.dense()[0]) == sum(model.macs(batch=1).values())


def test_steerable_without_reload(model_and_input):
    model, feeds = model_and_input
    model.set_haste(None)
    dense = _logits(model, feeds)
    layers = model.set_haste("L=4,P=2")
    assert layers and all(s.L == 4 for s in layers.values())
    coarse = _logits(model, feeds)
    st4 = model.last_stats()
    model.set_haste(HasteConfig(L=16, patch=2))
    fine = _logits(model, feeds)
    st16 = model.last_stats()
    # fewer hyperplanes merge more channels: fewer executed MACs, larger deviation from dense
    assert (st4.executed() < st16.executed()).all()
    assert np.abs(coarse - dense).max() > np.abs(fine - dense).max()
    assert (st4.reduction(True) < st4.reduction()).all()  # overhead is counted
    model.set_haste(None)
    np.testing.assert_array_equal(_logits(model, feeds), dense)


def test_per_image_counts_differ_and_layers_are_reported(model_and_input):
    model, feeds = model_and_input
    model.set_haste("L=6,P=2")
    _logits(model, feeds)
    st = model.last_stats()
    haste_rows = [r for r in st.layers if r.method == "haste"]
    assert {r.name for r in haste_rows} == set(model.compressed)
    first_conv = next(n.name for n in model.graph.nodes if n.op == "Conv")
    assert first_conv not in model.compressed  # the first conv stays dense by default
    executed = st.executed(ops=("Conv",))
    assert executed[0] != executed[1]  # dynamic: each image merges differently
    for r in haste_rows:
        kept = channels_kept(r)
        assert ((kept > 0) & (kept <= 1)).all()
    model.set_haste(None)


def test_same_seed_same_result(model_and_input):
    model, feeds = model_and_input
    model.set_haste("L=6,P=4,seed=3")
    a, sa = _logits(model, feeds), model.last_stats().executed()
    model.set_haste("L=6,P=4,seed=3")
    b, sb = _logits(model, feeds), model.last_stats().executed()
    model.set_haste("L=6,P=4,seed=4")
    _logits(model, feeds)
    sc = model.last_stats().executed()
    np.testing.assert_array_equal(a, b)
    assert (sa == sb).all() and (sa != sc).any()
    model.set_haste(None)


def test_whole_model_phase_profile(model_and_input):
    """phase_profile splits every HASTE conv into its phases and leaves the model's results alone."""
    from haste_edge.bench.haste_phases import PHASE_COLUMNS, phase_profile
    model, feeds = model_and_input
    chosen = model.set_haste(HasteConfig(L=8, patch=2))
    before = _logits(model, feeds)
    prof = phase_profile(model, feeds, repeats=1)
    assert set(prof["layers"]) == set(chosen)
    assert all(set(PHASE_COLUMNS) | {"total"} == set(p) for p in prof["layers"].values())
    assert prof["other_ops"] > 0 and prof["total"] > prof["other_ops"]
    np.testing.assert_array_equal(_logits(model, feeds), before)
