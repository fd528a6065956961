"""Winograd F(2x2,3x3) and F(4x4,3x3) against the conv reference: odd and even map sizes,
padding, batch, bias, activations, one thread and more; and their stated error bounds."""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest

from haste_edge.ops import conv as conv_mod
from haste_edge.ops import conv_winograd as wino
from haste_edge.ops import conv_winograd4 as wino4
from haste_edge.threads import numba_single_thread
from conv_cases import make, run_fast


@pytest.mark.parametrize("module,n", [(wino, 4), (wino4, 6)])
def test_filter_transform_is_g_g_gt(module, n):
    w = np.random.default_rng(0).standard_normal((2, 3, 3, 3)).astype(np.float32)
    u = module.transform_filters(w)
    for o in range(2):
        for c in range(3):
            want = module.G @ w[o, c].astype(np.float64) @ module.G.T
            np.testing.assert_allclose(u[:, o, c].reshape(n, n), want, rtol=1e-6, atol=1e-7)


# F(m x m) -> (its conv path, the error bound in its module's docstring: relative to the output's
# scale before the activation, a clamped output hiding how large the products were, x sqrt(C_in))
SIZES = {2: ("winograd", 2e-6), 4: ("winograd4", 5e-6)}


@pytest.fixture(params=sorted(SIZES))
def winograd(request, monkeypatch):
    """F(2x2) (opt-in: HASTE_EDGE_CONV=winograd) or F(4x4) on every applicable conv."""
    if request.param == 2:
        monkeypatch.setattr(conv_mod, "_DIRECT", True)
        monkeypatch.setattr(conv_mod, "_WINOGRAD", True)
        monkeypatch.setattr(conv_mod, "_WINOGRAD_MIN_PIXELS", 1)
    else:
        monkeypatch.setattr(conv_mod, "_WINOGRAD4_MIN_PIXELS", 1)
        monkeypatch.setattr(conv_mod, "_WINOGRAD4_MIN_CHANNELS", 1)
        monkeypatch.setattr(conv_mod, "_WINOGRAD4_MIN_CHANNELS_POOL", 1)
    return SIZES[request.param]


@pytest.mark.parametrize("case", [
    (1, 32, 28, 28, 32, [1, 1, 1, 1], "Relu", True),  # F(4x4): whole blocks, written straight into y
    (2, 5, 9, 7, 6, [1, 1, 1, 1], "", True),          # odd sizes: partial output blocks
    (1, 8, 6, 10, 3, [0, 0, 0, 0], "Clip", False),    # no padding, no bias
    (3, 4, 5, 5, 8, [2, 1, 0, 1], "Relu", True),      # asymmetric pads, batch
    (1, 128, 7, 7, 128, [1, 1, 1, 1], "Relu", True),
    (1, 256, 14, 14, 32, [1, 1, 1, 1], "Relu", True),
])
@pytest.mark.parametrize("one_thread", [True, False])  # F(4x4)'s stages serial or on the pool
def test_winograd_matches_reference(winograd, case, one_thread):
    path, bound = winograd
    n, ci, h, w, co, pads, act, bias = case
    inputs, attrs = make((n, ci, h, w, co, (3, 3), (1, 1), (1, 1), pads, 1, act), bias=bias)
    attrs = dict(attrs)
    with numba_single_thread() if one_thread else nullcontext():
        got = run_fast(inputs, attrs)
        assert conv_mod._get_plan(attrs, inputs[0].shape, inputs[1].shape).path == path
    want = conv_mod.conv_reference(inputs, attrs)[0]
    scale = np.abs(conv_mod.conv_reference(inputs, {**attrs, "activation": ""})[0]).max()
    assert np.abs(got - want).max() <= bound * max(scale, 1.0) * np.sqrt(ci)


def test_only_3x3_stride1_undilated_group1():
    a = dict(kernel_shape=[3, 3], strides=[1, 1], dilations=[1, 1])
    assert wino.applicable(a, 1)
    assert not wino.applicable(a, 2)
    assert not wino.applicable({**a, "strides": [2, 2]}, 1)
    assert not wino.applicable({**a, "dilations": [2, 2]}, 1)
    assert not wino.applicable({**a, "kernel_shape": [5, 5]}, 1)


def test_rule_takes_winograd4_on_large_maps_with_many_channels():
    lo = conv_mod._WINOGRAD4_MIN_CHANNELS          # 64, or 128 with full-width AVX-512 FMAs
    with numba_single_thread():
        for ci, hw, want in ((lo, 28, "winograd4"), (128, 56, "winograd4"), (lo // 2, 28, "direct"),
                             (lo, 14, "direct")):
            (x, w, _), attrs = make((1, ci, hw, hw, 8, (3, 3), (1, 1), (1, 1), [1, 1, 1, 1], 1, "Relu"))
            assert conv_mod._get_plan(dict(attrs), x.shape, w.shape).path == want, (ci, hw)
