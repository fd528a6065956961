"""Winograd F(4x4,3x3) on channel-blocked tensors (ops/conv_winograd4_blocked.py): its tile
transforms against their NumPy references (the same float32 operations: equal to rounding), the
batched lanes product against the plain product, and whole convs against the float64 conv
reference within conv_winograd4's error bound. NumPy only: also run on the emulated aarch64 board."""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest

from conv_cases import make, poison_scratch
from haste_edge import microkernel as mk
from haste_edge.jit import njit
from haste_edge.ops import conv as conv_mod
from haste_edge.ops import conv_winograd4_blocked as wb
from haste_edge.ops.conv_blocked import VL, blocks, from_blocked, to_blocked
from haste_edge.threads import holding, numba_single_thread

RNG = np.random.default_rng(0)


@njit
def _input_tile(src, s_off, s_row, v, v_off, v_step):          # intrinsics run from compiled code
    mk.winograd4_input(src, s_off, s_row, v, v_off, v_step)


@njit
def _output_tile(m, m_off, m_step, y, y_off, y_row, bias, b_off, lo, hi, n_rows, n_cols, r=None, r_lo=-np.inf):
    if r is None:
        mk.winograd4_output(m, m_off, m_step, y, y_off, y_row, bias, b_off, lo, hi, n_rows, n_cols, y,
                            np.float32(r_lo), False)
    else:
        mk.winograd4_output(m, m_off, m_step, y, y_off, y_row, bias, b_off, lo, hi, n_rows, n_cols, r,
                            np.float32(r_lo), True)


def test_input_tile_equals_reference():
    row = 9 * VL                                       # a window inside a wider padded row
    src = RNG.standard_normal(7 * row + 5).astype(np.float32)
    v = np.full(1 + 36 * 2 * VL, np.nan, np.float32)
    _input_tile(src, row + 2 * VL, row, v, 1, 2 * VL)      # positions 2*VL apart, from 1
    d = np.stack([src[2 * row + r * row - row + 2 * VL:][:6 * VL].reshape(6, VL) for r in range(6)])
    got = v[1:].reshape(36, 2, VL)
    want = mk.winograd4_input_reference(d)
    np.testing.assert_allclose(got[:, 0], want, rtol=0, atol=1e-6 * np.abs(want).max())
    assert np.isnan(got[:, 1]).all() and np.isnan(v[0])           # nothing else touched


@pytest.mark.parametrize("n_rows,n_cols", [(4, 4), (2, 3), (1, 4), (4, 1)])
@pytest.mark.parametrize("lo,hi", [(-np.inf, np.inf), (0.0, np.inf), (-0.5, 0.7)])
def test_output_tile_equals_reference_and_stores_only_real_pixels(n_rows, n_cols, lo, hi):
    m = RNG.standard_normal(36 * 2 * VL).astype(np.float32)          # position p at p*2*VL
    bias = RNG.standard_normal(3 * VL).astype(np.float32)
    y_row = 6 * VL
    y = np.full(5 * y_row, np.nan, np.float32)
    _output_tile(m, VL, 2 * VL, y, y_row + VL, y_row, bias, VL, np.float32(lo), np.float32(hi),
                        n_rows, n_cols)
    want = mk.winograd4_output_reference(m.reshape(36, 2, VL)[:, 1], bias[VL:2 * VL], lo, hi)
    scale = np.abs(mk.winograd4_output_reference(m.reshape(36, 2, VL)[:, 1], bias[VL:2 * VL])).max()
    got = y.reshape(5, 6, VL)[1:5, 1:5]
    np.testing.assert_allclose(got[:n_rows, :n_cols], want[:n_rows, :n_cols], rtol=0, atol=1e-6 * scale)
    written = np.zeros((5, 6), bool)
    written[1:1 + n_rows, 1:1 + n_cols] = True
    assert np.isnan(y.reshape(5, 6, VL)[~written]).all()               # nothing else touched


@pytest.mark.parametrize("r_lo", [-np.inf, 0.0])
def test_output_tile_adds_the_residual_after_the_clamp(r_lo):
    m = RNG.standard_normal(36 * VL).astype(np.float32)
    bias = RNG.standard_normal(VL).astype(np.float32)
    y_row = 4 * VL
    r = RNG.standard_normal(4 * y_row).astype(np.float32)
    y = np.full(4 * y_row, np.nan, np.float32)
    _output_tile(m, 0, VL, y, 0, y_row, bias, 0, np.float32(-0.5), np.float32(0.7), 4, 3, r, r_lo)
    want = mk.winograd4_output_reference(m.reshape(36, VL), bias, -0.5, 0.7, r.reshape(4, 4, VL), r_lo)
    got = y.reshape(4, 4, VL)
    np.testing.assert_allclose(got[:, :3], want[:, :3], rtol=0, atol=1e-6 * np.abs(want).max())
    assert np.isnan(got[:, 3]).all()                                   # the fourth column not stored


@pytest.mark.parametrize("threads", [1, 2])
def test_fused_residual_equals_the_separate_add(threads, monkeypatch):
    """y = max(conv + r, 0) added in the output transform equals the conv, then conv_blocked's
    separate residual pass, bit for bit (the same float32 add and max on every value)."""
    import numba
    from haste_edge.ops.conv_blocked import residual_call
    monkeypatch.setattr(conv_mod, "_MICRO_SERIAL_MACS", 0)
    inputs, attrs = make(CASES["28x28-batch2"])
    x, w, b = inputs
    nb = conv_mod.blocked_output(attrs, x.shape, w.shape)
    plan = conv_mod._Plan(attrs, x.shape, w.shape, True, True)
    conv = wb.BlockedWinograd4Conv(w, plan)
    xb = to_blocked(x)
    shape = (x.shape[0], nb) + plan.out_shape[2:] + (VL,)
    r = RNG.standard_normal(shape).astype(np.float32)
    prev = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        for fused in (True, False):
            conv.fused = fused
            y_sep, y_one = np.full(shape, np.nan, np.float32), np.full(shape, np.nan, np.float32)
            for f, a in conv.calls(xb, y_sep, b, plan) + [residual_call(y_sep, r, 0.0)]:
                f(*a)
            for f, a in conv.calls(xb, y_one, b, plan, (r, 0.0)):
                f(*a)
            real = blocks(w.shape[0])
            assert np.array_equal(y_one[:, :real], y_sep[:, :real])
    finally:
        numba.set_num_threads(prev)


@pytest.mark.parametrize("parallel", [False, True])
def test_batched_lanes_product_matches_plain_product(parallel):
    v = mk.N_LANES                                     # lanes tile variant 0 read at a step of VL
    mr, nr = mk.lanes_dims_py(0)
    k, n_blocks, n_pos, n_cb = 2 * VL + 3, 2, 3, 2
    n_pad = n_blocks * mr
    cbi = blocks(k)
    a = RNG.standard_normal(n_pos * cbi * n_pad * VL).astype(np.float32)
    c_idx = np.arange(k)
    aoffs = ((c_idx // VL) * n_pad * VL + c_idx % VL).astype(np.int64)
    a_starts = (np.arange(n_blocks) * mr * VL).astype(np.int64)
    w = RNG.standard_normal((n_pos, n_cb * nr, k)).astype(np.float32)
    b = np.stack([[mk.pack_lanes(w[p, i * nr:(i + 1) * nr], nr)[0] for i in range(n_cb)] for p in range(n_pos)])
    cbo = n_cb * nr // VL
    c = np.full(n_pos * cbo * n_pad * VL, np.nan, np.float32)
    c_panels = (np.arange(n_cb) * (nr // VL) * n_pad * VL).astype(np.int64)
    with numba_single_thread() if not parallel else nullcontext():
        mk.gemm_lanes_batched(v, a, aoffs, a_starts, cbi * n_pad * VL, b, c, c_panels, n_pad * VL,
                              cbo * n_pad * VL, np.zeros(nr, np.float32), parallel, 16)
    got = c.reshape(n_pos, cbo, n_pad, VL).transpose(0, 2, 1, 3).reshape(n_pos, n_pad, cbo * VL)
    for p in range(n_pos):
        want = mk.gemm_lanes_reference(a[p * cbi * n_pad * VL:], aoffs, a_starts, mr, w[p].T, a_step=VL)
        np.testing.assert_allclose(got[p], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


# (N, C_in, H, W, C_out, kernel, strides, dilations, pads, group, activation): whole and partial
# 4x4 blocks, channels off the vector width, more output blocks than a panel, no padding, batch
CASES = {
    "14x14-partial-blocks": (1, 32, 14, 14, 40, (3, 3), (1, 1), (1, 1), [1, 1, 1, 1], 1, "Relu"),
    "28x28-batch2": (2, 36, 28, 28, 24, (3, 3), (1, 1), (1, 1), [1, 1, 1, 1], 1, "Clip"),
    "16x16-unpadded": (1, 40, 16, 16, 72, (3, 3), (1, 1), (1, 1), [0, 0, 0, 0], 1, ""),
    "16x16-asym-pads": (1, 48, 16, 16, 16, (3, 3), (1, 1), (1, 1), [1, 0, 1, 2], 1, "Relu"),
}
BOUND = 5e-6                    # conv_winograd4's, relative to the output's scale, x sqrt(C_in)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("one_thread", [True, False])
def test_blocked_winograd_conv_matches_reference(name, one_thread):
    inputs, attrs = make(CASES[name])
    x, w = inputs[0], inputs[1]
    nb = conv_mod.blocked_output(attrs, x.shape, w.shape)
    assert nb is not None and nb >= blocks(w.shape[0])
    (n, c_out, ho, wo), = conv_mod.conv_infer([x.shape, w.shape], attrs)
    y = np.full((n, nb, ho, wo, VL), np.nan, np.float32)
    poison_scratch()                                   # no stage may read scratch it did not write
    xb = to_blocked(x, blocks(x.shape[1]) + 1)         # a spare block: never read
    with numba_single_thread() if one_thread else nullcontext():
        conv_mod.conv([xb, w, inputs[2]], attrs, [y])
        assert conv_mod._get_plan(attrs, x.shape, w.shape, (True, True)).path == "winograd4_blocked"
    assert np.isfinite(y[:, :blocks(c_out)]).all()
    got = from_blocked(y, c_out)
    want = conv_mod.conv_reference(inputs, attrs)[0]
    scale = np.abs(conv_mod.conv_reference(inputs, {**attrs, "activation": ""})[0]).max()
    assert np.abs(got - want).max() <= BOUND * max(scale, 1.0) * np.sqrt(x.shape[1])


def test_rule_takes_blocked_winograd_on_maps_and_channels_it_pays_on():
    lo_px, lo_ch = conv_mod._WINOGRAD4_BLOCKED_MIN_PIXELS, conv_mod._WINOGRAD4_BLOCKED_MIN_CHANNELS
    a = dict(kernel_shape=[3, 3], strides=[1, 1], dilations=[1, 1], pads=[1, 1, 1, 1])
    assert conv_mod.winograd4_blocked_rule(a, 1, lo_px, lo_ch)
    assert not conv_mod.winograd4_blocked_rule(a, 1, lo_px - 1, lo_ch)
    assert not conv_mod.winograd4_blocked_rule(a, 1, lo_px, lo_ch - 1)
    assert not conv_mod.winograd4_blocked_rule({**a, "strides": [2, 2]}, 1, lo_px, lo_ch)
    # NCHW on either side: the lanes product instead (it takes any layout)
    (x, w, _), attrs = make(CASES["14x14-partial-blocks"])
    assert conv_mod._Plan(attrs, x.shape, w.shape, True, False).path == "blocked"
    assert conv_mod._Plan(attrs, x.shape, w.shape, False, True).path == "blocked"


def test_fused_stages_give_the_three_stages_results():
    """On one thread small-U convs run their stages per chunk of blocks (a partial last chunk here):
    the same operations on every value as the three separate stages, but the compiler may fuse a
    multiply and an add in one copy and not in the other: equal within F(4x4)'s rounding bound."""
    inputs, attrs = make(CASES["28x28-batch2"])
    x, w, b = inputs
    nb = conv_mod.blocked_output(attrs, x.shape, w.shape)
    plan = conv_mod._Plan(attrs, x.shape, w.shape, True, True)
    conv = wb.BlockedWinograd4Conv(w, plan)
    assert conv.fused and conv.th * conv.tw % conv.ct != 0
    xb = to_blocked(x)
    out = {}
    for fused in (True, False):
        conv.fused = fused
        y = out[fused] = np.full((x.shape[0], nb) + plan.out_shape[2:] + (VL,), np.nan, np.float32)
        with numba_single_thread():
            conv.run(xb, y, b, plan)
    got, want = out[True][:, :blocks(w.shape[0])], out[False][:, :blocks(w.shape[0])]
    # the rounding scales with the output before its clamp (this case's Clip bounds it to 0.75)
    scale = np.abs(conv_mod.conv_reference(inputs, {**attrs, "activation": ""})[0]).max()
    assert np.abs(got - want).max() <= BOUND * max(scale, 1.0) * np.sqrt(x.shape[1])


@pytest.mark.parametrize("case", ["28x28-batch2", "14x14-partial-blocks"])
def test_fused_chunks_dealt_to_workers_equal_the_calling_threads(case, monkeypatch):
    """On two threads each worker claims chunks (or takes every other one) with its own V and M:
    every chunk makes the same operations as on one thread, so the claimed outputs are equal bit for
    bit."""
    import numba
    monkeypatch.setattr(conv_mod, "_MICRO_SERIAL_MACS", 0)
    monkeypatch.setattr(wb, "FUSED_MIN_CHUNKS_PER_WORKER", 0)       # fused at any chunk count
    inputs, attrs = make(CASES[case])
    x, w, b = inputs
    nb = conv_mod.blocked_output(attrs, x.shape, w.shape)
    plan = conv_mod._Plan(attrs, x.shape, w.shape, True, True)
    conv = wb.BlockedWinograd4Conv(w, plan)
    assert conv.fused
    xb = to_blocked(x)
    out = []
    for threads, pool in ((1, "workers"), (2, "workers"), (2, "dealt")):
        monkeypatch.setattr(wb, "FUSED_POOL", pool)      # chunks claimed one by one, or dealt in turn
        prev = numba.get_num_threads()
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        try:
            y = np.full((x.shape[0], nb) + plan.out_shape[2:] + (VL,), np.nan, np.float32)
            with holding(numba.get_num_threads()):        # what the kernels split by: Numba's count now
                calls = conv.calls(xb, y, b, plan)
            pooled = wb._fused_pool if pool == "workers" else wb._fused_pool_dealt
            assert calls[0][0] is (pooled if numba.get_num_threads() > 1 else wb._fused)
            for f, a in calls:
                f(*a)
            out.append(y[:, :blocks(w.shape[0])])
        finally:
            numba.set_num_threads(prev)
    assert np.array_equal(out[0], out[1])
    # the dealt loop (a benchmark alternative) is compiled apart: fast-math may round it otherwise
    np.testing.assert_allclose(out[2], out[0], rtol=0, atol=1e-5 * max(1.0, float(np.abs(out[0]).max())))


def test_few_chunks_per_worker_take_the_stages(monkeypatch):
    """With fewer chunks than FUSED_MIN_CHUNKS_PER_WORKER per worker the three stages run on the
    pool instead (each fused worker would read all of U), on one thread the fused loop."""
    import numba
    monkeypatch.setattr(conv_mod, "_MICRO_SERIAL_MACS", 0)
    inputs, attrs = make(CASES["14x14-partial-blocks"])
    x, w, b = inputs
    plan = conv_mod._Plan(attrs, x.shape, w.shape, True, True)
    conv = wb.BlockedWinograd4Conv(w, plan)
    n_chunks = -(-conv.th * conv.tw // conv.ct)
    y = np.empty((1, conv_mod.blocked_output(attrs, x.shape, w.shape)) + plan.out_shape[2:] + (VL,), np.float32)
    prev = numba.get_num_threads()
    try:
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = numba.get_num_threads() == 2
        for least in (0, n_chunks // 2 + 1, wb.FUSED_MIN_CHUNKS_PER_WORKER):
            monkeypatch.setattr(wb, "FUSED_MIN_CHUNKS_PER_WORKER", least)
            fused = n_chunks >= least * 2
            first = conv.calls(to_blocked(x), y, b, plan)[0][0]
            assert first is (wb._fused if not two else wb._fused_pool if fused else wb._inputs_pool), least
    finally:
        numba.set_num_threads(prev)
