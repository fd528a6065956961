"""What a model's kernels derive (packed weights, HASTE set-up) lives and dies with the model."""
from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

import haste_edge

pytestmark = pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads /proc/self/statm")


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 1e6


def _load_and_run():
    m = haste_edge.load()
    x = np.zeros((1, 1, 28, 28), np.float32)
    m.run({"input": x})
    m.set_haste("L=8,P=4")
    m.run({"input": x})


def test_reloading_a_model_does_not_grow_memory():
    """Each load of the bundled model packs ~20 MB of weights for its convs. Kept in module caches
    keyed by object ids, 20 reloads grew the process by ~500 MB; kept on the plan steps, by none."""
    for _ in range(3):
        _load_and_run()
    gc.collect()
    before = _rss_mb()
    for _ in range(20):
        _load_and_run()
    gc.collect()
    assert _rss_mb() - before < 100, f"grew {_rss_mb() - before:.0f} MB over 20 reloads"


def test_two_models_share_no_kernel_state():
    a, b = haste_edge.load(), haste_edge.load()
    x = np.zeros((1, 1, 28, 28), np.float32)
    a.run({"input": x})
    b.run({"input": x})
    sa = [st.attrs.state for st in a.last_plan.steps if st.op == "Conv"]
    sb = [st.attrs.state for st in b.last_plan.steps if st.op == "Conv"]
    assert all(s for s in sa) and all(s for s in sb)
    assert all(x["conv"] is not y["conv"] for x, y in zip(sa, sb))


def test_kernel_state_is_counted():
    """bench reports it: about one packed copy of the conv weights the default path packs."""
    m = haste_edge.load()
    assert m.kernel_state_bytes() == 0
    m.run({"input": np.zeros((1, 1, 28, 28), np.float32)})
    conv_bytes = sum(m.graph.weights[n.inputs[1]].nbytes for n in m.graph.nodes
                     if n.op == "Conv" and m.graph.weights[n.inputs[1]].shape[1] >= 16
                     and m.graph.weights[n.inputs[1]].shape[2] > 1)
    assert 0.9 * conv_bytes <= m.kernel_state_bytes() <= 1.5 * conv_bytes, (m.kernel_state_bytes(), conv_bytes)
