"""The bundled ViT's definition (converters/vit.py) through the converter: the attention and GELU
fusions fire on torch's export, one frame and several, and the engine's logits match onnxruntime
within 1e-4 of the largest logit; wrong shapes give one-line errors naming the node."""
from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from converters.onnx_import import import_onnx  # noqa: E402
from converters.vit import FashionViT, export  # noqa: E402
from haste_edge import InputError, Model, ModelFileError  # noqa: E402

TOLERANCE = 1e-4    # of the largest |logit|


def _vit(frames: int, seed: int) -> torch.nn.Module:
    """Untrained weights, scaled up from the training init so the attention is far from uniform
    and the GELUs see both signs well away from 0."""
    torch.manual_seed(seed)
    model = FashionViT(frames=frames)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.ndim == 2:
                p.mul_(8.0)
            elif name in ("pos", "frame"):
                p.mul_(25.0)
    return model.eval()


@pytest.fixture(scope="module", params=[1, 3], ids=["1-frame", "3-frames"])
def exported(request, tmp_path_factory):
    frames = request.param
    path = export(_vit(frames, seed=frames), tmp_path_factory.mktemp("vit") / f"vit_t{frames}.onnx")
    return frames, path


def test_fusions_fire(exported):
    frames, path = exported
    ops = collections.Counter(n.op for n in import_onnx(path).nodes)
    exported_ops = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert exported_ops["Softmax"] == 6 and exported_ops["Erf"] == 6
    assert ops["ScaledDotProductAttention"] == 6 and ops["Gelu"] == 6
    assert not {"Softmax", "Erf", "Div", "Mul", "Shape", "Gather"} & set(ops), ops
    assert ops["LayerNormalization"] == 13


def test_matches_onnxruntime(exported):
    frames, path = exported
    model = Model(import_onnx(path))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(frames)
    for batch in (1, 4):
        x = rng.standard_normal((batch, frames, 28, 28)).astype(np.float32)
        want = sess.run(["logits"], {"input": x})[0]
        got = model.run({"input": x})["logits"]
        assert got.shape == want.shape == (batch, 10)
        assert np.abs(want).max() > 1.0                   # the scaled weights give real logits
        assert np.abs(got - want).max() <= TOLERANCE * np.abs(want).max()


def test_attention_is_the_models_only_token_mixer(exported):
    """Each attention node reads Q, K, V as (B, heads, tokens, head dim): T * 49 tokens, 3 heads of 32."""
    frames, path = exported
    graph = import_onnx(path)
    shapes = Model(graph).plan({"input": (2, frames, 28, 28)}).shapes
    for n in graph.nodes:
        if n.op == "ScaledDotProductAttention":
            assert [shapes[x] for x in n.inputs] == [(2, 3, frames * 49, 32)] * 3
            assert n.attrs["scale"] == pytest.approx(32 ** -0.5)


def test_wrong_input_size_is_one_line(exported):
    frames, path = exported
    model = Model(import_onnx(path))
    with pytest.raises(InputError, match=r"input 'input': expected shape \('N', %d, 28, 28\), got "
                                         r"\(1, %d, 32, 32\)" % (frames, frames)) as e:
        model.run({"input": np.zeros((1, frames, 32, 32), np.float32)})
    assert "\n" not in str(e.value)


def _layer_norm_model(path, scale_shape):
    from onnx import TensorProto, helper, numpy_helper
    scale = numpy_helper.from_array(np.ones(scale_shape, np.float32), "scale")
    node = helper.make_node("LayerNormalization", ["x", "scale"], ["y"], name="ln", axis=-1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [scale])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_layer_norm_scale_mismatch_is_one_line(tmp_path):
    with pytest.raises(ModelFileError, match=r"LayerNormalization node 'ln': LayerNormalization: Scale shape "
                                             r"\(4,\) does not broadcast") as e:
        import_onnx(_layer_norm_model(tmp_path / "ln.onnx", (4,)))
    assert "\n" not in str(e.value)


def test_torch_layer_norm_export(tmp_path):
    """nn.LayerNorm over the last two dims exports as one LayerNormalization (axis -2)."""
    torch.manual_seed(0)
    ln = torch.nn.LayerNorm((6, 8)).eval()
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    path = tmp_path / "ln.onnx"
    torch.onnx.export(ln, torch.zeros(1, 3, 6, 8), str(path), opset_version=17, dynamo=False,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    graph = import_onnx(path)
    assert [n.op for n in graph.nodes] == ["LayerNormalization"]
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 8)).astype(np.float32)
    with torch.no_grad():
        want = ln(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(Model(graph).run({"x": x})["y"], want, rtol=1e-5, atol=1e-5)


def test_matmul_bias_adds_fuse_and_match_unfused(monkeypatch):
    """A Linear layer's MatMul -> Add(bias) runs as one MatMul step with the bias (runtime.py); the
    bundled ViT gives the same logits both ways (up to the order of two float additions)."""
    import haste_edge
    from haste_edge import runtime
    from haste_edge.preprocess import load_batch
    model = haste_edge.load("fashion_vit")
    x = load_batch(haste_edge.sample_images(), model.meta["input"])
    fused = model.run({"input": x})["logits"]
    steps = model.last_plan.steps
    assert sum(st.op == "MatMul" and len(st.inputs) == 3 for st in steps) == 24
    assert sum(st.op == "Add" for st in steps) == 38 - 24
    monkeypatch.setattr(runtime, "FUSE_MATMUL_BIASES", False)
    plain = haste_edge.load("fashion_vit").run({"input": x})["logits"]
    np.testing.assert_allclose(fused, plain, rtol=0, atol=1e-5 * np.abs(plain).max())
