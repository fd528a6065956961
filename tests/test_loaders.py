"""Loaders and the runtime refuse bad input with one clear error: tampered .haste documents, oversized
headers and archives, bad attributes, wrong dtypes, empty batches, external data outside the model."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as TP
from onnx import external_data_helper, helper, numpy_helper

import haste_edge
from haste_edge.ops import conv as conv_mod
from converters.onnx_import import import_onnx
from haste_edge import InputError, ModelFileError, UnsupportedOpError, limits, modelfile


def _onnx(nodes, inits, x_shape=(1, 3, 8, 8), y_shape=None, x_type=TP.FLOAT, opset=17):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", x_type, list(x_shape))],
                          [helper.make_tensor_value_info("y", TP.FLOAT, y_shape)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _save(model, path):
    onnx.save(model, str(path))
    return path


def _ort_refuses(path) -> bool:
    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
            None, {"x": np.ones((1, 3, 8, 8), np.float32)})
    except Exception:
        return True
    return False


def _small_model():
    rng = np.random.default_rng(0)
    return _onnx([helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", ["c"], ["r"], name="relu"),
                  helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
                  helper.make_node("Flatten", ["p"], ["f"], name="flat"),
                  helper.make_node("Gemm", ["f", "fc"], ["y"], name="fc", transB=1)],
                 {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
                  "b": rng.standard_normal(4).astype(np.float32),
                  "fc": rng.standard_normal((5, 64)).astype(np.float32)}, x_shape=("N", 3, 8, 8), y_shape=("N", 5))


@pytest.fixture
def haste_file(tmp_path):
    return modelfile.save(import_onnx(_save(_small_model(), tmp_path / "m.onnx")), tmp_path / "m.haste")


def _entries(path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class Replace:
    """Returned by an edit: the whole graph.json becomes this value (a str is written as it is)."""

    def __init__(self, value):
        self.value = value


def _tamper(path, edit):
    """Rewrite the file's graph.json with edit(doc), which changes doc in place or returns a Replace."""
    arrays = _entries(path)
    doc = json.loads(bytes(arrays["graph.json"]).decode())
    out = edit(doc)
    doc = out.value if isinstance(out, Replace) else doc
    text = doc if isinstance(doc, str) else json.dumps(doc)
    arrays["graph.json"] = np.frombuffer(text.encode(), dtype=np.uint8)
    return _write(path, arrays)


def _write(path, arrays):
    with open(path, "wb") as f:   # a file object: np.savez would add .npz to a path
        np.savez(f, **arrays)
    return path


def _refused(path, match, error=ModelFileError):
    with pytest.raises(error, match=match) as e:
        haste_edge.load(path)
    assert "\n" not in str(e.value)


@pytest.fixture
def small_limit():
    limits.set_max_bytes(1 << 20)
    yield
    limits.set_max_bytes(None)


# ---- the .haste document --------------------------------------------------------------------

@pytest.mark.parametrize("edit, match", [
    (lambda d: d["nodes"][0].pop("op"), r"nodes\[0\]: missing field 'op'"),
    (lambda d: d.pop("nodes"), "missing field 'nodes'"),
    (lambda d: d.pop("inputs"), "missing field 'inputs'"),
    (lambda d: d.pop("outputs"), "missing field 'outputs'"),
    (lambda d: d.update(version="1"), "version: expected a positive integer, got '1'"),
    (lambda d: d.update(version=None), "version: expected a positive integer, got None"),
    (lambda d: Replace([d]), "graph.json: expected an object, got list"),
    (lambda d: d.update(nodes={"0": d["nodes"][0]}), "nodes: expected a non-empty list, got dict"),
    (lambda d: d["nodes"][0].update(inputs="x"), r"nodes\[0\].inputs: expected a list, got str"),
    (lambda d: d["nodes"][0]["attrs"].update(pads=[[1], 1, 1, 1]), r"nodes\[0\].attrs.pads\[0\]"),
    (lambda d: d.update(inputs={"x": [None, 3, "8", 8]}), r"inputs\['x'\]\[2\]"),
    (lambda d: Replace('{"format": "haste-edge-model", "meta": ' + "[" * 100000 + "]" * 100000 + "}"),
     "nested too deeply"),
    (lambda d: [e.update(dtype="float99") for e in d["weights"].values()], r"dtype: expected one of"),
    (lambda d: [e.update(dtype="int8") for e in d["weights"].values()], r"stored dtype <f4 is not one of"),
    (lambda d: [e.update(dtype="ternary") for e in d["weights"].values()], r"packed ternary weights need their shape"),
    (lambda d: [e.update(dtype="ternary", shape=[2, 2]) for e in d["weights"].values()], r"stored dtype <f4"),
    (lambda d: d["nodes"][0]["attrs"].pop("kernel_shape"), "Conv node 'conv': attribute kernel_shape"),
    (lambda d: d["nodes"][0]["attrs"].update(strides=[0, 1]), "Conv node 'conv': attribute strides"),
    (lambda d: d["nodes"][0]["attrs"].update(pads=[2**40, 0, 0, 0]), "attribute pads"),
    (lambda d: d["nodes"][0]["attrs"].update(pads=[2**20] * 4), "memory limit"),
    (lambda d: d.update(inputs={"x": [None, 3, 2**20, 2**20]}), "memory limit"),
    (lambda d: d["nodes"][1]["attrs"].update(pads=[2, 0, 0, 0]), "MaxPool node 'pool': attribute pads"),
    (lambda d: d["nodes"][0].update(inputs=["x"]), "Conv node 'conv': expected 2 to 3 inputs"),
    (lambda d: d["nodes"][0]["attrs"].update(activation="Gelu"), "attribute activation"),
    (lambda d: d["nodes"][0]["attrs"].update(extra=1), "unknown attribute 'extra'"),
    (lambda d: d.update(meta={"input": {"std": [0, 1, 1]}}), "meta.input.std"),
    (lambda d: d["nodes"][-1]["attrs"].pop("transB"), "Gemm node 'fc': attribute transB is missing"),
])
def test_tampered_document_is_refused(haste_file, edit, match):
    _refused(_tamper(haste_file, edit), match)


def test_weight_shape_that_disagrees_with_the_node_is_refused_at_load(haste_file):
    arrays = _entries(haste_file)
    doc = json.loads(bytes(arrays["graph.json"]).decode())
    key = doc["weights"][doc["nodes"][0]["inputs"][1]]["key"]
    arrays[key] = arrays[key][:, :2]   # 2 input channels where x has 3
    _write(haste_file, arrays)
    _refused(haste_file, "Conv node 'conv': Conv: channel mismatch")


def _replace_entry(path, name, data: bytes, compress=zipfile.ZIP_STORED):
    entries = {}
    with zipfile.ZipFile(path) as z:
        for n in z.namelist():
            entries[n] = z.read(n)
    entries[name] = data
    with zipfile.ZipFile(path, "w", compress) as z:
        for n, d in entries.items():
            z.writestr(n, d)


def _npy_header(shape, descr="<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_npy_header_claiming_a_huge_shape_is_refused_without_allocating(haste_file):
    _replace_entry(haste_file, "w0.npy", _npy_header((2**40,)) + b"\0" * 64)
    _refused(haste_file, r"weight '.*': header shape \(1099511627776,\) does not match")


def test_weight_stored_with_another_dtype_is_refused(haste_file):
    _replace_entry(haste_file, "w0.npy", _npy_header((4, 3, 3, 3), "<i8") + b"\0" * 8 * 108)
    _refused(haste_file, r"stored dtype <i8 is not one of")


def test_pickled_object_array_is_refused(haste_file):
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _replace_entry(haste_file, "w0.npy", buf.getvalue())
    _refused(haste_file, r"stored dtype \|O is not one of")


def test_zip_bomb_is_refused_before_decompressing(haste_file, small_limit):
    # 8 MiB of zeros compress to a few KiB; the declared size alone is over the 1 MiB limit
    _replace_entry(haste_file, "w0.npy", _npy_header((2 << 20,)) + bytes(8 << 20), zipfile.ZIP_DEFLATED)
    assert haste_file.stat().st_size < 100_000
    _refused(haste_file, "over the memory limit of 1.0 MiB .set HASTE_EDGE_MAX_BYTES")


def test_zip_bomb_under_the_memory_limit_is_refused_too(haste_file):
    # 64 MiB of zeros deflate ~1000x: far more than any weights do
    _replace_entry(haste_file, "w0.npy", _npy_header((16 << 20,)) + bytes(64 << 20), zipfile.ZIP_DEFLATED)
    _refused(haste_file, r"compressed bytes claim to expand to \d+ \(a zip bomb\?\)")


def test_compressed_file_loads(haste_file):
    x = np.ones((1, 3, 8, 8), np.float32)
    want = haste_edge.load(haste_file).run({"x": x})["y"]
    np.savez_compressed(haste_file.with_suffix(".npz"), **_entries(haste_file))
    np.testing.assert_array_equal(haste_edge.load(haste_file.with_suffix(".npz")).run({"x": x})["y"], want)


def test_limit_from_the_environment(monkeypatch):
    monkeypatch.setenv("HASTE_EDGE_MAX_BYTES", "12345")
    assert limits.max_bytes() == 12345
    with pytest.raises(InputError, match="over the memory limit"):
        limits.check(12346, "x", InputError)
    monkeypatch.setenv("HASTE_EDGE_MAX_BYTES", "2GB")
    with pytest.raises(haste_edge.HasteEdgeError, match="HASTE_EDGE_MAX_BYTES='2GB': expected a positive"):
        limits.max_bytes()


def test_fp16_file_still_loads(tmp_path):
    graph = import_onnx(_save(_small_model(), tmp_path / "m.onnx"))
    path = modelfile.save(graph, tmp_path / "h.haste", fp16=True)
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    y = haste_edge.load(path).run({"x": x})["y"]
    np.testing.assert_allclose(y, haste_edge.Model(graph).run({"x": x})["y"], rtol=1e-2, atol=1e-2)


# ---- the runtime ----------------------------------------------------------------------------

def test_batch_zero_is_refused(haste_file):
    model = haste_edge.load(haste_file)
    with pytest.raises(InputError, match=r"input 'x': shape \(0, 3, 8, 8\) is empty"):
        model.run({"x": np.zeros((0, 3, 8, 8), np.float32)})
    model.set_haste("L=12,P=4")
    with pytest.raises(InputError, match="is empty"):
        model.run({"x": np.zeros((0, 3, 8, 8), np.float32)})


def test_plan_over_the_limit_is_refused(haste_file):
    model = haste_edge.load(haste_file)
    limits.set_max_bytes(200_000)
    try:
        with pytest.raises(InputError, match="over the memory limit"):
            model.run({"x": np.zeros((200, 3, 8, 8), np.float32)})
        model.run({"x": np.zeros((2, 3, 8, 8), np.float32)})   # a small batch still runs
    finally:
        limits.set_max_bytes(None)


def test_kernel_scratch_over_the_limit_is_refused(tmp_path, monkeypatch):
    # the im2col columns of an 11x11 conv over 64 channels need ~127 MB; every tensor is under 2 MiB
    # (the OpenBLAS path: the microkernel's implicit GEMM needs no columns)
    monkeypatch.setattr(conv_mod, "_CONV_PATH", "blas")
    monkeypatch.setattr(conv_mod, "_AUTO", False)
    monkeypatch.setattr(conv_mod, "BLOCKED_LAYOUT", False)
    w = np.ones((4, 64, 11, 11), np.float32)
    model = _onnx([helper.make_node("Conv", ["x", "w"], ["y"], name="n", pads=[5, 5, 5, 5])], {"w": w},
                  x_shape=(1, 64, 64, 64))
    m = haste_edge.load(_save(model, tmp_path / "m.onnx"))
    limits.set_max_bytes(16 << 20)
    try:
        with pytest.raises(InputError, match="scratch buffer .* over the memory limit"):
            m.run({"x": np.ones((1, 64, 64, 64), np.float32)})
    finally:
        limits.set_max_bytes(None)


# ---- ONNX: attributes and dtypes, as onnxruntime judges them ------------------------------------

W = np.ones((4, 3, 3, 3), np.float32)
BAD_ONNX = {
    "maxpool pads == kernel": (helper.make_node("MaxPool", ["x"], ["y"], name="n", kernel_shape=[2, 2],
                                                pads=[2, 2, 2, 2]), {}, "pads.*smaller than kernel"),
    "avgpool pads > kernel": (helper.make_node("AveragePool", ["x"], ["y"], name="n", kernel_shape=[2, 2],
                                               pads=[0, 0, 3, 0]), {}, "smaller than kernel"),
    "lrn size 0": (helper.make_node("LRN", ["x"], ["y"], name="n", size=0), {}, "attribute size"),
    "lrn even size": (helper.make_node("LRN", ["x"], ["y"], name="n", size=2), {}, "must be odd"),
    "lrn alpha nan": (helper.make_node("LRN", ["x"], ["y"], name="n", size=3, alpha=float("nan")), {},
                      "attribute alpha"),
    "conv same strides 0": (helper.make_node("Conv", ["x", "w"], ["y"], name="n", auto_pad="SAME_UPPER",
                                             strides=[0, 1]), {"w": W}, "strides must be 2 positive"),
    "conv group 0": (helper.make_node("Conv", ["x", "w"], ["y"], name="n", group=0), {"w": W}, "attribute group"),
    "clip vector min": (helper.make_node("Clip", ["x", "lo"], ["y"], name="n"),
                        {"lo": np.array([0, 1], np.float32)}, "min must be a scalar"),
    "clip int min": (helper.make_node("Clip", ["x", "lo"], ["y"], name="n"),
                     {"lo": np.array(0, np.int64)}, "min .* has dtype int64, expected float32"),
}
for _dt in (np.int8, bool, np.int64, np.float64, np.float16):
    BAD_ONNX[f"conv weights {np.dtype(_dt)}"] = (helper.make_node("Conv", ["x", "w"], ["y"], name="n"),
                                                 {"w": W.astype(_dt)}, "only float32 weights")
BAD_ONNX["gemm weights int64"] = (helper.make_node("Gemm", ["f", "w"], ["y"], name="n"),
                                  {"w": np.ones((192, 2), np.int64)}, "only float32 weights")


@pytest.mark.parametrize("case", sorted(BAD_ONNX))
def test_onnx_models_onnxruntime_refuses_are_refused(tmp_path, case):
    node, inits, match = BAD_ONNX[case]
    nodes = [node]
    if "f" in node.input:
        nodes = [helper.make_node("Flatten", ["x"], ["f"], name="flat"), node]
    path = _save(_onnx(nodes, inits), tmp_path / "m.onnx")
    assert _ort_refuses(path)
    with pytest.raises((ModelFileError, UnsupportedOpError), match=match) as e:
        haste_edge.load(path)
    assert "\n" not in str(e.value)


def _fuzz_found(case):
    """Models the fuzzer found the engine mishandling (each onnxruntime refuses too)."""
    n = helper.make_node
    if case == "concat absent input":
        return _onnx([n("Concat", ["x", "x", ""], ["y"], name="n", axis=1)], {})
    if case == "initializer dims disagree with data":
        m = _onnx([n("Conv", ["x", "w"], ["y"], name="n")], {"w": W})
        m.graph.initializer[0].dims[:] = [4, 3, 3, 2]
        return m
    if case == "pads as float16":
        return _onnx([n("Pad", ["x", "p"], ["y"], name="n")], {"p": np.zeros(8, np.float16)})
    if case == "squeeze axes 2-D":
        return _onnx([n("Squeeze", ["x", "a"], ["y"], name="n")], {"a": np.array([[0]], np.int64)})
    if case == "empty strides":
        m = _onnx([n("Conv", ["x", "w"], ["y"], name="n")], {"w": W})
        m.graph.node[0].attribute.append(helper.make_attribute("strides", [], attr_type=onnx.AttributeProto.INTS))
        return m
    if case == "opset 99":
        return _onnx([n("Relu", ["x"], ["y"], name="n")], {}, opset=99)
    if case == "input dim 0":
        return _onnx([n("Relu", ["x"], ["y"], name="n")], {}, x_shape=(0, 3, 8, 8))
    if case == "dropout ratio vector":
        return _onnx([n("Dropout", ["x", "r"], ["y"], name="n")], {"r": np.full(3, 0.5, np.float32)})
    raise KeyError(case)


@pytest.mark.parametrize("case, match", [
    ("concat absent input", "required input 2 is absent"),
    ("initializer dims disagree with data", "initializer 'w' is unreadable"),
    ("pads as float16", "has dtype float16, expected int64"),
    ("squeeze axes 2-D", "expected a 1-D tensor"),
    ("empty strides", "strides must be 2 positive integers"),
    ("opset 99", "opset 99 is outside"),
    ("input dim 0", "declares dim 0 at axis 0"),
    ("dropout ratio vector", "ratio must be a scalar"),
])
def test_fuzz_findings_are_refused(tmp_path, case, match):
    path = tmp_path / "m.onnx"
    path.write_bytes(_fuzz_found(case).SerializeToString())
    assert _ort_refuses(path)
    with pytest.raises((ModelFileError, UnsupportedOpError), match=match) as e:
        haste_edge.load(path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("x_type", [TP.FLOAT16, TP.DOUBLE])
def test_non_float32_graph_input_is_refused(tmp_path, x_type):
    path = _save(_onnx([helper.make_node("Conv", ["x", "w"], ["y"], name="n")], {"w": W}, x_type=x_type),
                 tmp_path / "m.onnx")
    assert _ort_refuses(path)
    _refused(path, "only float32 inputs are supported", UnsupportedOpError)


def test_output_declared_without_a_shape_loads(tmp_path):
    path = _save(_onnx([helper.make_node("Conv", ["x", "w"], ["y"], name="n")], {"w": W}, y_shape=None),
                 tmp_path / "m.onnx")
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(haste_edge.load(path).run({"x": x})["y"], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "sub/../../m.onnx"])
def test_external_data_outside_the_model_directory_is_refused(tmp_path, location):
    model = _onnx([helper.make_node("Conv", ["x", "w"], ["y"], name="n")], {"w": W})
    w = model.graph.initializer[0]
    external_data_helper.set_external_data(w, location=location, offset=0, length=W.nbytes)
    w.ClearField("raw_data")
    path = tmp_path / "sub" / "m.onnx"
    path.parent.mkdir()
    path.write_bytes(model.SerializeToString())
    _refused(path, f"external data location '{location}' is not a relative path inside the model's directory")


def test_external_data_inside_the_model_directory_loads(tmp_path):
    model = _onnx([helper.make_node("Conv", ["x", "w"], ["y"], name="n")], {"w": W})
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="w.bin", size_threshold=0)
    x = np.ones((1, 3, 8, 8), np.float32)
    assert haste_edge.load(tmp_path / "m.onnx").run({"x": x})["y"].shape == (1, 4, 6, 6)


def test_every_op_has_an_attribute_rule():
    from haste_edge.ops import checks, registry
    assert set(registry.OPS) == set(checks.RULES)


def test_zip_needing_a_newer_zip_version_is_refused_in_one_line(tmp_path):
    """A flipped byte in the central directory's 'version needed' made zipfile raise
    NotImplementedError ('zip file version 10.1') before the loader's own checks (fuzz case)."""
    import haste_edge
    from haste_edge.errors import ModelFileError
    data = bytearray(haste_edge.DEFAULT_MODEL.read_bytes())
    cd = data.index(b"PK\x01\x02")                       # first central directory entry
    data[cd + 6] = 101                                   # version needed to extract: 10.1
    bad = tmp_path / "bad.haste"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="bad.haste"):
        haste_edge.load(bad)
