"""Reduction (ReduceMean, Softmax) and shape ops.

For each op: the fast kernel matches the NumPy reference (several shapes, negative axes,
non-contiguous inputs), the reference matches onnx's own ReferenceEvaluator on a one-node
model in the opset whose form the canonical attrs mirror, infer() matches the kernel's
output shapes, view ops really return views, and bad shapes raise a clear ValueError.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from haste_edge.ops import reduce as reduce_ops, shape as shape_ops  # noqa: F401  (registers)
from haste_edge.ops.registry import get

RNG = np.random.default_rng(1)


def randn(*dims, scale=3.0):
    return (RNG.standard_normal(dims) * scale).astype(np.float32)


def i64(v):
    return np.array(v, np.int64)


def run_fast(op, inputs, attrs):
    """Run the fast kernel the way the engine does and check it against infer()."""
    spec = get(op)
    shapes = spec.infer([x.shape for x in inputs], attrs)
    if spec.view:
        outs = spec.kernel(inputs, attrs, None)
    else:
        # NaN-filled buffers stand in for reused garbage: any element the kernel skips shows up.
        bufs = [np.full(s, np.nan, np.float32) for s in shapes]
        outs = spec.kernel(inputs, attrs, bufs)
        assert all(o is b for o, b in zip(outs, bufs)), "must fill the given buffers"
    assert [o.shape for o in outs] == [tuple(s) for s in shapes]
    return outs[0]


def check(op, inputs, attrs, rtol=1e-6, atol=1e-7):
    got = run_fast(op, inputs, attrs)
    want = get(op).reference(inputs, attrs)[0]
    assert want.dtype == np.float32 and want.shape == got.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    return got


def run_onnx(op, feeds, attrs=None, opset=17, ort=False):
    """Run one ONNX node in onnx.reference (or onnxruntime where onnx.reference falls short).

    feeds: (name, array or None = absent input).
    """
    node = helper.make_node(op, [n if a is not None else "" for n, a in feeds], ["y"],
                            **(attrs or {}))
    vis = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
           for n, a in feeds if a is not None]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([node], "g", vis, [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    feed = {n: a for n, a in feeds if a is not None}
    if ort:
        onnxruntime = pytest.importorskip("onnxruntime")
        model.ir_version = 8   # any IR version onnxruntime accepts for these opsets
        sess = onnxruntime.InferenceSession(model.SerializeToString(),
                                            providers=["CPUExecutionProvider"])
        return sess.run(None, feed)[0]
    return ReferenceEvaluator(model).run(None, feed)[0]


def noncontig(x):
    """A non-contiguous view holding the same values as x."""
    big = np.empty(x.shape[:-1] + (2 * x.shape[-1],), np.float32)
    big[..., ::2] = x
    return big[..., ::2]


def matches_onnx(op, inputs, attrs, feeds, onnx_attrs=None, opset=17, ort=False):
    want = run_onnx(op, feeds, onnx_attrs, opset, ort)
    got = get(op).reference(inputs, attrs)[0]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ---- ReduceMean ---------------------------------------------------------------------

MEAN_CASES = [  # (shape, axes, keepdims, noop_with_empty_axes)
    ((2, 3, 8, 9), [2, 3], 1, 0),     # global average pooling / squeeze-excite
    ((2, 3, 8, 9), [-1, -2], 0, 0),
    ((2, 3, 8, 9), [1], 1, 0),
    ((2, 3, 8, 9), [0, 2], 0, 0),
    ((2, 3, 8, 9), None, 1, 0),       # no axes: all of them
    ((2, 3, 8, 9), None, 0, 0),
    ((2, 3, 8, 9), None, 1, 1),       # no axes + noop: identity
    ((5, 7), [-1], 0, 0),
    ((4, 64, 32, 32), [2, 3], 1, 0),
]


@pytest.mark.parametrize("shape,axes,keepdims,noop", MEAN_CASES, ids=str)
def test_reduce_mean(shape, axes, keepdims, noop):
    attrs = {"axes": axes, "keepdims": keepdims, "noop_with_empty_axes": noop}
    x = randn(*shape)
    check("ReduceMean", [x], attrs, rtol=1e-5, atol=1e-6)
    check("ReduceMean", [noncontig(x)], attrs, rtol=1e-5, atol=1e-6)
    if x.size < 10000:  # opset 18: axes is an optional input
        feeds = [("x", x)] + ([("axes", i64(axes))] if axes is not None else [])
        matches_onnx("ReduceMean", [x], attrs, feeds,
                     {"keepdims": keepdims, "noop_with_empty_axes": noop}, opset=18)


def test_reduce_mean_bad_axes():
    infer = get("ReduceMean").infer
    with pytest.raises(ValueError, match=r"ReduceMean.*axis 4.*\(2, 3, 4, 5\)"):
        infer([(2, 3, 4, 5)], {"axes": [4], "keepdims": 1, "noop_with_empty_axes": 0})
    with pytest.raises(ValueError, match="ReduceMean.*repeated"):
        infer([(2, 3, 4, 5)], {"axes": [1, -3], "keepdims": 1, "noop_with_empty_axes": 0})


# ---- Softmax ------------------------------------------------------------------------

SOFTMAX_CASES = [  # (shape, axis, coerce_2d)
    ((3, 10), -1, 0),
    ((2, 3, 4, 5), 1, 0),           # a middle axis: strided lines
    ((2, 3, 4, 5), -2, 0),
    ((2, 3, 4, 5), 0, 0),
    ((2, 3, 4, 5), 1, 1),           # opset < 13: softmax over dims 1.. flattened
    ((2, 3, 4, 5), -1, 1),
    ((2, 3, 4, 5), 0, 1),
    ((1, 1000), -1, 0),             # a classifier head
    ((64, 1000), -1, 0),            # large: the NumPy path
    ((2, 21, 64, 64), 1, 0),        # large, channel softmax (segmentation)
    ((2, 3, 40, 50), 1, 1),
]


def test_softmax_cases_cover_both_paths():
    # Up to reduce_ops.SMALL elements the kernel runs in Numba, above it in NumPy.
    sizes = [np.prod(c[0]) for c in SOFTMAX_CASES]
    assert min(sizes) <= reduce_ops.SMALL < max(sizes)


@pytest.mark.parametrize("shape,axis,coerce", SOFTMAX_CASES, ids=str)
def test_softmax(shape, axis, coerce):
    attrs = {"axis": axis, "coerce_2d": coerce}
    x = randn(*shape, scale=10.0)
    got = check("Softmax", [x], attrs, rtol=1e-5, atol=1e-7)
    check("Softmax", [noncontig(x)], attrs, rtol=1e-5, atol=1e-7)
    if x.size < 20000:
        # onnx.reference implements only the opset-13 Softmax (it ignores the opset-11
        # flattening), so the legacy form is checked against onnxruntime.
        matches_onnx("Softmax", [x], attrs, [("x", x)], {"axis": axis},
                     opset=11 if coerce else 13, ort=bool(coerce))
    else:
        o, n, i = reduce_ops._softmax_dims(shape, attrs)
        np.testing.assert_allclose(got.reshape(o, n, i).sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("reps", [1, 1000], ids=["numba", "numpy"])
def test_softmax_stable_and_nan(reps):
    # Huge logits overflow a naive exp; subtracting the max keeps them exact. A NaN poisons
    # only its own line.
    x = np.array([[1000.0, 999.0, -1000.0], [-1e30, 0.0, 1e30], [np.nan, 1.0, 2.0]], np.float32)
    x = np.tile(x, (reps, 1))
    got = check("Softmax", [x], {"axis": 1, "coerce_2d": 0}, rtol=1e-6)
    assert np.isfinite(got[:2]).all() and np.isnan(got[2]).all()
    # The same along a middle axis: x.T puts the logits on axis 1 of (1, 3, lines).
    x3 = np.ascontiguousarray(x.T)[None]
    got = check("Softmax", [x3], {"axis": 1, "coerce_2d": 0}, rtol=1e-6)
    assert np.isfinite(got[..., :2]).all() and np.isnan(got[..., 2]).all()


def test_softmax_bad_axis():
    with pytest.raises(ValueError, match=r"Softmax.*axis 2.*\(3, 4\)"):
        get("Softmax").infer([(3, 4)], {"axis": 2, "coerce_2d": 0})


# ---- view ops: Flatten, Reshape, Squeeze, Unsqueeze, Identity -----------------------

def check_view(op, x, attrs):
    """Kernel == reference; for contiguous x the result must alias x (no copy)."""
    got = check(op, [x], attrs)
    if x.flags.c_contiguous:
        assert np.shares_memory(got, x), f"{op} copied a contiguous input"
    check(op, [noncontig(x)], attrs)   # may copy, must still be right
    return got


@pytest.mark.parametrize("axis", [0, 1, 2, 4, -1, -4])
def test_flatten(axis):
    x = randn(2, 3, 4, 5)
    check_view("Flatten", x, {"axis": axis})
    matches_onnx("Flatten", [x], {"axis": axis}, [("x", x)], {"axis": axis})


RESHAPE_CASES = [  # (input shape, target, allowzero)
    ((2, 3, 4, 5), [2, -1], 0),
    ((2, 3, 4, 5), [0, 0, -1], 0),       # 0 copies the input dim
    ((2, 3, 4, 5), [-1, 0, 20], 0),
    ((2, 3, 4, 5), [120], 0),
    ((2, 3, 4, 5), [1, 2, 3, 4, 5, 1], 0),
    ((0, 4), [4, 0], 1),                 # allowzero: 0 is a real empty dim
    ((2, 3, 4, 5), [0, 60], 1),
]


@pytest.mark.parametrize("shp,target,allowzero", RESHAPE_CASES, ids=str)
def test_reshape(shp, target, allowzero):
    attrs = {"shape": target, "allowzero": allowzero}
    x = randn(*shp)
    if x.size == 0 or 0 in target and allowzero:
        if x.size:
            with pytest.raises(ValueError, match="Reshape"):
                get("Reshape").infer([x.shape], attrs)
            return
        got = run_fast("Reshape", [x], attrs)
        assert got.shape == get("Reshape").reference([x], attrs)[0].shape == tuple(target)
    else:
        check_view("Reshape", x, attrs)
    matches_onnx("Reshape", [x], attrs, [("x", x), ("shape", i64(target))],
                 {"allowzero": allowzero})


@pytest.mark.parametrize("target,msg", [
    ([3, -1], r"Reshape.*\(10,\).*\(3, -1\)"),   # 10 elements don't split into rows of 3
    ([-1, -1], "more than one -1"),
    ([4, 4], "element counts"),
    ([0, 0, 10], "copies a dim"),
    ([-2, 5], "invalid dim"),
])
def test_reshape_bad(target, msg):
    with pytest.raises(ValueError, match=msg):
        get("Reshape").infer([(10,)], {"shape": target, "allowzero": 0})


@pytest.mark.parametrize("shp,axes", [((1, 3, 1, 5), [0]), ((1, 3, 1, 5), [-2, 0]),
                                      ((1, 3, 1, 5), None), ((2, 1), [1]), ((1, 1), None)],
                         ids=str)
def test_squeeze(shp, axes):
    x = randn(*shp)
    check_view("Squeeze", x, {"axes": axes})
    feeds = [("x", x)] + ([("axes", i64(axes))] if axes is not None else [])
    matches_onnx("Squeeze", [x], {"axes": axes}, feeds)


def test_squeeze_bad():
    with pytest.raises(ValueError, match=r"Squeeze: axis 1 of input shape \(1, 3\) is not 1"):
        get("Squeeze").infer([(1, 3)], {"axes": [1]})
    with pytest.raises(ValueError, match="Squeeze.*out of range"):
        get("Squeeze").infer([(1, 3)], {"axes": [2]})


@pytest.mark.parametrize("shp,axes", [((3, 4), [0]), ((3, 4), [-1]), ((3, 4), [0, 3]),
                                      ((3, 4), [1, -1]), ((3,), [0, 1, 2]), ((), [0])], ids=str)
def test_unsqueeze(shp, axes):
    x = randn(*shp)
    if x.ndim:
        check_view("Unsqueeze", x, {"axes": axes})
    else:
        check("Unsqueeze", [x], {"axes": axes})
    matches_onnx("Unsqueeze", [x], {"axes": axes}, [("x", x), ("axes", i64(axes))])


def test_unsqueeze_bad():
    with pytest.raises(ValueError, match=r"Unsqueeze.*repeated.*\(3, 4\)"):
        get("Unsqueeze").infer([(3, 4)], {"axes": [0, -4]})   # both are output axis 0
    with pytest.raises(ValueError, match="Unsqueeze.*axis 3.*out of range"):
        get("Unsqueeze").infer([(3, 4)], {"axes": [3]})


def test_identity():
    x = randn(2, 3)
    check_view("Identity", x, {})
    matches_onnx("Identity", [x], {}, [("x", x)])


# ---- Transpose, Concat, Pad ---------------------------------------------------------

@pytest.mark.parametrize("shp,perm", [((2, 3, 4, 5), [0, 2, 3, 1]), ((2, 3, 4, 5), [0, 3, 1, 2]),
                                      ((2, 3, 4, 5), None), ((3, 7), [1, 0]), ((5,), [0])],
                         ids=str)
def test_transpose(shp, perm):
    x = randn(*shp)
    check("Transpose", [x], {"perm": perm})
    check("Transpose", [noncontig(x)], {"perm": perm})
    matches_onnx("Transpose", [x], {"perm": perm}, [("x", x)],
                 {} if perm is None else {"perm": perm})


def test_transpose_bad_perm():
    with pytest.raises(ValueError, match=r"Transpose.*\[0, 0, 1\].*\(2, 3, 4\)"):
        get("Transpose").infer([(2, 3, 4)], {"perm": [0, 0, 1]})


@pytest.mark.parametrize("shapes,axis", [
    ([(2, 3, 4, 5), (2, 1, 4, 5), (2, 6, 4, 5)], 1),
    ([(2, 3, 4, 5), (2, 3, 4, 2)], -1),
    ([(1, 3), (4, 3)], 0),
    ([(1, 3), (1, 2)], -1),
    ([(5,)], 0),
], ids=str)
def test_concat(shapes, axis):
    xs = [randn(*s) for s in shapes]
    check("Concat", xs, {"axis": axis})
    check("Concat", [noncontig(x) for x in xs], {"axis": axis})
    matches_onnx("Concat", xs, {"axis": axis}, [(f"x{i}", x) for i, x in enumerate(xs)],
                 {"axis": axis})


def test_concat_bad():
    infer = get("Concat").infer
    with pytest.raises(ValueError, match=r"Concat.*\(2, 3\).*\(2, 3, 1\)"):
        infer([(2, 3), (2, 3, 1)], {"axis": 1})            # rank mismatch
    with pytest.raises(ValueError, match=r"Concat.*\(2, 3\).*\(3, 3\)"):
        infer([(2, 3), (3, 3)], {"axis": 1})               # other dim mismatch
    with pytest.raises(ValueError, match="Concat.*axis 2"):
        infer([(2, 3), (2, 3)], {"axis": 2})


PAD_CASES = [  # (shape, pads)
    ((1, 2, 3, 4), [0, 0, 1, 1, 0, 0, 1, 1]),
    ((1, 2, 3, 4), [0, 0, 2, 0, 0, 0, 0, 3]),        # asymmetric
    ((1, 2, 3, 4), [0, 0, -1, 1, 0, 0, 1, -2]),      # negative pads crop
    ((1, 2, 3, 4), [0, 1, 0, 0, 0, 2, 0, 0]),        # channel padding
    ((3, 4), [2, -4, 0, 1]),                          # crop a whole axis then pad it back
    ((3, 4), [0, 0, 0, 0]),
]


@pytest.mark.parametrize("shp,pads", PAD_CASES, ids=str)
@pytest.mark.parametrize("value", [0.0, -1.5])
def test_pad(shp, pads, value):
    attrs = {"pads": pads, "value": value, "mode": "constant"}
    x = randn(*shp)
    check("Pad", [x], attrs)
    check("Pad", [noncontig(x)], attrs)
    feeds = [("x", x), ("pads", i64(pads)), ("value", np.array(value, np.float32))]
    # onnx.reference's Pad passes negative pads to np.pad, which rejects them: use onnxruntime.
    matches_onnx("Pad", [x], attrs, feeds, {"mode": "constant"}, ort=min(pads) < 0)


def test_pad_bad():
    infer = get("Pad").infer
    with pytest.raises(ValueError, match=r"Pad: 2 pads.*\(3, 4\)"):
        infer([(3, 4)], {"pads": [1, 1], "value": 0.0, "mode": "constant"})
    with pytest.raises(ValueError, match="Pad.*below zero"):
        infer([(3, 4)], {"pads": [-2, 0, -2, 0], "value": 0.0, "mode": "constant"})
    with pytest.raises(ValueError, match="only mode 'constant'"):
        infer([(3, 4)], {"pads": [0, 0, 0, 0], "value": 0.0, "mode": "reflect"})
