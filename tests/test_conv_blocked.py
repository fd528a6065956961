"""Convs on the channel-blocked layout (ops/conv_blocked.py) against the NCHW reference, every
mix of input and output layout. NumPy only: also run on the emulated aarch64 board."""
from __future__ import annotations

import numpy as np
import pytest

from conv_cases import make, poison_scratch
from haste_edge.ops import conv as conv_mod
from haste_edge.ops.conv_blocked import VL, blocked_phases, blocks, from_blocked, to_blocked

# (N, C_in, H, W, C_out, kernel, strides, dilations, pads [t, l, b, r], group, activation):
# output rows of 14, 7, 8 and 12 pixels (every target's lanes tiles have MR 7, 14 or 4), channel
# counts off the vector width (spare lanes), more output blocks than a panel (overlapping panels)
CASES = {
    "3x3-s1": (2, 20, 14, 14, 40, (3, 3), (1, 1), (1, 1), [1, 1, 1, 1], 1, "Relu"),
    "3x3-s2-overlapping-panels": (1, 24, 14, 14, 72, (3, 3), (2, 2), (1, 1), [1, 1, 1, 1], 1, "Clip"),
    "1x1": (1, 40, 7, 7, 24, (1, 1), (1, 1), (1, 1), [0, 0, 0, 0], 1, ""),
    "1x1-s2": (2, 16, 14, 14, 32, (1, 1), (2, 2), (1, 1), [0, 0, 0, 0], 1, "Relu"),
    "5x5-asym-pads": (1, 8, 8, 8, 20, (5, 5), (1, 1), (1, 1), [2, 1, 2, 3], 1, "Clip"),
    "3x3-dilation2": (1, 12, 12, 12, 16, (3, 3), (1, 1), (2, 2), [2, 2, 2, 2], 1, ""),
    "dw-3x3": (2, 40, 14, 14, 40, (3, 3), (1, 1), (1, 1), [1, 1, 1, 1], 40, "Clip"),
    "dw-5x5-s2": (1, 24, 15, 15, 24, (5, 5), (2, 2), (1, 1), [2, 2, 2, 2], 24, "Relu"),
    "dw-s2-ragged-rows": (1, 20, 11, 11, 20, (3, 3), (2, 2), (1, 1), [1, 1, 1, 1], 20, ""),
}


def _run(inputs, attrs, in_blocked, out_blocked):
    x, w = inputs[0], inputs[1]
    nb = conv_mod.blocked_output(attrs, x.shape, w.shape)
    assert nb is not None and nb >= blocks(w.shape[0])
    (n, c_out, ho, wo), = conv_mod.conv_infer([x.shape, w.shape], attrs)
    xb = to_blocked(x, blocks(x.shape[1]) + 1) if in_blocked else x       # a spare block: never read
    shape = (n, nb, ho, wo, VL) if out_blocked else (n, c_out, ho, wo)
    y = np.full(shape, np.nan, np.float32)
    out = conv_mod.conv([xb, w, inputs[2]] + inputs[3:], attrs, [y])[0]
    assert out is y
    if out_blocked:
        assert np.isfinite(y[:, :blocks(c_out)]).all()      # spare lanes written (zeros, clamped)
        return from_blocked(y, c_out)
    return y


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("in_blocked,out_blocked", [(True, True), (True, False), (False, True)])
def test_blocked_conv_matches_reference(name, in_blocked, out_blocked):
    inputs, attrs = make(CASES[name])
    poison_scratch()                                # no kernel may read scratch it did not write
    got = _run(inputs, attrs, in_blocked, out_blocked)
    want = conv_mod.conv_reference(inputs, attrs)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("relu,spare", [(False, 2), (True, 2), (True, 0)])
def test_blocked_residual(relu, spare):
    """The fused residual Add on blocked tensors whose block counts differ past the real ones
    (the residual with more blocks than the output, or none spare, fewer than the output's NV)."""
    inputs, attrs = make(CASES["3x3-s1"])
    attrs["activation"] = ""
    attrs["residual_activation"] = "Relu" if relu else ""
    (n, c_out, ho, wo), = conv_mod.conv_infer([inputs[0].shape, inputs[1].shape], attrs)
    r = np.random.default_rng(1).standard_normal((n, c_out, ho, wo)).astype(np.float32)
    want = conv_mod.conv_reference(inputs + [r], attrs)[0]
    got = _run(inputs + [to_blocked(r, blocks(c_out) + spare)], attrs, True, True)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_layout_round_trip_and_padding():
    x = np.random.default_rng(2).standard_normal((2, 20, 5, 6)).astype(np.float32)
    xb = to_blocked(x)
    assert xb.shape == (2, blocks(20), 5, 6, VL)
    np.testing.assert_array_equal(from_blocked(xb, 20), x)
    for sh, sw, pt, pl, hq, wq, na, nb in [(1, 1, 1, 2, 8, 9, 1, 1), (2, 2, 1, 0, 3, 4, 2, 2), (1, 2, 0, 1, 5, 3, 1, 2)]:
        buf = np.full(blocks(20) * na * nb * hq * wq * VL, np.nan, np.float32)
        blocked_phases(xb[1], buf, sh, sw, pt, pl, hq, wq, na, nb)
        xpad = np.zeros((blocks(20), pt + 5 + hq * sh, pl + 6 + wq * sw, VL), np.float32)
        xpad[:, pt:pt + 5, pl:pl + 6] = xb[1]
        want = np.stack([np.stack([xpad[:, a::sh][:, :hq, b::sw][:, :, :wq] for b in range(nb)], 1)
                         for a in range(na)], 1)
        np.testing.assert_array_equal(buf.reshape(want.shape), want)


def test_no_blocked_layout_where_the_rule_says_no():
    """Grouped (not depthwise) convs, and rows no lanes tile divides, stay NCHW."""
    inputs, attrs = make((1, 8, 9, 9, 8, (3, 3), (1, 1), (1, 1), [1, 1, 1, 1], 2, ""))
    assert conv_mod.blocked_output(attrs, inputs[0].shape, inputs[1].shape) is None
    inputs, attrs = make((1, 8, 9, 9, 8, (3, 3), (1, 1), (1, 1), [1, 1, 1, 1], 1, ""))
    assert conv_mod.blocked_output(attrs, inputs[0].shape, inputs[1].shape) is None


def test_global_average_pool_on_blocked_input():
    from haste_edge.ops.pool import global_avgpool, global_avgpool_reference
    x = np.random.default_rng(3).standard_normal((2, 20, 5, 7)).astype(np.float32)
    y = np.full((2, 20, 1, 1), np.nan, np.float32)
    global_avgpool([to_blocked(x, blocks(20) + 1)], {}, [y])
    np.testing.assert_allclose(y, global_avgpool_reference([x], {})[0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("geo", [((3, 3), (2, 2), (1, 1), [1, 1, 1, 1], 0), ((2, 2), (2, 2), (1, 1), [0, 0, 0, 0], 0),
                                 ((3, 3), (1, 1), (2, 2), [2, 1, 2, 3], 0), ((3, 3), (2, 2), (1, 1), [0, 0, 1, 1], 1)])
def test_blocked_maxpool_matches_reference(geo):
    """MaxPool on channel-blocked tensors (the runtime keeps a pool between blocked convs blocked)."""
    from haste_edge.ops.pool import maxpool, maxpool_infer, maxpool_reference
    k, s, d, pads, ceil = geo
    attrs = {"kernel_shape": list(k), "strides": list(s), "dilations": list(d), "pads": pads, "ceil_mode": ceil}
    x = np.random.default_rng(4).standard_normal((2, 20, 11, 13)).astype(np.float32)
    (n, c, ho, wo), = maxpool_infer([x.shape], attrs)
    y = np.full((n, blocks(c) + 1, ho, wo, VL), np.nan, np.float32)
    out = maxpool([to_blocked(x, blocks(c) + 1)], attrs, [y])[0]
    assert out is y and np.isfinite(y).all()                # spare blocks and lanes written too
    np.testing.assert_array_equal(from_blocked(y, c), maxpool_reference([x], attrs)[0])


@pytest.mark.parametrize("in_blocked", [True, False])
def test_phases_on_the_pool_equal_serial(monkeypatch, in_blocked):
    """Stride phases built on the pool (PHASES_POOL_FLOATS) give the output the calling thread's
    give, bit for bit: blocked input (mode 2) and NCHW (mode 3), on 2 threads where there are."""
    import numba
    from haste_edge.ops import conv_blocked
    inputs, attrs = make((1, 20, 56, 56, 24, (3, 3), (2, 2), (1, 1), [1, 1, 1, 1], 1, "Clip"))
    chosen = []
    decide = conv_blocked.BlockedConv.pool_phases
    monkeypatch.setattr(conv_blocked.BlockedConv, "pool_phases",
                        lambda self, plan, serial: chosen.append(decide(self, plan, serial)) or chosen[-1])
    prev = numba.get_num_threads()
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:
        got = {}
        for floats in (1 << 62, 0):
            monkeypatch.setattr(conv_blocked, "PHASES_POOL_FLOATS", floats)
            poison_scratch()
            got[floats] = _run(inputs, dict(attrs), in_blocked, True)
    finally:
        numba.set_num_threads(prev)
    assert chosen == [False, numba.config.NUMBA_NUM_THREADS > 1]
    assert np.array_equal(got[0], got[1 << 62])
    want = conv_mod.conv_reference(inputs, attrs)[0]
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
