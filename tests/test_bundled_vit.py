"""The bundled vision transformers (fashion_vit: one frame; fashion_vit_t4: the same weights reading
four views of each item) against onnxruntime, their frames' views, and HTTM through the Python API
and the command line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import haste_edge
from haste_edge import cli
from haste_edge.datasets import load_fashion_mnist
from haste_edge.httm.method import attention_summary
from haste_edge.preprocess import frame_views, load_batch, normalise

MODELS = Path(__file__).parents[1] / "models"


def _fashion(model, n):
    spec = model.meta["input"]
    x, y = load_fashion_mnist("test")
    return frame_views(np.stack([normalise(im.astype(np.float32), spec) for im in x[:n]]), spec), y[:n]


@pytest.mark.parametrize("name", ["fashion_vit", "fashion_vit_t4"])
def test_host_bundled_vit_matches_onnxruntime(name):
    ort = pytest.importorskip("onnxruntime")
    model = haste_edge.load(name)
    x = load_batch(haste_edge.sample_images(), model.meta["input"])
    assert x.shape[1:] == tuple(model.input_shape(1)[1:])
    got = model.run({"input": x})["logits"]
    sess = ort.InferenceSession(str(MODELS / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"input": x})[0]
    # float32 both; different summation orders and exp: within 1e-4 of the largest logit
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_frame_views_are_the_image_then_shifted_noisy_copies_the_same_each_time():
    model = haste_edge.load("fashion_vit_t4")
    spec = model.meta["input"]
    x, _ = load_fashion_mnist("test")
    one = np.stack([normalise(im.astype(np.float32), spec) for im in x[:8]])
    views = frame_views(one, spec)
    assert views.shape == (8, 4, 28, 28)
    np.testing.assert_array_equal(views[:, 0], one[:, 0])
    np.testing.assert_array_equal(views, frame_views(one, spec))
    assert 0.05 < np.std(views[:, 1:] - views[:, :1]) < 3          # shifted and noisy, not unrelated
    with pytest.raises(haste_edge.InputError, match="one-channel"):
        frame_views(np.zeros((2, 3, 28, 28), np.float32), spec)


def test_vit_accuracy_and_httm_counts_on_four_frames():
    """Dense accuracy on 500 test images well above chance for both files; HTTM keeps the counted
    fractions, executes fewer attention MACs and stays within 3 points there (all 10,000 images:
    benchmarks/results/httm_fashion_vit_t4.md)."""
    one, four = haste_edge.load("fashion_vit"), haste_edge.load("fashion_vit_t4")
    x1, y = _fashion(one, 500)
    x4, _ = _fashion(four, 500)
    acc1 = float((one.run({"input": x1})["logits"].argmax(1) == y).mean())
    dense4 = four.run({"input": x4})["logits"]
    acc4 = float((dense4.argmax(1) == y).mean())
    assert acc1 > 0.8 and acc4 > 0.8, (acc1, acc4)
    layers = four.set_httm("q=0.5,kv=0.5,ns=8,nt=4")
    assert len(layers) == 6
    merged = four.run({"input": x4})["logits"]
    summary = attention_summary(four.last_stats())
    assert summary["queries_kept"] == pytest.approx(0.5, abs=0.02)
    assert summary["executed_macs"] < 0.3 * summary["dense_macs"]
    assert float((merged.argmax(1) == y).mean()) >= acc4 - 0.03
    assert not np.array_equal(merged, dense4)
    four.set_httm(None)                         # back to dense: the dense logits again
    np.testing.assert_array_equal(four.run({"input": x4})["logits"], dense4)


def test_classify_with_httm_prints_the_attention_counts(capsys):
    assert cli.main(["--threads", "1", "classify", "-m", "fashion_vit_t4", "--httm", "fast"]) == 0
    out = capsys.readouterr().out
    assert "HTTM on 6 attention layers" in out and "of queries" in out


@pytest.mark.parametrize("args, words", [
    (["classify", "-m", "fashion_vit", "--httm", "q=2"], "kept fraction"),
    (["classify", "-m", "fashion_vit", "--httm", "x=1"], "unknown field 'x'"),
    (["classify", "-m", "fashion_vit", "--httm", "q=0.5", "--haste", "L=12"], "one compression method"),
    (["classify", "--httm", "q=0.5"], "no attention layer"),
])
def test_bad_httm_use_is_one_line(args, words, capsys):
    assert cli.main(args) != 0
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err and "Traceback" not in err


def test_bench_with_httm_feeds_the_frames_and_names_the_method(capsys):
    assert cli.main(["--threads", "1", "bench", "fashion_vit_t4", "--httm", "fast", "--runs", "3",
                     "--idle-seconds", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "HTTM fast on 6 attention layers" in out and "HTTM overhead ops" in out
