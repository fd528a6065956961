"""Transformer ops (LayerNormalization, Erf, Gelu, Split, Gather, ScaledDotProductAttention): fast
kernels vs the NumPy references on several shapes, infer() vs kernel shapes, MACs, shape errors."""
from __future__ import annotations

import numpy as np
import pytest

from haste_edge.ops.registry import get

RNG = np.random.default_rng(0)


def randn(*shape, scale=1.0):
    return (scale * RNG.standard_normal(shape)).astype(np.float32)


def run_fast(op, inputs, attrs):
    spec = get(op)
    shapes = spec.infer([None if x is None else x.shape for x in inputs], attrs)
    if spec.view:
        return spec.kernel(inputs, attrs, None)
    bufs = [np.full(s, np.nan, np.float32) for s in shapes]   # stand-in for reused garbage
    outs = spec.kernel(inputs, attrs, bufs)
    assert all(o is b for o, b in zip(outs, bufs)), "must fill outs"
    return outs


def check(op, inputs, attrs, rtol=1e-5, atol=1e-5):
    got = run_fast(op, inputs, attrs)
    want = get(op).reference(inputs, attrs)
    for g, w in zip(got, want):
        assert w.dtype == np.float32 and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


@pytest.mark.parametrize("shape,axis", [((2, 49, 96), -1), ((3, 4), 1), ((2, 3, 4, 5), 1), ((5,), 0),
                                        ((4, 300, 512), -1)])   # the last one runs the parallel kernel
def test_layer_norm(shape, axis):
    x = randn(*shape, scale=3.0) + 1.5
    norm = shape[axis % len(shape):]
    check("LayerNormalization", [x, randn(*norm), randn(*norm)], {"axis": axis, "epsilon": 1e-5})
    check("LayerNormalization", [x, randn(*norm), None], {"axis": axis, "epsilon": 1e-3})


def test_layer_norm_broadcast_scale_and_strided_input():
    x = randn(2, 6, 8).transpose(0, 2, 1)                   # non-contiguous view
    check("LayerNormalization", [x, randn(1, 6), randn(6)], {"axis": 1, "epsilon": 1e-5})


def test_layer_norm_bad_shapes():
    with pytest.raises(ValueError, match=r"LayerNormalization: Scale shape \(4,\) does not broadcast "
                                         r"to the normalised shape \(5,\)"):
        get("LayerNormalization").infer([(2, 5), (4,), (5,)], {"axis": -1, "epsilon": 1e-5})
    with pytest.raises(ValueError, match="LayerNormalization: axis 2 out of range for input shape"):
        get("LayerNormalization").infer([(2, 5), (5,), None], {"axis": 2, "epsilon": 1e-5})


@pytest.mark.parametrize("shape", [(7,), (2, 49, 192), (3, 200, 128)])
def test_erf_and_gelu(shape):
    x = randn(*shape, scale=2.5)
    check("Erf", [x], {}, rtol=1e-5, atol=1e-6)
    check("Gelu", [x], {"approximate": "none"}, rtol=1e-5, atol=1e-6)
    check("Gelu", [x], {"approximate": "tanh"}, rtol=1e-5, atol=1e-6)


def test_erf_approximation_bound_over_its_whole_range():
    """erf_gelu.py's vectorised erf (Taylor below |x| = 0.8, Abramowitz-Stegun 7.1.26 above) within
    2.5e-7 absolute and 3e-7 relative of float64 erf, both sides of the switch, out to +-1e4."""
    import math
    x = np.concatenate([np.linspace(-6, 6, 240001), [0.0, 1e-30, -1e-8, 0.8, -0.8, 0.7999999, 50.0, -1e4]])
    x = x.astype(np.float32)
    got = run_fast("Erf", [x], {})[0].astype(np.float64)
    want = np.array([math.erf(float(v)) for v in x])
    err = np.abs(got - want)
    assert err.max() < 2.5e-7 and (err / np.maximum(np.abs(want), 1e-300)).max() < 3e-7


@pytest.mark.parametrize("shape,axis,split", [((3, 2, 3, 5, 4), 0, [1, 1, 1]), ((2, 7), 1, [3, 0, 4]),
                                              ((6, 4), -2, [2, 4])])
def test_split_views(shape, axis, split):
    x = randn(*shape)
    got = run_fast("Split", [x], {"axis": axis, "split": split})
    assert all(np.shares_memory(g, x) for g in got if g.size)   # views, no copies
    for g, w in zip(got, get("Split").reference([x], {"axis": axis, "split": split})):
        np.testing.assert_array_equal(g, w)


def test_split_bad_parts():
    with pytest.raises(ValueError, match=r"Split: parts \[1, 1\] do not add up to dim 3"):
        get("Split").infer([(3, 4)], {"axis": 0, "split": [1, 1]})


@pytest.mark.parametrize("shape,axis,indices", [((3, 2, 4, 5), 0, 1), ((3, 2, 4, 5), 2, [[0, 3], [-1, 1]]),
                                                ((10,), 0, [0, -1, 4]), ((4, 6), 1, [])])
def test_gather(shape, axis, indices):
    check("Gather", [randn(*shape)], {"axis": axis, "indices": indices}, rtol=0, atol=0)


def test_gather_out_of_range():
    with pytest.raises(ValueError, match="Gather: indices .* out of range for dim 3"):
        get("Gather").infer([(3, 4)], {"axis": 0, "indices": [0, 3]})


@pytest.mark.parametrize("b,h,n,m,d,dv", [(1, 3, 49, 49, 32, 32), (2, 4, 5, 7, 8, 6), (1, 1, 1, 1, 1, 1),
                                          (2, 3, 98, 98, 32, 32)])
def test_attention(b, h, n, m, d, dv):
    q, k, v = randn(b, h, n, d, scale=2.0), randn(b, h, m, d, scale=2.0), randn(b, h, m, dv)
    attrs = {"scale": d ** -0.5}
    check("ScaledDotProductAttention", [q, k, v], attrs, rtol=1e-4, atol=1e-5)
    check("ScaledDotProductAttention", [q, k, v], {"scale": -0.3}, rtol=1e-4, atol=1e-5)
    assert get("ScaledDotProductAttention").macs([q.shape, k.shape, v.shape], None, attrs) == b * h * n * m * (d + dv)


def test_attention_strided_inputs_and_large_scores():
    qkv = randn(3, 2, 3, 10, 8, scale=30.0)                 # scores ~1e3: exp would overflow unshifted
    q, k, v = qkv[0], qkv[1].transpose(0, 1, 2, 3), qkv[2][:, :, ::-1]
    check("ScaledDotProductAttention", [q, k, v], {"scale": 1.0}, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shapes,match", [
    ([(2, 3, 4, 8), (2, 3, 4, 6), (2, 3, 4, 8)], "Q and K head dims differ"),
    ([(2, 3, 4, 8), (2, 3, 5, 8), (2, 3, 4, 8)], "K and V token counts differ"),
    ([(2, 3, 4, 8), (1, 3, 4, 8), (2, 3, 4, 8)], "batch and head dims differ"),
    ([(3, 4, 8), (3, 4, 8), (3, 4, 8)], "must be 4-D"),
])
def test_attention_bad_shapes(shapes, match):
    with pytest.raises(ValueError, match="ScaledDotProductAttention: Q .*" + match) as e:
        get("ScaledDotProductAttention").infer(shapes, {"scale": 1.0})
    assert "\n" not in str(e.value)
