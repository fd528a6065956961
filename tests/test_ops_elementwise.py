"""Activation, binary and BatchNormalization ops.

For each op: the fast kernel matches the NumPy reference (serial and parallel sizes,
broadcasting, non-contiguous inputs), the reference matches onnx's own ReferenceEvaluator
on a one-node model (so the oracle itself is checked), infer() matches the kernel's
output shapes, and bad shapes raise ValueError naming them.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from haste_edge.ops import activation, binary, norm  # noqa: F401  (importing registers the ops)
from haste_edge.ops.registry import get

RNG = np.random.default_rng(0)
LARGE = (2, 16, 64, 64)   # big enough for the parallel Numba paths (checked below)


def randn(*shape, scale=3.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def run_fast(op, inputs, attrs):
    """Run the fast kernel the way the engine does and check it against infer()."""
    spec = get(op)
    shapes = spec.infer([None if x is None else x.shape for x in inputs], attrs)
    # NaN-filled buffers stand in for reused garbage: any element the kernel skips shows up.
    bufs = [np.full(s, np.nan, np.float32) for s in shapes]
    outs = spec.kernel(inputs, attrs, bufs)
    assert len(outs) == len(bufs) and all(o is b for o, b in zip(outs, bufs)), "must fill outs"
    return outs[0]


def check(op, inputs, attrs, rtol=1e-6, atol=1e-6):
    got = run_fast(op, inputs, attrs)
    want = get(op).reference(inputs, attrs)[0]
    assert want.dtype == np.float32 and want.shape == got.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def run_onnx(op, feeds, attrs=None, opset=17):
    """Run one ONNX node in onnx.reference. feeds: (name, array or None = absent input)."""
    node = helper.make_node(op, [n if a is not None else "" for n, a in feeds], ["y"],
                            **(attrs or {}))
    vis = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
           for n, a in feeds if a is not None]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([node], "g", vis, [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return ReferenceEvaluator(model).run(None, {n: a for n, a in feeds if a is not None})[0]


def noncontig(x):
    """A non-contiguous view holding the same values as a fresh array of x's shape."""
    big = np.empty(x.shape[:-1] + (2 * x.shape[-1],), np.float32) if x.ndim else None
    if big is None:
        return x
    big[..., ::2] = x
    return big[..., ::2]


def test_large_cases_reach_the_parallel_kernels():
    assert np.prod(LARGE) >= max(activation.PARALLEL_MIN, norm.PARALLEL_MIN)


# ---- activations --------------------------------------------------------------------

# op -> (canonical attrs, ONNX node attrs, extra ONNX inputs)
ACTIVATIONS = {
    "Relu": ({}, {}, []),
    "Clip": ({"min": -0.5, "max": 0.7}, {},
             [("lo", np.array(-0.5, np.float32)), ("hi", np.array(0.7, np.float32))]),
    "LeakyRelu": ({"alpha": 0.1}, {"alpha": 0.1}, []),
    "Sigmoid": ({}, {}, []),
    "HardSigmoid": ({"alpha": 0.3, "beta": 0.4}, {"alpha": 0.3, "beta": 0.4}, []),
    "HardSwish": ({}, {}, []),
    "Tanh": ({}, {}, []),
}
SHAPES = [(), (7,), (2, 3, 5, 7), LARGE]


@pytest.mark.parametrize("op", ACTIVATIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_activation_fast_matches_reference(op, shape):
    attrs = ACTIVATIONS[op][0]
    x = randn(*shape)
    check(op, [x], attrs)
    if x.ndim:
        check(op, [noncontig(x)], attrs)   # strided input
    if x.ndim == 4:
        check(op, [x.transpose(0, 2, 3, 1)], attrs)   # permuted input


@pytest.mark.parametrize("op", ACTIVATIONS)
def test_activation_reference_matches_onnx(op):
    attrs, onnx_attrs, extra = ACTIVATIONS[op]
    x = randn(2, 3, 4, 5)
    want = run_onnx(op, [("x", x)] + extra, onnx_attrs)
    np.testing.assert_allclose(get(op).reference([x], attrs)[0], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ACTIVATIONS)
def test_activation_special_values(op):
    # NaN propagates and +-inf saturate the same way in kernel and reference.
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, 100.0, -100.0], np.float32)
    with np.errstate(invalid="ignore"):   # HardSwish(-inf) = -inf * 0 = NaN, by the formula
        check(op, [x], ACTIVATIONS[op][0])


@pytest.mark.parametrize("lo,hi", [(None, 0.5), (-0.5, None), (None, None), (1.0, -1.0)])
def test_clip_bounds(lo, hi):
    x = randn(3, 50)
    check("Clip", [x], {"min": lo, "max": hi})
    feeds = [("x", x), ("lo", None if lo is None else np.array(lo, np.float32)),
             ("hi", None if hi is None else np.array(hi, np.float32))]
    want = run_onnx("Clip", feeds)   # min > max: everything becomes max
    np.testing.assert_allclose(get("Clip").reference([x], {"min": lo, "max": hi})[0], want)


PRELU_CASES = [  # (x shape, slope shape): per-channel, scalar, trailing, 2-D, parallel size
    ((2, 3, 4, 5), (3, 1, 1)),
    ((2, 3, 4, 5), (1,)),
    ((2, 3, 4, 5), (5,)),
    ((2, 3, 4, 5), (4, 1)),
    ((2, 3, 4, 5), (1, 3, 4, 5)),
    ((6, 3), (3,)),
    ((7,), (7,)),
    ((2, 32, 64, 64), (32, 1, 1)),
    ((2, 32, 64, 64), ()),
]


@pytest.mark.parametrize("xs,ss", PRELU_CASES, ids=str)
def test_prelu(xs, ss):
    x = randn(*xs)
    slope = (RNG.standard_normal(ss) * 0.5).astype(np.float32)
    check("PRelu", [x, slope], {})
    check("PRelu", [noncontig(x), slope], {})
    if x.size < 1000:
        np.testing.assert_allclose(get("PRelu").reference([x, slope], {})[0],
                                   run_onnx("PRelu", [("x", x), ("slope", slope)]), rtol=1e-6)


def test_prelu_bad_slope():
    with pytest.raises(ValueError, match=r"PRelu.*\(3,\).*\(2, 3, 4, 5\)"):
        get("PRelu").infer([(2, 3, 4, 5), (3,)], {})
    with pytest.raises(ValueError, match="PRelu"):
        get("PRelu").infer([(3,), (2, 3)], {})


# ---- binary -------------------------------------------------------------------------

BINARY_SHAPES = [
    ((2, 3, 4, 5), (2, 3, 4, 5)),
    ((2, 3, 4, 5), (5,)),
    ((2, 3, 4, 5), (3, 1, 1)),
    ((3, 1, 1), (2, 3, 4, 5)),          # the weight may come first
    ((1, 3, 1, 5), (2, 1, 4, 1)),       # both sides broadcast
    ((), (2, 3)),
    ((4, 1), (1, 4)),
    (LARGE, LARGE),
]
BINARY_OPS = ["Add", "Sub", "Mul", "Div"]


def _operands(sa, sb):
    a = randn(*sa)
    # Keep divisors away from zero so Div compares values, not overflow.
    b = (np.sign(randn(*sb)) * RNG.uniform(0.5, 2.0, sb)).astype(np.float32)
    return a, b


@pytest.mark.parametrize("op", BINARY_OPS)
@pytest.mark.parametrize("sa,sb", BINARY_SHAPES, ids=str)
def test_binary_fast_matches_reference(op, sa, sb):
    a, b = _operands(sa, sb)
    check(op, [a, b], {})
    if a.ndim and b.ndim:
        check(op, [noncontig(a), noncontig(b)], {})
    if a.ndim == 4 and a.shape == b.shape:
        check(op, [a.transpose(0, 1, 3, 2), b.transpose(0, 1, 3, 2)], {})


@pytest.mark.parametrize("op", BINARY_OPS)
@pytest.mark.parametrize("sa,sb", BINARY_SHAPES[:5], ids=str)
def test_binary_reference_matches_onnx(op, sa, sb):
    a, b = _operands(sa, sb)
    want = run_onnx(op, [("a", a), ("b", b)])
    np.testing.assert_allclose(get(op).reference([a, b], {})[0], want, rtol=1e-6)


@pytest.mark.parametrize("op", BINARY_OPS)
def test_binary_not_broadcastable(op):
    with pytest.raises(ValueError, match=rf"{op}.*\(2, 3\).*\(4,\)"):
        get(op).infer([(2, 3), (4,)], {})


# ---- BatchNormalization -------------------------------------------------------------

def _bn_inputs(shape):
    c = shape[1]
    params = [RNG.uniform(0.5, 2.0, c), RNG.standard_normal(c), RNG.standard_normal(c),
              RNG.uniform(0.1, 3.0, c)]   # scale, B, mean, var (var > 0)
    return [randn(*shape, scale=1.0)] + [p.astype(np.float32) for p in params]


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 5), (2, 4, 6, 7), (1, 2, 3, 4, 5), LARGE],
                         ids=str)
@pytest.mark.parametrize("eps", [1e-5, 1e-3])
def test_batchnorm_fast_matches_reference(shape, eps):
    inputs = _bn_inputs(shape)
    check("BatchNormalization", inputs, {"epsilon": eps}, rtol=1e-5, atol=1e-5)
    x = inputs[0]
    check("BatchNormalization", [noncontig(x)] + inputs[1:], {"epsilon": eps}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 3), (2, 4, 6, 7)], ids=str)
def test_batchnorm_reference_matches_onnx(shape):
    inputs = _bn_inputs(shape)
    names = ["x", "scale", "b", "mean", "var"]
    want = run_onnx("BatchNormalization", list(zip(names, inputs)), {"epsilon": 1e-3}, opset=15)
    got = get("BatchNormalization").reference(inputs, {"epsilon": 1e-3})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_batchnorm_bad_shapes():
    infer = get("BatchNormalization").infer
    with pytest.raises(ValueError, match=r"rank >= 2.*\(5,\)"):
        infer([(5,), (5,), (5,), (5,), (5,)], {"epsilon": 1e-5})
    with pytest.raises(ValueError, match=r"var shape \(4,\).*\(2, 3, 8, 8\)"):
        infer([(2, 3, 8, 8), (3,), (3,), (3,), (4,)], {"epsilon": 1e-5})
