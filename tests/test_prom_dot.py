"""The pointwise PromConv on int8 dot products (haste_edge/prom/dot.py) against the NumPy reference.

Where the CPU has AVX-512 VNNI these run the vpdpbusd tiles, elsewhere the plain-loop twins: the
same kernel and layouts, so every machine checks the packing, the +128 correction and the edges.
The sums are checked exactly (unit scales: the outputs are the int32 sums, all below 2^24), the
scaled outputs within 1e-6 relative (LLVM may fuse the epilogue's multiply and add).
"""
from __future__ import annotations

import numpy as np
import pytest

from haste_edge.ops.registry import OPS
from haste_edge.prom import dot
from haste_edge.prom.quantize import act_scale, int8_weights, inv_scale, quantize_act, ternary
from haste_edge.prom.reference import conv_accumulators, out_scale

# AVX2 without VNNI (dot.KIND "avx2") sums pairs in int16: exact for ternary weights only, which
# are the only ones it is given (dot.runs_on_dot)
INT8_EXACT = dot.KIND != "avx2"

CASES = [  # (N, C_in, C_out, P, weights)
    (1, 16, 24, 196, "ternary"),
    (2, 5, 6, 49, "ternary"),          # C_in and C_out not multiples of 4
    (1, 33, 13, 7, "int8"),
    (1, 4, 4, 1, "ternary"),           # one pixel
    (2, 96, 40, 64, "int8"),           # a whole tile of 64 pixels
    (1, 7, 9, 81, "ternary"),          # 64 + 17 pixels: a second tile of 2 vectors
    (1, 384, 8, 16, "int8"),           # a long sum (|sum| up to 384 * 127 * 127)
    (1, 300, 8, 20, "ternary"),        # 75 quads: two int16 runs on AVX2
]


def _case(n, c_in, c_out, p, kind, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, c_in, p)) * 2).astype(np.float32)
    w = rng.standard_normal((c_out, c_in)).astype(np.float32)
    codes, w_scale = ternary(w) if kind == "ternary" else int8_weights(w)
    return x, codes.reshape(c_out, c_in), w_scale, rng.standard_normal(c_out).astype(np.float32)


def _want(x, codes, w_scale, bias, xs, lo, hi):
    attrs = dict(kernel_shape=[1, 1], strides=[1, 1], dilations=[1, 1], pads=[0] * 4, group=1, x_scale=xs)
    n, c_in, p = x.shape
    acc = conv_accumulators(x.reshape(n, c_in, p, 1), codes[:, :, None, None], attrs).reshape(n, -1, p)
    y = acc.astype(np.float32) * out_scale(xs, w_scale)[None, :, None] + bias[None, :, None]
    return np.minimum(np.maximum(y, np.float32(lo)), np.float32(hi))


@pytest.mark.parametrize("chunks", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=[f"n{c[0]}-c{c[1]}-o{c[2]}-p{c[3]}-{c[4]}" for c in CASES])
def test_dot_pointwise_equals_reference(case, chunks):
    if case[-1] == "int8" and not INT8_EXACT:
        pytest.skip("int8 weights do not run on AVX2's int16 pair sums")
    x, codes, w_scale, bias = _case(*case, seed=sum(case[:4]))
    n, c_in, p = x.shape
    xs = act_scale(np.abs(x).max() * 0.7)                  # some codes clamp at +-127
    w4, corr, kq = dot.pack_weights(codes)
    panel = np.zeros(dot.panel_size(c_in, p), np.uint8)
    y = np.full((n, codes.shape[0], p), np.nan, np.float32)
    lo, hi = np.float32(-1.5), np.float32(6.0)
    run = dot.dot_pointwise_parallel if chunks > 1 else dot.dot_pointwise
    run(x, inv_scale(xs), panel, w4, kq, corr, out_scale(xs, w_scale), bias, lo, hi, chunks, y)
    want = _want(x, codes, w_scale, bias, xs, lo, hi)
    assert np.abs(y - want).max() <= 1e-6 * max(1.0, float(np.abs(want).max()))
    c_out, inf = codes.shape[0], np.float32(np.inf)         # the sums themselves, exactly
    run(x, inv_scale(xs), panel, w4, kq, corr, np.ones(c_out, np.float32), np.zeros(c_out, np.float32), -inf, inf,
        chunks, y)
    attrs = dict(kernel_shape=[1, 1], strides=[1, 1], dilations=[1, 1], pads=[0] * 4, group=1, x_scale=xs)
    acc = conv_accumulators(x.reshape(n, c_in, p, 1), codes[:, :, None, None], attrs).reshape(n, -1, p)
    assert np.array_equal(y, acc.astype(np.float32))


def test_panel_holds_codes_plus_128_four_channels_a_pixel():
    x = (np.random.default_rng(3).standard_normal((1, 6, 20)) * 3).astype(np.float32)
    x[0, 0, :3] = [0.5 * 4 / 127, 1.5 * 4 / 127, -2.5 * 4 / 127]      # ties round to even
    xs = act_scale(4.0)
    panel = np.full(dot.panel_size(6, 20), 7, np.uint8)
    dot.dot_pointwise(x, inv_scale(xs), panel, *dot.pack_weights(np.ones((1, 6), np.int8))[:1],
                      2, np.zeros(1, np.int32), np.ones(1, np.float32), np.zeros(1, np.float32),
                      np.float32(-np.inf), np.float32(np.inf), 1, np.empty((1, 1, 20), np.float32))
    got = panel.reshape(2, 32, 4)                              # [C_in / 4][P rounded to 16][4]
    codes = quantize_act(x[0], xs).astype(np.int32) + 128      # (6, 20)
    assert np.array_equal(got[0, :20].T, codes[:4]) and np.array_equal(got[1, :20, :2].T, codes[4:])
    assert (got[1, :20, 2:] == 128).all() and (got[:, 20:] == 128).all()   # no channel, no pixel: code 0


def test_pack_weights_pads_to_whole_tiles_and_corrects_the_offset():
    codes = np.array([[1, -1, 0, 1, 1], [0, 0, -1, -1, 1]], np.int8)
    w4, corr, kq = dot.pack_weights(codes)
    assert kq == 2 and w4.dtype == np.int32 and w4.size == 4 * 2        # 4 channels a tile, 2 quads
    assert np.array_equal(w4.view(np.int8).reshape(4, 8)[:2, :5], codes)
    assert not w4.view(np.int8).reshape(4, 8)[:, 5:].any() and not w4.view(np.int8).reshape(4, 8)[2:].any()
    assert list(corr) == [128 * 2, 128 * -1]


def test_prom_conv_runs_pointwise_layers_on_dot_products_where_the_cpu_has_them():
    x, codes, w_scale, bias = _case(1, 24, 40, 49, "ternary", seed=0)
    attrs = dict(kernel_shape=[1, 1], strides=[1, 1], dilations=[1, 1], pads=[0] * 4, group=1,
                 activation="Clip", clip_min=0.0, clip_max=6.0, x_scale=act_scale(4.0), weights="ternary")
    from haste_edge.prom.ops import prepared_conv
    x4 = x.reshape(1, 24, 7, 7)
    assert prepared_conv([x4, codes[:, :, None, None], w_scale, bias], attrs).dot == dot.DOT
    got = OPS["PromConv"].kernel([x4, codes[:, :, None, None], w_scale, bias], attrs)[0]
    want = _want(x, codes, w_scale, bias, attrs["x_scale"], 0.0, 6.0)
    assert np.abs(got.reshape(1, 40, 49) - want).max() <= 1e-6 * max(1.0, float(np.abs(want).max()))


@pytest.mark.parametrize("sign", [1, -1])
def test_dot_sums_at_their_bounds_are_exact(sign):
    """Every code at +-127 and every weight +-1 over 1000 input channels: the largest pair sums
    (2 x 255 on AVX2) in the longest int16 runs, four runs and a part."""
    x = np.full((1, 1000, 16), 10.0 * sign, np.float32)
    codes = np.ones((4, 1000), np.int8) * np.array([1, -1, 1, -1], np.int8)[:, None]
    xs = act_scale(10.0)
    w4, corr, kq = dot.pack_weights(codes)
    y = np.empty((1, 4, 16), np.float32)
    inf = np.float32(np.inf)
    dot.dot_pointwise(x, inv_scale(xs), np.zeros(dot.panel_size(1000, 16), np.uint8), w4, kq, corr,
                      np.ones(4, np.float32), np.zeros(4, np.float32), -inf, inf, 1, y)
    assert np.array_equal(y[0, :, 0], np.float32(sign * 1000 * 127) * np.array([1, -1, 1, -1], np.float32))
    assert (y == y[:, :, :1]).all()
