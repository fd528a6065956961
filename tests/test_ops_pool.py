"""MaxPool, AveragePool, GlobalAveragePool: fast kernels vs the NumPy references (strides,
dilations, asymmetric pads, ceil_mode, count_include_pad, ragged sizes, batch 1 and 3,
non-contiguous input), the references vs onnx's ReferenceEvaluator, infer() vs kernel
shapes, and shape errors.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from haste_edge.ops import pool  # noqa: F401  (importing registers the ops)
from haste_edge.ops.registry import get

RNG = np.random.default_rng(0)

# (N, C, H, W, kernel, strides, dilations, pads [t, l, b, r], ceil_mode)
CASES = {
    "2x2-s2": (1, 3, 8, 8, (2, 2), (2, 2), (1, 1), [0, 0, 0, 0], 0),
    "3x3-s2-p1-batch3": (3, 2, 9, 7, (3, 3), (2, 2), (1, 1), [1, 1, 1, 1], 0),
    "asym-ragged-ceil": (1, 2, 10, 9, (3, 2), (2, 3), (1, 1), [1, 0, 2, 1], 1),
    "dilation2-ceil": (2, 2, 11, 10, (3, 3), (1, 2), (2, 2), [2, 1, 1, 0], 1),
    "ceil-overhang": (1, 1, 5, 5, (2, 2), (2, 2), (1, 1), [0, 0, 0, 0], 1),
    "ceil-last-window-dropped": (1, 2, 5, 5, (2, 2), (2, 2), (1, 1), [1, 1, 1, 1], 1),
}

# Cases onnx.reference computes as ONNX specifies: it pads ceil_mode overhang partly at the
# *begin* side, which shifts every window once the overhang reaches 2 or more.
ONNX_CASES = ["2x2-s2", "3x3-s2-p1-batch3", "asym-ragged-ceil", "ceil-overhang", "ceil-last-window-dropped"]


def make(case):
    n, c, h, w, k, s, d, pads, ceil_mode = case
    attrs = dict(kernel_shape=list(k), strides=list(s), dilations=list(d), pads=list(pads), ceil_mode=ceil_mode)
    return RNG.standard_normal((n, c, h, w)).astype(np.float32), attrs


def run_fast(op, x, attrs):
    spec = get(op)
    shapes = spec.infer([x.shape], attrs)
    bufs = [np.full(s, np.nan, np.float32) for s in shapes]   # stand-in for reused garbage
    outs = spec.kernel([x], attrs, bufs)
    assert len(outs) == 1 and outs[0] is bufs[0], "must fill outs"
    return outs[0]


def check(op, x, attrs):
    got = run_fast(op, x, attrs)
    want = get(op).reference([x], attrs)[0]
    assert want.dtype == np.float32 and got.shape == want.shape   # infer() == reference shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def run_onnx(op, x, attrs):
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    return ReferenceEvaluator(model).run(None, {"x": x})[0]


@pytest.mark.parametrize("name", CASES)
def test_maxpool_matches_reference(name):
    check("MaxPool", *make(CASES[name]))


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("name", CASES)
def test_avgpool_matches_reference(name, count_include_pad):
    x, attrs = make(CASES[name])
    check("AveragePool", x, dict(attrs, count_include_pad=count_include_pad))


def test_non_contiguous_input():
    x, attrs = make(CASES["3x3-s2-p1-batch3"])
    view = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)   # same values, F-order planes
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(run_fast("MaxPool", view, attrs), run_fast("MaxPool", x, attrs))
    avg = dict(attrs, count_include_pad=0)
    np.testing.assert_array_equal(run_fast("AveragePool", view, avg), run_fast("AveragePool", x, avg))
    np.testing.assert_array_equal(run_fast("GlobalAveragePool", view, {}), run_fast("GlobalAveragePool", x, {}))


@pytest.mark.parametrize("shape", [(1, 8, 7, 7), (3, 4, 5, 6), (2, 3, 10)])
def test_global_avgpool_matches_reference(shape):
    check("GlobalAveragePool", RNG.standard_normal(shape).astype(np.float32), {})


@pytest.mark.parametrize("name", ONNX_CASES)
def test_references_match_onnx(name):
    x, attrs = make(CASES[name])
    np.testing.assert_allclose(get("MaxPool").reference([x], attrs)[0], run_onnx("MaxPool", x, attrs), rtol=1e-6)
    for cip in (0, 1):
        a = dict(attrs, count_include_pad=cip)
        np.testing.assert_allclose(get("AveragePool").reference([x], a)[0], run_onnx("AveragePool", x, a),
                                   rtol=1e-5, atol=1e-6)


def test_global_reference_matches_onnx():
    x = RNG.standard_normal((2, 3, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(get("GlobalAveragePool").reference([x], {})[0],
                               run_onnx("GlobalAveragePool", x, {}), rtol=1e-5, atol=1e-6)


def test_ceil_mode_output_sizes():
    # hand-computed: 5 wide, k2 s2 -> floor 2 / ceil 3 windows; 5 wide, k2 s2 pads 1+1: ceil
    # gives 4, but the 4th would start at padded position 6, in the end padding: dropped -> 3
    infer = get("MaxPool").infer
    base = dict(kernel_shape=[2, 2], strides=[2, 2], dilations=[1, 1], pads=[0, 0, 0, 0])
    assert infer([(1, 1, 5, 5)], dict(base, ceil_mode=0)) == [(1, 1, 2, 2)]
    assert infer([(1, 1, 5, 5)], dict(base, ceil_mode=1)) == [(1, 1, 3, 3)]
    assert infer([(1, 1, 5, 5)], dict(base, pads=[1, 1, 1, 1], ceil_mode=1)) == [(1, 1, 3, 3)]


def test_infer_errors():
    attrs = dict(kernel_shape=[5, 5], strides=[1, 1], dilations=[1, 1], pads=[0, 0, 0, 0], ceil_mode=0)
    with pytest.raises(ValueError):
        get("MaxPool").infer([(1, 2, 3, 3)], attrs)                # window larger than the input
    with pytest.raises(ValueError):
        get("AveragePool").infer([(2, 3, 8)], dict(attrs, count_include_pad=0))   # not 4-D
    with pytest.raises(ValueError):
        get("GlobalAveragePool").infer([(2, 3)], {})
    assert get("GlobalAveragePool").infer([(2, 3, 5, 4)], {}) == [(2, 3, 1, 1)]
