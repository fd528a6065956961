"""LRN and Sum: fast kernel vs reference vs onnxruntime (onnx's ReferenceEvaluator disagrees with
the LRN spec text and with onnxruntime on channel windows, so onnxruntime is the oracle here)."""
import numpy as np
import pytest
from onnx import TensorProto, helper

from haste_edge.ops import registry


def _onnx_eval(op, inputs, **attrs):
    import onnxruntime as ort
    names = [f"x{i}" for i in range(len(inputs))]
    node = helper.make_node(op, names, ["y"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, x.shape)
                                            for n, x in zip(names, inputs)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, dict(zip(names, inputs)))[0]


@pytest.mark.parametrize("size", [1, 3, 5])  # onnxruntime accepts odd sizes only
def test_lrn(size):
    x = np.random.default_rng(size).standard_normal((2, 7, 5, 3)).astype(np.float32)
    attrs = {"size": size, "alpha": 2e-3, "beta": 0.75, "bias": 1.5}
    spec = registry.get("LRN")
    ref = spec.reference([x], attrs)[0]
    out = np.full(spec.infer([x.shape], attrs)[0], np.nan, np.float32)
    np.testing.assert_allclose(spec.kernel([x], attrs, [out])[0], ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ref, _onnx_eval("LRN", [x], **attrs), rtol=1e-5, atol=1e-6)


def test_sum_broadcasts_three_inputs():
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(s).astype(np.float32) for s in [(2, 3, 4), (3, 1), (1, 4)]]
    spec = registry.get("Sum")
    shape = spec.infer([x.shape for x in xs], {})[0]
    out = np.full(shape, np.nan, np.float32)
    got = spec.kernel(xs, {}, [out])[0]
    np.testing.assert_allclose(got, spec.reference(xs, {})[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, _onnx_eval("Sum", xs), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="Sum"):
        spec.infer([(2, 3), (4,)], {})
