"""Gemm and MatMul: fast kernels vs the NumPy references (transposes, alpha/beta, C broadcast,
1-D and batched broadcasting matmul, non-contiguous operands), the references vs onnx's
ReferenceEvaluator, infer() vs kernel shapes, MACs, and shape errors.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from haste_edge.ops import gemm  # noqa: F401  (importing registers the ops)
from haste_edge.ops.registry import get

RNG = np.random.default_rng(0)

# (M, K, N, transA, transB, alpha, beta, C shape or None)
GEMM_CASES = {
    "plain": (4, 5, 3, 0, 0, 1.0, 1.0, None),
    "transA-alpha-beta-row-C": (4, 5, 3, 1, 0, 0.5, 2.0, (3,)),
    "transB-column-C": (4, 5, 3, 0, 1, 1.0, 1.0, (4, 1)),
    "both-trans-full-C": (2, 7, 6, 1, 1, 2.0, -0.5, (2, 6)),
    "scalar-C": (3, 4, 5, 0, 0, 1.0, 3.0, ()),
    "classifier": (1, 64, 10, 0, 1, 1.0, 1.0, (10,)),
    "beta0": (3, 4, 5, 0, 0, 1.5, 0.0, (3, 5)),
}

MATMUL_CASES = [((3,), (3,)), ((3,), (3, 4)), ((2, 3), (3,)), ((4, 5), (5, 6)), ((5, 2, 3), (3, 4)),
                ((2, 1, 2, 3), (4, 3, 5)), ((3, 4), (2, 4, 5)), ((4,), (2, 4, 3)),
                ((2, 3, 49, 32), (2, 3, 32, 49)), ((2, 3, 49, 49), (2, 3, 49, 32)),   # attention's
                ((2, 49, 96), (96, 288)), ((1, 3, 5, 4), (2, 1, 4, 6))]


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def gemm_case(name):
    m, k, n, ta, tb, alpha, beta, c = GEMM_CASES[name]
    a = randn(*((k, m) if ta else (m, k)))
    b = randn(*((n, k) if tb else (k, n)))
    attrs = dict(alpha=alpha, beta=beta, transA=ta, transB=tb)
    return [a, b] + ([] if c is None else [randn(*c)]), attrs


def run_fast(op, inputs, attrs):
    spec = get(op)
    shapes = spec.infer([None if x is None else x.shape for x in inputs], attrs)
    bufs = [np.full(s, np.nan, np.float32) for s in shapes]   # stand-in for reused garbage
    outs = spec.kernel(inputs, attrs, bufs)
    assert len(outs) == 1 and outs[0] is bufs[0], "must fill outs"
    return outs[0]


def check(op, inputs, attrs):
    got = run_fast(op, inputs, attrs)
    want = get(op).reference(inputs, attrs)[0]
    assert want.dtype == np.float32 and got.shape == want.shape   # infer() == reference shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def run_onnx(op, inputs, attrs):
    names = ["a", "b", "c"][:len(inputs)]
    node = helper.make_node(op, names, ["y"], **attrs)
    vis = [helper.make_tensor_value_info(n, TensorProto.FLOAT, x.shape) for n, x in zip(names, inputs)]
    graph = helper.make_graph([node], "g", vis, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return ReferenceEvaluator(model).run(None, dict(zip(names, inputs)))[0]


@pytest.mark.parametrize("name", GEMM_CASES)
def test_gemm_matches_reference(name):
    check("Gemm", *gemm_case(name))


@pytest.mark.parametrize("shapes", MATMUL_CASES, ids=str)
def test_matmul_matches_reference(shapes):
    check("MatMul", [randn(*s) for s in shapes], {})


def test_non_contiguous_operands():
    inputs, attrs = gemm_case("transB-column-C")
    a = np.asfortranarray(inputs[0])[:, :]           # F-ordered copy: same values
    b = randn(3, 10)[:, ::2]                           # strided view
    assert not b.flags.c_contiguous
    check("Gemm", [a, b, inputs[2]], attrs)
    x = randn(2, 6, 4).transpose(0, 2, 1)             # (2, 4, 6) view
    check("MatMul", [x, randn(6, 3)], {})


@pytest.mark.parametrize("name", ["transA-alpha-beta-row-C", "both-trans-full-C", "scalar-C", "plain"])
def test_gemm_reference_matches_onnx(name):
    inputs, attrs = gemm_case(name)
    np.testing.assert_allclose(get("Gemm").reference(inputs, attrs)[0], run_onnx("Gemm", inputs, attrs),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shapes", MATMUL_CASES[::2] + [MATMUL_CASES[5]], ids=str)
def test_matmul_reference_matches_onnx(shapes):
    inputs = [randn(*s) for s in shapes]
    np.testing.assert_allclose(get("MatMul").reference(inputs, {})[0], run_onnx("MatMul", inputs, {}),
                               rtol=1e-5, atol=1e-5)


def test_macs():
    g = get("Gemm")
    attrs = dict(alpha=1.0, beta=1.0, transA=1, transB=0)
    shapes = [(5, 4), (5, 3), (3,)]                    # A' is 4x5: M=4, K=5, N=3
    out = g.infer(shapes, attrs)
    assert out == [(4, 3)] and g.macs(shapes, out, attrs) == 4 * 3 * 5
    mm = get("MatMul")
    shapes = [(2, 1, 2, 3), (4, 3, 5)]                 # batch (2, 4), M=2, K=3, N=5
    out = mm.infer(shapes, {})
    assert out == [(2, 4, 2, 5)] and mm.macs(shapes, out, {}) == 2 * 4 * 2 * 5 * 3
    assert mm.macs([(3,), (3,)], mm.infer([(3,), (3,)], {}), {}) == 3


def test_infer_errors():
    attrs = dict(alpha=1.0, beta=1.0, transA=0, transB=0)
    with pytest.raises(ValueError, match="inner"):
        get("Gemm").infer([(4, 5), (4, 3)], attrs)
    with pytest.raises(ValueError, match="broadcast"):
        get("Gemm").infer([(4, 5), (5, 3), (2, 3)], attrs)
    with pytest.raises(ValueError):
        get("Gemm").infer([(4, 5, 1), (5, 3)], attrs)
    with pytest.raises(ValueError, match="inner"):
        get("MatMul").infer([(2, 3), (4, 5)], {})
    with pytest.raises(ValueError, match="broadcast"):
        get("MatMul").infer([(2, 2, 3), (3, 3, 4)], {})


@pytest.mark.parametrize("rows", [False, True])
@pytest.mark.parametrize("m", [1, 4, 5])
@pytest.mark.parametrize("trans_b", [0, 1])
def test_small_batch_gemm_on_both_paths(rows, m, trans_b, monkeypatch):
    """Batches up to _ROWS_MAX_M take the row loops (B as stored), larger ones OpenBLAS: both
    against the reference, with alpha, beta and a row C."""
    monkeypatch.setattr(gemm, "ROWS", rows)
    a, b = randn(m, 300), randn(*((37, 300) if trans_b else (300, 37)))
    check("Gemm", [a, b, randn(37)], dict(alpha=0.5, beta=2.0, transA=0, transB=trans_b))


@pytest.mark.parametrize("m", [1, 3])
def test_row_kernel_on_the_pool_matches_the_reference(m, monkeypatch):
    """On more threads a Gemm with a large B (transposed, as classifiers store it) splits B's rows
    over the pool; on one thread, or with a small B, the loop stays on the calling thread."""
    import numba
    from haste_edge.threads import numba_single_thread
    a, b = randn(m, 300), randn(1000, 300)
    y = np.full((m, 1000), np.nan, np.float32)
    attrs = dict(alpha=1.0, beta=0.0, transA=0, transB=1)
    with numba_single_thread():
        assert gemm._rows_call(a, b, y, attrs)[0] is gemm._rows_times_bt
    if numba.config.NUMBA_NUM_THREADS > 1:
        prev = numba.get_num_threads()
        numba.set_num_threads(2)
        try:
            monkeypatch.setattr(gemm, "ROWS_POOL_MIN_BYTES", b.nbytes + 1)
            assert gemm._rows_call(a, b, y, attrs)[0] is gemm._rows_times_bt
            monkeypatch.setattr(gemm, "ROWS_POOL_MIN_BYTES", b.nbytes)
            f, args = gemm._rows_call(a, b, y, attrs)
            assert f is gemm._rows_times_bt_pool
            f(*args)
        finally:
            numba.set_num_threads(prev)
    else:
        gemm._rows_times_bt_pool(a, b, y)
    want = a.astype(np.float64) @ b.T.astype(np.float64)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
