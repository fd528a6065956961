"""The command line: the main job on the bundled model, and one-line errors for bad input."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import haste_edge
from haste_edge import cli


def run_cli(*args):
    """The installed entry point in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "haste_edge.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_classify_default_model_and_image(capsys):
    assert cli.main(["classify"]) == 0
    out = capsys.readouterr().out
    image = haste_edge.sample_images()[0]
    true_label = image.stem.split("_", 3)[3].replace("-", " ")
    lines = out.splitlines()
    assert lines[0].startswith(str(image))
    top1 = lines[1].split("%", 1)[1].strip().lower().replace("-", " ").replace("/", " ")
    assert top1 == true_label.replace("/", " ")
    assert "latency:" in out and "dense MACs:" in out


def test_classify_all_bundled_images_top1(capsys):
    """The bundled images are real test images the model classifies correctly (its accuracy is ~93%)."""
    images = [str(p) for p in haste_edge.sample_images()]
    assert cli.main(["classify", "--top", "1", *images]) == 0
    out = capsys.readouterr().out.splitlines()
    hits = 0
    for i, path in enumerate(images):
        want = path.rsplit("_", 1)[-1].removesuffix(".png").replace("-", " ")
        got = out[2 * i + 1].split("%", 1)[1].strip().lower().replace("-", " ").replace("/", " ")
        hits += got == want.replace("/", " ")
    assert hits >= len(images) - 1


def test_info_lists_layers_and_total_macs(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    model = haste_edge.load()
    assert f"{sum(model.macs().values()):,} dense MACs" in out
    assert out.count(" Conv ") == sum(1 for n in model.graph.nodes if n.op == "Conv")


def test_convert_writes_a_loadable_file(tmp_path):
    from model_zoo import get_model
    src = get_model("resnet_tiny")
    out = tmp_path / "r.haste"
    assert cli.main(["convert", str(src), "-o", str(out)]) == 0
    model = haste_edge.load(out)
    x = np.zeros(model.input_shape(1), np.float32)
    assert model.run({model.input_names[0]: x})[model.output_names[0]].shape == (1, 10)


def test_eval_fashion_mnist_subset(capsys):
    assert cli.main(["eval", "--limit", "200"]) == 0
    out = capsys.readouterr().out
    acc = float(out.split("accuracy:")[1].split()[0])
    assert acc >= 0.85


@pytest.mark.parametrize("make_bad, expect", [
    (lambda p: p.write_bytes(b"this is not an image"), "not a readable image"),
    (lambda p: None, "no such file"),
])
def test_bad_image_is_one_line(tmp_path, make_bad, expect):
    bad = tmp_path / "bad.png"
    make_bad(bad)
    r = run_cli("classify", str(bad))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and expect in r.stderr and "bad.png" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_model_file_is_one_line(tmp_path):
    bad = tmp_path / "broken.haste"
    bad.write_bytes(haste_edge.DEFAULT_MODEL.read_bytes()[:5000])
    r = run_cli("info", str(bad))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "broken.haste" in r.stderr and "corrupt or truncated" in r.stderr


def test_unsupported_op_is_one_line_and_writes_nothing(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="upsample")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])], [scales])
    src = tmp_path / "up.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    r = run_cli("convert", str(src), "-o", str(tmp_path / "up.haste"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0
    assert "'Resize'" in r.stderr and "'upsample'" in r.stderr and "opset 17" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["up.onnx"]
