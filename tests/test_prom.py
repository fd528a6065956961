"""PROM: quantisation rules, the 2-bit file format, the Numba kernels against their NumPy
references, the converter, and the per-layer counters. Tests named test_host_* need the converter
(onnx, torch): the emulated aarch64 step (.ci/run) runs the others.

What is exact and what is within a tolerance: the int8 codes of activations and weights are exact
(the same float32 operations in NumPy and Numba); the int32 sums are exact integers; the outputs
(float32(sum) * scale + bias) may differ by one rounding where LLVM fuses the multiply-add (FMA),
so they are compared within 1e-6 relative to the output's magnitude.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import haste_edge
from haste_edge import modelfile
from haste_edge.errors import ModelFileError
from haste_edge.graph import Graph
from haste_edge.ops import OPS
from haste_edge.ops.registry import run_reference
from haste_edge.prom import kernels
from haste_edge.prom.quantize import (act_scale, int8_weights, inv_scale, pack_ternary, quantize_act, ternary,
                                      unpack_ternary)
from haste_edge.preprocess import load_batch
from haste_edge.prom.reference import conv_accumulators

HAS_TORCH = importlib.util.find_spec("torch") is not None


def close(got, want):
    return np.abs(got - want).max() <= 1e-6 * max(1.0, float(np.abs(want).max()))


# ---------------------------------------------------------------- rules

def test_ternary_rule_by_hand():
    w = np.array([[0.1, -0.5, 0.9, 0.05], [0.0, 0.0, 0.0, 0.0]], np.float32)
    codes, scale = ternary(w)
    # channel 0: mean|w| 0.3875, threshold 0.27125: keeps -0.5 and 0.9, a = 0.7
    assert codes.tolist() == [[0, -1, 1, 0], [0, 0, 0, 0]]
    assert scale[0] == pytest.approx(0.7) and scale[1] == 0


def test_int8_rule_rounds_half_to_even_and_keeps_range():
    w = np.array([[127.0, 0.5, 1.5, -2.5, -127.0]], np.float32)
    codes, scale = int8_weights(w)
    assert scale[0] == 1.0
    assert codes.tolist() == [[127, 0, 2, -2, -127]]
    assert int8_weights(np.zeros((2, 3), np.float32))[1].tolist() == [0, 0]


def test_activation_codes_saturate():
    s = act_scale(2.0)
    q = quantize_act(np.array([-5.0, -2.0, 0.0, 1.0, 2.0, 9.0], np.float32), s)
    assert q.tolist() == [-127, -127, 0, 64, 127, 127]


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 1001])
def test_ternary_packing_round_trips(size):
    codes = np.random.default_rng(size).integers(-1, 2, size).astype(np.int8)
    packed = pack_ternary(codes)
    assert packed.dtype == np.uint8 and len(packed) == (size + 3) // 4
    assert np.array_equal(unpack_ternary(packed, (size,)), codes)


def test_ternary_unpacking_refuses_bad_bytes():
    with pytest.raises(ValueError, match="unused code 3"):
        unpack_ternary(np.array([3], np.uint8), (1,))
    with pytest.raises(ValueError, match="do not hold"):
        unpack_ternary(np.array([0, 0], np.uint8), (3,))


@pytest.mark.skipif(not HAS_TORCH, reason="the fine-tune's rules are in torch (host only)")
def test_host_training_rules_equal_the_converters():
    import torch
    from converters.train_fashion_mobilenetv2 import int8_weights as t_int8, ternary_weights as t_ternary
    w = np.random.default_rng(0).standard_normal((16, 8, 1, 1)).astype(np.float32)
    codes, scale = ternary(w)
    want = codes.astype(np.float32) * scale[:, None, None, None]
    assert np.allclose(t_ternary(torch.from_numpy(w)).numpy(), want, rtol=1e-6, atol=0)
    codes, scale = int8_weights(w)
    assert np.allclose(t_int8(torch.from_numpy(w)).numpy(), codes * scale[:, None, None, None], rtol=1e-6, atol=0)


# ---------------------------------------------------------------- kernels against references

CONV_CASES = [  # (x shape, C_out, k, stride, group, dilation, pads, weights)
    ((1, 16, 14, 14), 24, 1, 1, 1, 1, (0, 0, 0, 0), "ternary"),
    ((2, 24, 7, 7), 40, 1, 1, 1, 1, (0, 0, 0, 0), "ternary"),
    ((1, 16, 33, 33), 8, 1, 1, 1, 1, (0, 0, 0, 0), "ternary"),     # 1089 pixels: three pixel blocks
    ((1, 16, 14, 14), 24, 1, 1, 1, 1, (0, 0, 0, 0), "int8"),
    ((1, 1, 28, 28), 16, 3, 1, 1, 1, (1, 1, 1, 1), "int8"),        # a stem
    ((2, 32, 14, 14), 32, 3, 1, 32, 1, (1, 1, 1, 1), "int8"),      # depthwise
    ((1, 32, 14, 14), 32, 3, 2, 32, 1, (1, 1, 1, 1), "int8"),      # depthwise, stride 2
    ((1, 32, 15, 9), 32, 3, 2, 32, 1, (0, 1, 1, 0), "int8"),       # odd sizes, asymmetric pads
    ((1, 8, 9, 9), 16, 3, 1, 2, 2, (2, 2, 2, 2), "int8"),          # grouped, dilated
    ((1, 8, 9, 9), 16, 1, 2, 1, 1, (0, 0, 0, 0), "ternary"),       # strided 1x1: the general kernel
    ((2, 24, 7, 7), 40, 1, 1, 1, 1, (0, 0, 0, 0), "int8"),         # int8 1x1: one run of 49 pixels
    ((1, 4, 3, 70), 8, 3, 1, 1, 1, (1, 1, 1, 1), "int8"),          # rows of 70: two tiles a row
    ((1, 16, 11, 11), 16, 3, 1, 16, 1, (1, 1, 1, 1), "int8"),      # 11x11: wide rows at stride 1
    ((2, 24, 7, 7), 24, 3, 1, 24, 1, (1, 1, 1, 1), "int8"),        # 7x7 depthwise: wide rows
    ((1, 8, 13, 13), 8, 3, 1, 8, 1, (1, 1, 1, 1), "int8"),         # 13 rows of 13: row tiles, 1 last
    ((1, 72, 30, 31), 8, 1, 1, 1, 1, (0, 0, 0, 0), "ternary"),     # row offsets past 16 bits
    ((1, 80, 28, 28), 4, 3, 1, 1, 1, (1, 1, 1, 1), "int8"),        # tap offsets past 16 bits
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[f"{c[-1]}-k{c[2]}-s{c[3]}-g{c[4]}" for c in CONV_CASES])
def test_prom_conv_matches_reference(case):
    shape, c_out, k, stride, group, dil, pads, kind = case
    rng = np.random.default_rng(sum(shape) + c_out + k)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((c_out, shape[1] // group, k, k)).astype(np.float32)
    codes, scale = ternary(w) if kind == "ternary" else int8_weights(w)
    attrs = dict(kernel_shape=[k, k], strides=[stride] * 2, dilations=[dil] * 2, pads=list(pads), group=group,
                 activation="Clip", clip_min=0.0, clip_max=6.0, x_scale=act_scale(np.abs(x).max() * 0.8),
                 weights=kind)
    bias = rng.standard_normal(c_out).astype(np.float32)
    got = OPS["PromConv"].kernel([x, codes, scale, bias], attrs)[0]
    want = run_reference("PromConv", [x, codes, scale, bias], attrs)[0]
    assert got.shape == want.shape and close(got, want)
    # and the float conv of the dequantised tensors is what those integers mean
    attrs_f = {k_: v for k_, v in attrs.items() if k_ not in ("x_scale", "weights")}
    xq = quantize_act(x, attrs["x_scale"]).astype(np.float32) * np.float32(attrs["x_scale"])
    wq = codes.astype(np.float32) * scale[:, None, None, None]
    assert np.allclose(run_reference("Conv", [xq, wq, bias], attrs_f)[0], want, atol=1e-4)


def test_ternary_weights_off_the_addition_kernel_count_multiplications():
    """Only a 1x1 stride-1 unpadded group-1 conv runs additions only; a strided ternary 1x1 runs on
    the int8 taps kernel, and its +-1 weights are counted as the multiplications they are."""
    from types import SimpleNamespace
    from haste_edge.prom.method import PromLayer
    codes = np.array([1, -1, 0, 1, 1, 0], np.int8).reshape(2, 3, 1, 1)
    weights = {"w": codes, "s": np.ones(2, np.float32)}
    counts = {}
    for stride in (1, 2):
        attrs = dict(kernel_shape=[1, 1], strides=[stride] * 2, dilations=[1, 1], pads=[0] * 4, group=1,
                     x_scale=0.1, weights="ternary")
        layer = PromLayer(SimpleNamespace(op="PromConv", inputs=["x", "w", "s"], attrs=attrs),
                          SimpleNamespace(weights=weights))
        out = (1, 2, 8 // stride, 8 // stride)
        counts[stride] = dict(zip(layer.fields, layer._counts((1, 3, 8, 8), out, attrs)))
    assert counts[1]["int8_mults"] == 0 and counts[1]["int32_adds"] == 4 * 64
    assert counts[2]["int8_mults"] == counts[2]["int32_adds"] == 4 * 16


@pytest.mark.parametrize("w", [7, 16, 37])        # rows shorter than, as long as, longer than a vector
def test_quantize_pad_codes_equal_numpy(w):
    x = (np.random.default_rng(1).standard_normal((2, 3, 5, w)) * 3).astype(np.float32)
    x[0, 0, 0, :3] = [0.5 * 4 / 127, 1.5 * 4 / 127, -2.5 * 4 / 127]      # ties round to even
    s = act_scale(4.0)
    out = np.full((2, 3, 8, w + 2), 99, np.int8)
    kernels.quantize_pad(x, inv_scale(s), 2, 1, out)
    assert np.array_equal(out[:, :, 2:7, 1:w + 1], quantize_act(x, s))
    out[:, :, 2:7, 1:w + 1] = 99
    assert (out == 99).all()               # the border (zeroed once when a layer is prepared) untouched


def test_accumulators_are_exact_integers():
    x = np.full((1, 300, 2, 2), 10.0, np.float32)        # every code 127: sums of 300 * 127 * 127
    codes = np.full((1, 300, 1, 1), 127, np.int8)
    attrs = dict(kernel_shape=[1, 1], strides=[1, 1], dilations=[1, 1], pads=[0] * 4, group=1, x_scale=act_scale(10))
    assert (conv_accumulators(x, codes, attrs) == 300 * 127 * 127).all()


def test_prom_gemm_matches_reference():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 40)).astype(np.float32)
    codes, scale = int8_weights(rng.standard_normal((10, 40)).astype(np.float32))
    bias = rng.standard_normal(10).astype(np.float32)
    attrs = {"x_scale": act_scale(np.abs(x).max())}
    assert close(OPS["PromGemm"].kernel([x, codes, scale, bias], attrs)[0],
                 run_reference("PromGemm", [x, codes, scale, bias], attrs)[0])


# ---------------------------------------------------------------- converter, file, counters

def _reference_run(graph: Graph, x: np.ndarray) -> np.ndarray:
    """The graph node by node on the reference kernels."""
    env = dict(graph.weights)
    env[next(iter(graph.inputs))] = x
    for n in graph.nodes:
        outs = run_reference(n.op, [env[i] if i else None for i in n.inputs], n.attrs)
        env.update(zip(n.outputs, outs))
    return env[graph.outputs[0]]


@pytest.fixture(scope="module")
def tiny_mobilenet():
    if not HAS_TORCH:
        pytest.skip("building the model needs torch (host only)")
    from converters.onnx_import import import_onnx
    from model_zoo import get_model
    return import_onnx(get_model("mobilenetv2_tiny"))


@pytest.mark.parametrize("mode", ["prom", "int8"])
def test_host_quantized_model_matches_reference_and_float(tiny_mobilenet, mode, tmp_path):
    from converters.prom import quantize_graph
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((16, 3, 32, 32)).astype(np.float32)
    graph = quantize_graph(tiny_mobilenet, calib, mode)
    ops = [n.op for n in graph.nodes]
    assert "Conv" not in ops and "Gemm" not in ops and ops.count("PromGemm") == 1
    kinds = {n.attrs["weights"] for n in graph.nodes if n.op == "PromConv" and n.attrs["kernel_shape"] == [1, 1]}
    assert kinds == ({"ternary"} if mode == "prom" else {"int8"})
    path = modelfile.save(graph, tmp_path / "q.haste")
    model = haste_edge.load(path)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    got = model.run({model.input_names[0]: x})[model.output_names[0]]
    want = _reference_run(modelfile.load(path), x)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    float_out = haste_edge.Model(tiny_mobilenet).run({model.input_names[0]: x})[model.output_names[0]]
    assert np.isfinite(got).all()
    if mode == "int8":      # int8 stays near the float model (ternary weights need the fine-tune:
        # post-training PROM moved these random-weight logits by 3x their size, int8 by 0.19x)
        assert np.abs(got - float_out).max() / np.abs(float_out).max() < 0.3
    stats = model.last_stats()
    for layer in stats.layers:
        if layer.method == "prom" and layer.counters["weight_bytes"][0] and layer.op == "PromConv":
            node = next(n for n in graph.nodes if n.name == layer.name)
            codes = graph.weights[node.inputs[1]]
            out_pixels = layer.counters["fp32_adds"][0] // codes.shape[0]
            assert layer.counters["int32_adds"][0] == np.count_nonzero(codes) * out_pixels
            if node.attrs["weights"] == "ternary":
                assert layer.executed[0] == 0            # no multiplications
    if mode == "prom":
        fp32 = modelfile.save(tiny_mobilenet, tmp_path / "f.haste").stat().st_size
        assert path.stat().st_size < fp32 / 3


def test_host_corrupt_ternary_entry_is_one_line_error(tiny_mobilenet, tmp_path):
    import zipfile
    from converters.prom import quantize_graph
    graph = quantize_graph(tiny_mobilenet, np.zeros((2, 3, 32, 32), np.float32) + 0.5)
    good = modelfile.save(graph, tmp_path / "q.haste")
    bad = tmp_path / "bad.haste"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        doc = modelfile.json.loads(bytes(np.load(zin.open("graph.json.npy"))).decode())
        key = next(e["key"] for e in doc["weights"].values() if e["dtype"] == "ternary")
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == key + ".npy":
                data = data[:-1] + b"\xff"          # code 3 in the last byte
            zout.writestr(item, data)
    with pytest.raises(ModelFileError, match="unused code 3"):
        modelfile.load(bad)


@pytest.mark.parametrize("calib", [None, "bad.npy", "missing"])
def test_host_convert_prom_calibration_errors(tmp_path, capsys, calib):
    from haste_edge.cli import main
    args = ["convert", str(Path(__file__).parents[1] / "models" / "fashion_resnet18.onnx"), "--prom", "-o", str(tmp_path / "o.haste")]
    if calib == "bad.npy":
        np.save(tmp_path / "bad.npy", np.zeros((2, 3, 28, 28), np.float32))    # 3 channels, not 1
    if calib:
        args += ["--calib", str(tmp_path / calib)]
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and ("calib" in err or "calibration" in err)
    assert not (tmp_path / "o.haste").exists()


def test_prom_conv_rejects_bad_codes():
    x = np.zeros((1, 4, 3, 3), np.float32)
    attrs = dict(kernel_shape=[1, 1], strides=[1, 1], dilations=[1, 1], pads=[0] * 4, group=1, activation="",
                 clip_min=None, clip_max=None, x_scale=0.1, weights="ternary")
    with pytest.raises(ValueError, match="ternary weight codes"):
        OPS["PromConv"].kernel([x, np.full((2, 4, 1, 1), 2, np.int8), np.ones(2, np.float32)], attrs)


@pytest.mark.parametrize("c_in", [258, 259, 600])
def test_ternary_sums_past_int16_range(c_in):
    """The ternary kernel sums runs of at most 258 rows in int16: longer sums must still be exact."""
    x = np.full((1, c_in, 3, 3), 10.0, np.float32)               # every code 127
    codes = np.ones((2, c_in, 1, 1), np.int8)
    codes[1] = -1
    attrs = dict(kernel_shape=[1, 1], strides=[1, 1], dilations=[1, 1], pads=[0] * 4, group=1, activation="",
                 clip_min=None, clip_max=None, x_scale=act_scale(10.0), weights="ternary")
    scale = np.ones(2, np.float32)
    got = OPS["PromConv"].kernel([x, codes, scale], attrs)[0]
    s = np.float32(attrs["x_scale"])
    assert np.allclose(got[0, 0], np.float32(c_in * 127) * s, rtol=1e-6)
    assert np.allclose(got[0, 1], -np.float32(c_in * 127) * s, rtol=1e-6)


# ---------------------------------------------------------------- the bundled models

def _fashion(n):
    from haste_edge.datasets import load_fashion_mnist
    from haste_edge.preprocess import normalise
    x, y = load_fashion_mnist("test")
    spec = haste_edge.load("fashion_mobilenetv2").meta["input"]
    return np.stack([normalise(im.astype(np.float32), spec) for im in x[:n]]), y[:n]


def test_host_bundled_mobilenet_matches_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    model = haste_edge.load("fashion_mobilenetv2")
    x = load_batch(haste_edge.sample_images(), model.meta["input"])
    got = model.run({"input": x})["logits"]
    sess = ort.InferenceSession(str(Path(__file__).parents[1] / "models" / "fashion_mobilenetv2.onnx"),
                                providers=["CPUExecutionProvider"])
    want = sess.run(None, {"input": x})[0]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_host_bundled_prom_model_is_compact_and_close_to_fp32():
    """The fine-tuned PROM file: every conv and the classifier quantised (1x1 convs ternary), under
    a third of the fp16 file's bytes, the reference kernels' logits, and top-1 on the first 1000
    test images within 1.5 points of fp32 (all 10,000 images: README "PROM")."""
    fp32, prom = haste_edge.load("fashion_mobilenetv2"), haste_edge.load("fashion_mobilenetv2_prom")
    kinds = [n.attrs.get("weights") for n in prom.graph.nodes if n.op == "PromConv"]
    pointwise = [n.attrs["kernel_shape"] == [1, 1] for n in prom.graph.nodes if n.op == "PromConv"]
    assert len(kinds) == len(pointwise) > 0 and all((k == "ternary") == p for k, p in zip(kinds, pointwise))
    fp16_bytes = sum(w.size * 2 for w in fp32.graph.weights.values())
    assert Path(prom.path).stat().st_size < fp16_bytes / 3
    x, y = _fashion(1000)
    got, want = prom.run({"input": x[:64]})["logits"], _reference_run(prom.graph, x[:64])
    # Fast and reference epilogues round differently in the last float bit (FMA, summation order);
    # where a value sits on an int8 rounding boundary the next layer's code moves by one, which moves
    # the logits by about a percent (5 of 200 images did here; the rest agree to 1e-7).
    rel = np.abs(got - want).max(1) / np.abs(want).max(1)
    assert np.mean(rel <= 1e-4) >= 0.85 and rel.max() <= 0.05, np.sort(rel)[-5:]
    acc = {name: float((m.run({"input": x})["logits"].argmax(1) == y).mean()) for name, m in
           (("fp32", fp32), ("prom", prom))}
    assert acc["fp32"] > 0.88 and acc["prom"] >= acc["fp32"] - 0.015, acc
