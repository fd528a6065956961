"""Winograd F(2x2,3x3) and F(4x4,3x3) against the conv reference: odd and even map sizes, padding, batch, bias,
activations; and its stated error bound."""
from __future__ import annotations

import numpy as np
import pytest

from haste_edge.ops import conv as conv_mod
from haste_edge.ops import conv_winograd as wino
from haste_edge.ops import conv_winograd4 as wino4
from haste_edge.threads import numba_single_thread
from conv_cases import make, run_fast


def test_filter_transform_is_g_g_gt():
    w = np.random.default_rng(0).standard_normal((2, 3, 3, 3)).astype(np.float32)
    u = wino.transform_filters(w)
    for o in range(2):
        for c in range(3):
            want = wino.G @ w[o, c].astype(np.float64) @ wino.G.T
            np.testing.assert_allclose(u[:, o, c].reshape(4, 4), want, rtol=1e-6, atol=1e-7)


@pytest.fixture
def winograd(monkeypatch):
    monkeypatch.setattr(conv_mod, "_DIRECT", True)
    monkeypatch.setattr(conv_mod, "_WINOGRAD", True)
    monkeypatch.setattr(conv_mod, "_WINOGRAD_MIN_PIXELS", 1)


@pytest.mark.parametrize("case", [
    (1, 32, 28, 28, 32, [1, 1, 1, 1], "Relu", True),
    (2, 5, 9, 7, 6, [1, 1, 1, 1], "", True),          # odd sizes: partial output blocks
    (1, 8, 6, 10, 3, [0, 0, 0, 0], "Clip", False),    # no padding, no bias
    (3, 4, 5, 5, 8, [2, 1, 0, 1], "Relu", True),      # asymmetric pads, batch
    (1, 128, 7, 7, 128, [1, 1, 1, 1], "Relu", True),
])
def test_winograd_matches_reference(winograd, case):
    n, ci, h, w, co, pads, act, bias = case
    inputs, attrs = make((n, ci, h, w, co, (3, 3), (1, 1), (1, 1), pads, 1, act), bias=bias)
    attrs = dict(attrs)
    got = run_fast(inputs, attrs)
    assert conv_mod._get_plan(attrs, inputs[0].shape, inputs[1].shape).path == "winograd"
    want = conv_mod.conv_reference(inputs, attrs)[0]
    # the bound in conv_winograd's docstring, relative to the output's scale
    assert np.abs(got - want).max() <= 2e-6 * max(np.abs(want).max(), 1.0) * np.sqrt(ci)


def test_only_3x3_stride1_undilated_group1():
    a = dict(kernel_shape=[3, 3], strides=[1, 1], dilations=[1, 1])
    assert wino.applicable(a, 1)
    assert not wino.applicable(a, 2)
    assert not wino.applicable({**a, "strides": [2, 2]}, 1)
    assert not wino.applicable({**a, "dilations": [2, 2]}, 1)
    assert not wino.applicable({**a, "kernel_shape": [5, 5]}, 1)


@pytest.fixture
def winograd4(monkeypatch):
    """F(4x4) on every applicable conv (the rule takes it on large maps with many channels)."""
    monkeypatch.setattr(conv_mod, "_WINOGRAD4_MIN_PIXELS", 1)
    monkeypatch.setattr(conv_mod, "_WINOGRAD4_MIN_CHANNELS", 1)


def test_filter_transform4_is_g_g_gt():
    w = np.random.default_rng(0).standard_normal((2, 3, 3, 3)).astype(np.float32)
    u = wino4.transform_filters(w)
    for o in range(2):
        for c in range(3):
            want = wino4.G @ w[o, c].astype(np.float64) @ wino4.G.T
            np.testing.assert_allclose(u[:, o, c].reshape(6, 6), want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", [
    (1, 64, 28, 28, 64, [1, 1, 1, 1], "Relu", True),    # whole blocks: written straight into y
    (2, 5, 9, 7, 6, [1, 1, 1, 1], "", True),          # odd sizes: partial blocks, cropped
    (1, 8, 6, 10, 3, [0, 0, 0, 0], "Clip", False),    # no padding, no bias
    (3, 4, 5, 5, 8, [2, 1, 0, 1], "Relu", True),      # asymmetric pads, batch
    (1, 256, 14, 14, 32, [1, 1, 1, 1], "Relu", True),
])
def test_winograd4_matches_reference(winograd4, case):
    n, ci, h, w, co, pads, act, bias = case
    inputs, attrs = make((n, ci, h, w, co, (3, 3), (1, 1), (1, 1), pads, 1, act), bias=bias)
    attrs = dict(attrs)
    with numba_single_thread():
        got = run_fast(inputs, attrs)
        assert conv_mod._get_plan(attrs, inputs[0].shape, inputs[1].shape).path == "winograd4"
    want = conv_mod.conv_reference(inputs, attrs)[0]
    # the bound in conv_winograd4's docstring, relative to the output's scale before the
    # activation (a clamped output hides how large the products were)
    scale = np.abs(conv_mod.conv_reference(inputs, {**attrs, "activation": ""})[0]).max()
    assert np.abs(got - want).max() <= 5e-6 * max(scale, 1.0) * np.sqrt(ci)


def test_rule_takes_winograd4_on_large_maps_with_many_channels():
    with numba_single_thread():
        for ci, hw, want in ((64, 28, "winograd4"), (128, 56, "winograd4"), (32, 28, "direct"), (64, 14, "direct")):
            (x, w, _), attrs = make((1, ci, hw, hw, 8, (3, 3), (1, 1), (1, 1), [1, 1, 1, 1], 1, "Relu"))
            assert conv_mod._get_plan(dict(attrs), x.shape, w.shape).path == want, (ci, hw)
