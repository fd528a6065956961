"""The command line: the main job on the bundled model, and one-line errors for bad input."""
from __future__ import annotations

import os
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


def test_wrong_kernel_switches_get_a_notice_and_the_defaults():
    env = {**os.environ, "HASTE_EDGE_CONV": "bogus", "HASTE_EDGE_PREFETCH_K": "-1", "HASTE_EDGE_MICROKERNEL": "fast"}
    r = subprocess.run([sys.executable, "-m", "haste_edge.cli", "--threads", "1", "classify"], capture_output=True,
                       text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    notices = [line for line in r.stderr.splitlines() if line.startswith("haste-edge: ignoring")]
    assert len(notices) == 3 and "Traceback" not in r.stderr
    assert any("HASTE_EDGE_CONV='bogus'" in n and "using auto" in n for n in notices)
    assert any("HASTE_EDGE_PREFETCH_K='-1'" in n and "using 64" in n for n in notices)
    assert "Ankle boot" in r.stdout


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


def test_info_memory(capsys):
    """Weights and activation buffers always; the kernels' state with --memory (after one run)."""
    import re
    assert cli.main(["info"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    model = haste_edge.load()
    weights = sum(v.nbytes for v in model.graph.weights.values()) / 2 ** 20
    assert line.startswith(f"memory: weights {weights:.2f} MiB; activation buffers ") and "kernel state" not in line
    assert cli.main(["--threads", "1", "info", "--memory"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    state = float(re.search(r"kernel state \(packed weights, HASTE set-up\) ([0-9.]+) MiB on 1 thread", line)[1])
    assert 0.5 * weights < state < 2 * weights       # on one thread the convs' weights are packed for the microkernel


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


# --- what a new user meets: versions, help, refused numbers, one-line errors ---------------------

def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"haste-edge {haste_edge.__version__}"


def test_top_level_help_is_for_users(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "library" not in out
    for command in ("classify", "profile", "bench", "warmup", "info", "convert", "eval"):
        assert f"haste-edge {command}" in out or f"\n    {command} " in out


def _subparsers():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return parser, sub.choices


def test_every_option_has_help():
    parser, commands = _subparsers()
    for name, p in [("haste-edge", parser), *commands.items()]:
        for a in p._actions:
            if a.dest in ("help", "command") or a.help == "==SUPPRESS==":
                continue
            assert a.help, f"{name}: {a.option_strings or a.dest} has no help text"


def test_model_option_on_every_command():
    _, commands = _subparsers()
    for name in ("classify", "profile", "bench", "warmup", "info", "eval"):
        assert commands[name].parse_args(["--model", "m.haste"]).model == "m.haste", name
        assert commands[name].parse_args(["-m", "m.haste"]).model == "m.haste", name


def test_info_with_model_option(capsys):
    assert cli.main(["info", "-m", str(haste_edge.DEFAULT_MODEL)]) == 0
    assert str(haste_edge.DEFAULT_MODEL) in capsys.readouterr().out
    assert cli.main(["info", str(haste_edge.DEFAULT_MODEL), "-m", str(haste_edge.DEFAULT_MODEL)]) == 2


@pytest.mark.parametrize("args, names", [
    (["--threads", "0", "info"], "--threads"),
    (["--threads", "-1", "info"], "--threads"),
    (["--threads", "999", "info"], "--threads 999"),
    (["--threads", "two", "info"], "--threads"),
    (["classify", "--top", "0"], "--top"),
    (["classify", "--runs", "0"], "--runs"),
    (["profile", "--runs", "0"], "--runs"),
    (["eval", "--batch", "0"], "--batch"),
    (["eval", "--limit", "-5"], "--limit"),
    (["bench", "--threads", "0"], "--threads"),
])
def test_bad_numbers_refused_in_one_line(capsys, args, names):
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().count("\n") == 0 and names in captured.err


def test_unexpected_exception_is_one_line_and_traceback_on_request(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("kernel state lost\nsecond line")
    monkeypatch.setattr(cli, "cmd_info", broken)
    assert cli.main(["info"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0
    assert "unexpected RuntimeError: kernel state lost second line" in err and "--traceback" in err
    with pytest.raises(RuntimeError):
        cli.main(["--traceback", "info"])


def test_ctrl_c_exits_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "cmd_info", interrupted)
    assert cli.main(["info"]) == 130
    assert "Traceback" not in capsys.readouterr().err


def test_closed_pipe_is_quiet():
    """`haste-edge info | head -1`: the reader leaves before the output is written."""
    p = subprocess.Popen([sys.executable, "-m", "haste_edge.cli", "info"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=300) == 141 and err == ""


def test_convert_without_onnx_names_the_extra(tmp_path):
    from model_zoo import get_model
    code = ("import sys; sys.modules['onnx'] = None; from haste_edge.cli import main; "
            f"sys.exit(main(['convert', {str(get_model('resnet_tiny'))!r}, '-o', {str(tmp_path / 'r.haste')!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "haste-edge[convert]" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "r.haste").exists()


def test_eval_without_the_data_set_says_how_to_get_it(tmp_path, capsys):
    assert cli.main(["eval", "--fashion-mnist", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and str(tmp_path) in err
    assert "apt install dataset-fashion-mnist" in err and "--fashion-mnist DIR" in err


def _png_header_only(w: int, h: int) -> bytes:
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("make_bad, expect", [
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_bytes(_png_header_only(30000, 30000)), "image too large"),
])
def test_more_bad_images_are_one_line(tmp_path, make_bad, expect):
    test_bad_image_is_one_line(tmp_path, make_bad, expect)


def _zip_of_other(p):
    import zipfile
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", b"x")


@pytest.mark.parametrize("name, make_bad, expect", [
    ("random.haste", lambda p: p.write_bytes(np.random.default_rng(0).bytes(3000)), "bad magic"),
    ("magic.haste", lambda p: p.write_bytes(b"XXXX" + haste_edge.DEFAULT_MODEL.read_bytes()[4:]), "bad magic"),
    ("folder.haste", lambda p: p.mkdir(), "is a directory"),
    ("empty.haste", lambda p: p.write_bytes(b""), "empty file"),
    ("torch.haste", _zip_of_other, "not a haste-edge model file"),
    ("random.bin", lambda p: p.write_bytes(b"\xff" + np.random.default_rng(0).bytes(3000)), "nor an ONNX model"),
])
def test_model_file_messages_say_what_is_wrong(tmp_path, name, make_bad, expect):
    bad = tmp_path / name
    make_bad(bad)
    r = run_cli("info", "--model", str(bad))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and name in r.stderr and expect in r.stderr
    assert "ONNX model" not in r.stderr or name.endswith(".bin")


def test_result_file_is_world_readable(tmp_path):
    import os

    from haste_edge.bench.report import write_json
    old = os.umask(0o077)
    try:
        write_json(tmp_path / "r.json", {"format": "x"})
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644


# --- an ONNX model without a <model>.json, fed as onnxruntime users feed it -------------------------

def _tiny_onnx(path, channels=1, size=16):
    """Conv -> Relu -> global pool -> Gemm, 3 classes, seeded weights, batch dimension free."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, channels, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "fc_b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="pool"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                            ["N", channels, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _onnxruntime_probs(model_path, image, mode, size, mean=0.0, std=1.0):
    import onnxruntime as ort
    from PIL import Image
    im = Image.open(image).convert(mode).resize((size, size), Image.BILINEAR)
    x = np.asarray(im, np.float32) / 255
    x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)
    x = ((x - np.float32(mean)) / np.float32(std))[None].astype(np.float32)
    y = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0][0]
    e = np.exp(y - y.max())
    return e / e.sum()


def _printed_probs(out):
    return {line.split("%", 1)[1].strip(): float(line.split("%")[0]) / 100
            for line in out.splitlines() if line.startswith("  ") and "%" in line}


@pytest.mark.parametrize("channels, mode", [(1, "L"), (3, "RGB")])
def test_onnx_without_sidecar_runs_like_onnxruntime(tmp_path, capsys, channels, mode):
    model = _tiny_onnx(tmp_path / "tiny.onnx", channels)
    image = haste_edge.sample_images()[0]
    assert cli.main(["classify", "--model", str(model), "--runs", "1", str(image)]) == 0
    out, err = capsys.readouterr()
    want = _onnxruntime_probs(model, image, mode, 16)
    got = _printed_probs(out)
    assert sorted(got) == ["class 0", "class 1", "class 2"]
    assert all(abs(got[f"class {k}"] - want[k]) < 6e-5 for k in range(3))  # printed to 0.01 %
    note = err.strip()
    assert note.count("\n") == 0 and "tiny.onnx stores no preprocessing; assumed" in note
    assert f"{mode} 16x16" in note and "--labels" in note


def test_onnx_without_sidecar_options(tmp_path, capsys):
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    (tmp_path / "labels.txt").write_text("cat\ndog\n\nbird\n")
    image = haste_edge.sample_images()[1]
    assert cli.main(["classify", "-m", str(model), "--runs", "1", "--mean", "0.5", "--std", "0.25",
                     "--labels", str(tmp_path / "labels.txt"), str(image)]) == 0
    out, err = capsys.readouterr()
    want = _onnxruntime_probs(model, image, "L", 16, mean=0.5, std=0.25)
    got = _printed_probs(out)
    assert all(abs(got[name] - want[k]) < 6e-5 for k, name in enumerate(["cat", "dog", "bird"]))
    assert "mean [0.5], std [0.25], labels from" in err


@pytest.mark.parametrize("extra, expect", [
    (["--mean", "0.1,0.2"], "give 1 value (the model input has 1 channel)"),
    (["--std", "0"], "--std 0: must be > 0"),
    (["--size", "big"], "--size big"),
    (["--size", "8,8"], "expected shape"),
    (["--labels", "LABELS"], "2 labels, but the model has 3 classes"),
])
def test_onnx_without_sidecar_bad_options_one_line(tmp_path, capsys, extra, expect):
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    extra = [str(tmp_path / "labels.txt") if a == "LABELS" else a for a in extra]
    assert cli.main(["classify", "-m", str(model), "--runs", "1", *extra,
                     str(haste_edge.sample_images()[0])]) == 2
    err = capsys.readouterr().err
    assert expect in err and "error" in err.splitlines()[-1] and err.count("error") == 1
