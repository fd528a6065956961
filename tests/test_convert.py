"""Converter, deployable file and the errors users see for bad models and inputs."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import haste_edge
from converters.onnx_import import import_onnx
from haste_edge import InputError, ModelFileError, UnsupportedOpError, modelfile
from haste_edge.runtime import Model


def _save(model, path):
    onnx.save(model, str(path))
    return path


def _conv_bn_relu_model(batch="N"):
    """Conv -> BN -> Relu -> shape-chain Reshape (x.view(x.size(0), -1)) -> Gemm."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "gamma"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "beta"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "mean"),
        numpy_helper.from_array(rng.uniform(0.5, 2, 4).astype(np.float32), "var"),
        numpy_helper.from_array(rng.standard_normal((5, 4 * 6 * 6)).astype(np.float32), "fc"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "minus1"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["b"], name="bn"),
        helper.make_node("Relu", ["b"], ["r"], name="relu"),
        helper.make_node("Shape", ["r"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "zero"], ["n"], name="gather", axis=0),
        helper.make_node("Concat", ["n", "minus1"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["r", "target"], ["flat"], name="reshape"),
        helper.make_node("Gemm", ["flat", "fc"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _ort(path, x):
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_folding_fusion_and_batch_sizes(tmp_path):
    path = _save(_conv_bn_relu_model(), tmp_path / "m.onnx")
    graph = import_onnx(path)
    assert [n.op for n in graph.nodes] == ["Conv", "Reshape", "Gemm"]  # BN, Relu folded; shape chain gone
    assert graph.nodes[0].attrs["activation"] == "Relu"
    assert graph.nodes[1].attrs["shape"] == [0, -1]  # the batch entry copies the input's dim
    model = Model(graph)
    rng = np.random.default_rng(1)
    for n in (1, 4):
        x = rng.standard_normal((n, 3, 6, 6)).astype(np.float32)
        np.testing.assert_allclose(model.run({"x": x})["y"], _ort(path, x), rtol=1e-4, atol=1e-4)


def test_modelfile_roundtrip_and_fp16(tmp_path):
    src = _save(_conv_bn_relu_model(), tmp_path / "m.onnx")
    graph = import_onnx(src)
    x = np.random.default_rng(2).standard_normal((2, 3, 6, 6)).astype(np.float32)
    want = Model(graph).run({"x": x})["y"]
    out = modelfile.save(graph, tmp_path / "m.haste")
    loaded = haste_edge.load(out)
    np.testing.assert_array_equal(loaded.run({"x": x})["y"], want)
    half = haste_edge.load(modelfile.save(graph, tmp_path / "h.haste", fp16=True))
    got = half.run({"x": x})["y"]
    assert not np.array_equal(got, want)  # really stored at lower precision
    np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-2)


def test_save_failure_leaves_nothing(tmp_path, monkeypatch):
    graph = import_onnx(_save(_conv_bn_relu_model(), tmp_path / "m.onnx"))

    def broken(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(modelfile, "_write_aligned", broken)
    with pytest.raises(OSError):
        modelfile.save(graph, tmp_path / "out.haste")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_saved_weights_are_aligned_and_mapped(tmp_path):
    """save() aligns every entry's data, so load() maps float32 weights from the file instead of
    copying them; a mapped weight packed by a conv and released reads back unchanged."""
    from haste_edge import mapped
    graph = import_onnx(_save(_conv_bn_relu_model(), tmp_path / "m.onnx"))
    path = modelfile.save(graph, tmp_path / "m.haste")
    loaded = modelfile.load(path)
    assert sorted(np.load(path).files) == sorted(["graph.json"] + [f"w{i}" for i in range(len(graph.weights))])
    for name, w in graph.weights.items():
        got = loaded.weights[name]
        root = got.base
        while isinstance(root, np.ndarray):
            root = root.base
        assert isinstance(root, memoryview) and got.ctypes.data % modelfile.ALIGN == 0, name
        assert got.flags.writeable and got.dtype == np.float32
        mapped.release(got)
        np.testing.assert_array_equal(got, w)


def test_corrupt_weights_fail_their_crc(tmp_path):
    """A flipped byte in a weight's data: zipfile's CRC check catches small entries as it reads
    them, the mapped path's own check large ones (which zipfile never reads to the end)."""
    bundled = modelfile.load(haste_edge.ASSETS / "fashion_resnet18.haste")
    for name, w in (min(bundled.weights.items(), key=lambda kv: kv[1].nbytes),
                    max(bundled.weights.items(), key=lambda kv: kv[1].nbytes)):
        path = modelfile.save(bundled, tmp_path / "m.haste")
        data = bytearray(path.read_bytes())
        at = bytes(data).find(np.asarray(w).tobytes())
        data[at + w.nbytes // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        with pytest.raises(ModelFileError, match="m.haste: .*CRC"):
            modelfile.load(path)


def test_truncated_and_corrupt_files(tmp_path):
    graph = import_onnx(_save(_conv_bn_relu_model(), tmp_path / "m.onnx"))
    good = modelfile.save(graph, tmp_path / "m.haste").read_bytes()
    (tmp_path / "t.haste").write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelFileError, match="t.haste"):
        haste_edge.load(tmp_path / "t.haste")
    onnx_bytes = (tmp_path / "m.onnx").read_bytes()
    (tmp_path / "t.onnx").write_bytes(onnx_bytes[: len(onnx_bytes) // 3])
    with pytest.raises(ModelFileError, match="t.onnx"):
        haste_edge.load(tmp_path / "t.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(ModelFileError, match="junk.onnx"):
        haste_edge.load(tmp_path / "junk.onnx")
    with pytest.raises(ModelFileError, match="no such file"):
        haste_edge.load(tmp_path / "missing.haste")


def test_unsupported_op_named_at_load(tmp_path):
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up1")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])], [scales])
    path = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "r.onnx")
    with pytest.raises(UnsupportedOpError) as e:
        haste_edge.load(path)
    msg = str(e.value)
    assert "'Resize'" in msg and "'up1'" in msg and "opset 17" in msg and "Conv" in msg


def test_wrong_input_shape_is_named(tmp_path):
    model = haste_edge.load(_save(_conv_bn_relu_model(), tmp_path / "m.onnx"))
    with pytest.raises(InputError, match=r"input 'x': expected shape \('N', 3, 6, 6\), got \(3, 6, 6\)"):
        model.run({"x": np.zeros((3, 6, 6), np.float32)})
    with pytest.raises(InputError, match="missing"):
        model.run({"y": np.zeros((1, 3, 6, 6), np.float32)})
    inner = model.graph.nodes[0].outputs[0]             # an intermediate: its buffer gets reused
    with pytest.raises(InputError, match=f"not graph outputs: \\['{inner}'\\]"):
        model.run({"x": np.zeros((1, 3, 6, 6), np.float32)}, output_names=[inner])


def test_dense_macs_counted_from_shapes(tmp_path):
    model = haste_edge.load(_save(_conv_bn_relu_model(), tmp_path / "m.onnx"))
    macs = model.macs(batch=2)
    assert macs["conv"] == 2 * 4 * 6 * 6 * 3 * 3 * 3
    assert macs["fc"] == 2 * 5 * 144


def test_pad_mode_other_than_constant_is_refused(tmp_path):
    pads = numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64), "pads")
    node = helper.make_node("Pad", ["x", "pads"], ["y"], name="pad1", mode="reflect")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 6, 6])], [pads])
    path = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "p.onnx")
    with pytest.raises(UnsupportedOpError, match="Pad node 'pad1'.*mode 'constant'"):
        haste_edge.load(path)
