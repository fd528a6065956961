"""ImageNet-size ResNet-18, VGG-11 and MobileNetV2 (converters/dense_zoo.py: synthetic calibrated
weights, BN folded) against onnxruntime on a real photo."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import haste_edge
from haste_edge.preprocess import load_batch
from model_zoo import foolbox_images, get_model

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                reason="building the models needs torch (host only)")


@pytest.mark.parametrize("name", ["resnet18_224", "vgg11_224", "mobilenetv2_224"])
def test_dense_zoo_matches_onnxruntime(name):
    import onnxruntime as ort

    path = get_model(name)
    model = haste_edge.load(path)
    x = load_batch([foolbox_images()[0][0]], model.meta["input"])
    assert x.shape == (1, 3, 224, 224)
    got = model.run({model.input_names[0]: x})[model.output_names[0]]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    want = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert got.shape == want.shape == (1, 1000)
    # synthetic weights that act like trained ones: finite logits, not all equal
    assert np.isfinite(got).all() and got.std() > 1e-3
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-4
