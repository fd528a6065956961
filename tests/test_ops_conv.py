"""Conv: fast kernel vs the NumPy reference over every code path (group=1 wide and exact im2col,
im2row both GEMM orientations, 1x1 direct GEMM, depthwise channel-blocked and per plane, general
grouped), the reference vs
onnx's own ReferenceEvaluator, infer() vs kernel shapes, MACs, and shape errors.
"""
from __future__ import annotations

import numba
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from conv_cases import CASES, RNG, make, run_fast
from haste_edge import threads
from haste_edge.ops import conv as conv_mod
from haste_edge.ops.registry import get
from haste_edge.threads import numba_single_thread

def check(inputs, attrs):
    got = run_fast(inputs, attrs)
    want = conv_mod.conv_reference(inputs, attrs)[0]
    assert want.dtype == np.float32 and got.shape == want.shape   # infer() == reference shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.fixture(params=["auto", "blas"])
def conv_path(request, monkeypatch):
    """Each case under the default rule on one thread (windows on the microkernel) and with every
    conv on OpenBLAS (HASTE_EDGE_CONV=blas)."""
    if request.param == "blas":
        monkeypatch.setattr(conv_mod, "_AUTO", False)
        yield request.param
        return
    with numba_single_thread():
        yield request.param


@pytest.mark.parametrize("name", CASES)
def test_fast_matches_reference(name, conv_path):
    check(*make(CASES[name]))


@pytest.fixture
def blas_path(monkeypatch):
    monkeypatch.setattr(conv_mod, "_AUTO", False)


# the fast path each case is meant to exercise with HASTE_EDGE_CONV=blas (guards the routing thresholds)
PATHS = {"3x3": ("im2col", None), "small-plane-exact": ("im2col", None), "1x1": ("gemm", None), "1x1-batch2-ragged": ("gemm", None),
         "row-s2-asym-pads-batch3": ("im2row", False), "row-pixel-major-batch2": ("im2row", True),
         "row-dilation2": ("im2row", True), "row-ragged-kernel-strides": ("im2row", True),
         "1x1-s2-many-channels": ("im2col", None), "row-s2-4x4-96ch": ("im2row", False),
         "dw-plane": ("depthwise_blocked", None), "dw-plane-5x5-s2": ("depthwise_blocked", None),
         "dw-tiles-dilation2-asym": ("depthwise_blocked", None), "dw-plane-s3": ("depthwise_blocked", None),
         "dw-cl": ("depthwise_blocked", None), "dw-cl-mult2": ("depthwise_blocked", None)}


@pytest.mark.parametrize("name", ["3x3", "small-plane-exact", "row-s2-asym-pads-batch3", "grouped", "1x1-s2"])
def test_default_rule_puts_windows_on_the_microkernel_on_one_thread(name, monkeypatch):
    (x, w, _), attrs = make(CASES[name])
    with numba_single_thread():
        assert conv_mod._get_plan(attrs, x.shape, w.shape).path == "direct"
    if numba.config.NUMBA_NUM_THREADS > 1:        # more threads: plan made afresh
        prev = numba.get_num_threads()
        numba.set_num_threads(2)
        try:
            plan = conv_mod._get_plan(attrs, x.shape, w.shape)
            assert plan.path == "direct" and plan.micro_serial     # small: as on one thread, serially
            # new attrs dicts, each kept alive: the module cache is keyed by id, and a recycled id
            # of an equal dict would hand back the plan made under the other settings
            monkeypatch.setattr(conv_mod, "_MICRO_SERIAL_MACS", 0)  # one pool: larger ones in parallel
            one_pool = dict(attrs)
            plan = conv_mod._get_plan(one_pool, x.shape, w.shape)
            assert plan.path == "direct" and not plan.micro_serial
            monkeypatch.setattr(threads, "ONE_POOL", False)          # two pools: large ones on OpenBLAS
            monkeypatch.setattr(conv_mod, "_SERIAL_SMALL_MACS", 0)
            two_pools = dict(attrs)
            assert conv_mod._get_plan(two_pools, x.shape, w.shape).path != "direct"
        finally:
            numba.set_num_threads(prev)


def test_default_rule_pointwise_by_map_size():
    """On one thread pointwise convs on maps of 100+ pixels go to the microkernel, smaller ones to
    OpenBLAS; strided or padded 1x1 convs are not pointwise (the microkernel too)."""
    with numba_single_thread():
        for name, path in (("1x1", "gemm"), ("1x1-batch2-ragged", "direct"), ("1x1-s2", "direct"),
                           ("1x1-padded", "direct")):
            (x, w, _), attrs = make(CASES[name])
            assert conv_mod._get_plan(attrs, x.shape, w.shape).path == path, name


@pytest.mark.parametrize("name", PATHS)
def test_case_takes_its_path(name, blas_path):
    (x, w, _), attrs = make(CASES[name])
    plan = conv_mod._get_plan(attrs, x.shape, w.shape)
    path, pixel_major = PATHS[name]
    assert plan.path == path
    if path == "im2row":
        assert plan.pixel_major == pixel_major


@pytest.mark.parametrize("name", ["3x3", "1x1", "dw-cl", "dw-plane", "grouped", "row-s2-asym-pads-batch3",
                                  "row-pixel-major-batch2"])
def test_without_bias(name, conv_path):
    inputs, attrs = make(CASES[name], bias=False)
    check(inputs[:2], attrs)      # B absent from the node
    check(inputs, attrs)          # B present as None (optional input named "")


@pytest.mark.parametrize("name", ["s2-asym-pads-batch3", "row-s2-asym-pads-batch3", "row-pixel-major-batch2"])
def test_non_contiguous_input(name):
    inputs, attrs = make(CASES[name])
    x = inputs[0]
    big = np.zeros(x.shape[:3] + (2 * x.shape[3],), np.float32)
    big[..., 1::2] = x
    view = big[..., 1::2]
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(run_fast([view] + inputs[1:], attrs), run_fast(inputs, attrs))


def test_scratch_reuse_across_layers():
    """Layers of different sizes share the grow-only scratch; repeated runs must not drift."""
    layers = [make(CASES[n]) for n in ("small-plane-exact", "dilation2", "dw-cl", "3x3", "grouped",
                                       "row-pixel-major-batch2", "row-s2-4x4-96ch")]
    first = [run_fast(*layer) for layer in layers]
    for layer, want in zip(reversed(layers), reversed(first)):
        np.testing.assert_array_equal(run_fast(*layer), want)


@pytest.mark.parametrize("name", ["row-s2-asym-pads-batch3", "row-pixel-major-batch2"])
def test_new_weight_array_same_node(name, conv_path):
    """im2row and the microkernel pack W once per node and weight array (kept across calls);
    another array of the same shape for the node must be packed afresh."""
    inputs, attrs = make(CASES[name])
    check(inputs, attrs)
    plan = conv_mod._get_plan(attrs, inputs[0].shape, inputs[1].shape)
    packed = (lambda: plan.packed[1]) if conv_path == "blas" else (lambda: plan.micro.panels)
    first = packed()
    check(inputs, attrs)
    assert packed() is first                        # same array: no repacking per call
    inputs[1] = RNG.standard_normal(inputs[1].shape).astype(np.float32)
    check(inputs, attrs)
    inputs[1] = np.asfortranarray(inputs[1] * 2)    # non-contiguous W: copied per call, still right
    check(inputs, attrs)


def test_small_plane_keeps_caller_thread_count():
    """Small GEMM-path convs run their Numba kernels on one thread and must restore the count."""
    inputs, attrs = make(CASES["row-pixel-major-batch2"])
    prev = numba.get_num_threads()
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:
        want = numba.get_num_threads()
        assert conv_mod._get_plan(attrs, inputs[0].shape, inputs[1].shape).serial
        check(inputs, attrs)
        assert numba.get_num_threads() == want
    finally:
        numba.set_num_threads(prev)


def test_same_attrs_object_new_shape():
    """The per-node plan cache is keyed by the attrs object: a new input shape must replan."""
    inputs, attrs = make(CASES["3x3"])
    check(inputs, attrs)
    x2 = RNG.standard_normal((2, 3, 6, 5)).astype(np.float32)
    check([x2] + inputs[1:], attrs)
    attrs["activation"] = "Relu"      # and an edited dict must not reuse the stale plan
    check([x2] + inputs[1:], attrs)


def onnx_conv(inputs, attrs):
    """Our Conv (+ the fused activation as its own node) run by onnx.reference."""
    x, w, b = inputs
    conv_attrs = {k: attrs[k] for k in ("kernel_shape", "strides", "dilations", "pads", "group")}
    act = attrs["activation"]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c" if act else "y"], **conv_attrs)]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    if act == "Relu":
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    elif act == "Clip":
        inits += [numpy_helper.from_array(np.float32(attrs["clip_min"]), "lo"),
                  numpy_helper.from_array(np.float32(attrs["clip_max"]), "hi")]
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return ReferenceEvaluator(model).run(None, {"x": x})[0]


@pytest.mark.parametrize("name", ["s2-asym-pads-batch3", "ragged-kernel-strides", "s2-dilation2",
                                  "dw-cl-s2-dilation2", "dw-plane-mult2", "grouped", "row-dilation2"])
def test_reference_matches_onnx(name):
    inputs, attrs = make(CASES[name])
    np.testing.assert_allclose(conv_mod.conv_reference(inputs, attrs)[0], onnx_conv(inputs, attrs),
                               rtol=1e-4, atol=1e-4)


def test_macs():
    spec = get("Conv")
    attrs = dict(kernel_shape=[3, 3], strides=[1, 1], dilations=[1, 1], pads=[1, 1, 1, 1], group=2,
                 activation="", clip_min=None, clip_max=None)
    shapes = [(2, 4, 10, 10), (6, 2, 3, 3), (6,)]
    out = spec.infer(shapes, attrs)
    assert out == [(2, 6, 10, 10)]
    # N * C_out * H_out * W_out * (C_in / group) * kh * kw
    assert spec.macs(shapes, out, attrs) == 2 * 6 * 10 * 10 * 2 * 3 * 3


def test_infer_rejects_channel_mismatch():
    attrs = dict(kernel_shape=[3, 3], strides=[1, 1], dilations=[1, 1], pads=[0, 0, 0, 0], group=2,
                 activation="", clip_min=None, clip_max=None)
    spec = get("Conv")
    with pytest.raises(ValueError, match="channel"):
        spec.infer([(1, 5, 8, 8), (4, 2, 3, 3), None], attrs)     # 5 channels, W wants 2 * 2
    with pytest.raises(ValueError, match="channel"):
        spec.infer([(1, 4, 8, 8), (4, 4, 3, 3), None], attrs)     # group 2: 2 channels each, W has 4
    with pytest.raises(ValueError):
        spec.infer([(1, 4, 2, 2), (4, 2, 3, 3), None], attrs)     # kernel larger than the input


def test_registered_attrs():
    assert set(get("Conv").attrs) == {"kernel_shape", "strides", "dilations", "pads", "group",
                                      "activation", "clip_min", "clip_max"}


@pytest.mark.parametrize("per_plane", [False, True])     # the blocked kernel's scratch, the plane kernel's
def test_depthwise_buffers_respect_the_memory_limit(per_plane, monkeypatch):
    from haste_edge import limits, scratch
    from haste_edge.errors import InputError
    if per_plane:
        monkeypatch.setattr(conv_mod, "_DW_BLOCK_MAX_BYTES", 0)
    monkeypatch.setattr(scratch._tls, "bufs", {}, raising=False)      # nothing grown by earlier tests
    stride = 1
    x = np.zeros((1, 8, 300, 300), np.float32)
    w = np.zeros((8, 1, 3, 3), np.float32)
    attrs = dict(kernel_shape=[3, 3], strides=[stride, stride], dilations=[1, 1], pads=[1, 1, 1, 1], group=8)
    limits.set_max_bytes(1 << 20)
    try:
        with pytest.raises(InputError, match="over the memory limit of 1.0 MiB"):
            conv_mod.conv([x, w, None], attrs)
    finally:
        limits.set_max_bytes(None)
    assert conv_mod.conv([x, w, None], attrs)[0].shape[2] == (300 - 1) // stride + 1


@pytest.mark.parametrize("h,w", [(1, 1), (5, 7), (28, 28), (9, 40), (3, 70)])
@pytest.mark.parametrize("s,pt,pl", [(1, 1, 1), (1, 0, 3), (2, 1, 1), (2, 0, 2), (3, 2, 1)])
def test_split_phases_matches_padding_and_slicing(h, w, s, pt, pl):
    """The stride phases (masked vector runs on x86, loops elsewhere) against NumPy: pad, then
    take every s-th row and column from each phase's offset; every cell written, nothing past."""
    from haste_edge.ops.window import split_phases
    x = RNG.standard_normal((h, w)).astype(np.float32)
    rows, wq = (h + pt + 2) // s + 1, (w + pl + 2) // s + 1
    padded = np.zeros((rows * s + s, wq * s + s), np.float32)
    padded[pt:pt + h, pl:pl + w] = x
    ph = np.full((s, s, rows * wq + 5), np.nan, np.float32)
    split_phases(x, ph, s, s, pt, pl, rows, wq, s, s)
    for a in range(s):
        for b in range(s):
            want = padded[a::s, b::s][:rows, :wq]
            np.testing.assert_array_equal(ph[a, b, :rows * wq].reshape(rows, wq), want)
            assert np.isnan(ph[a, b, rows * wq:]).all()


@pytest.mark.parametrize("name", [n for n in CASES if n.startswith("dw")])
def test_depthwise_per_plane_when_a_block_is_too_large(name, monkeypatch):
    """Past the blocked kernel's scratch cap a depthwise conv runs per plane, as exact."""
    monkeypatch.setattr(conv_mod, "_DW_BLOCK_MAX_BYTES", 0)
    inputs, attrs = make(CASES[name])
    attrs = dict(attrs)
    got = run_fast(inputs, attrs)
    assert conv_mod._get_plan(attrs, inputs[0].shape, inputs[1].shape).path == "depthwise"
    np.testing.assert_allclose(got, conv_mod.conv_reference(inputs, attrs)[0], rtol=1e-4, atol=1e-4)
