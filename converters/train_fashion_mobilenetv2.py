#!/usr/bin/env python3
"""Train the PROM model: a MobileNetV2-style net on Fashion-MNIST, fp32 first, then a short
quantisation-aware fine-tune (QAT) with PROM's rule, and export both to ONNX.

Host-side only (torch 2.13.0 CPU). Writes to --out-dir:
  fashion_mobilenetv2.onnx       fp32 (BatchNorm folded by our converter, as for any ONNX model)
  fashion_mobilenetv2_qat.onnx   the QAT weights, BN folded, still fp32: `haste-edge convert --prom`
                                 applies the same rule to them (haste_edge/prom/quantize.py), so the
                                 deployed model computes what the fine-tune trained
  fashion_mobilenetv2.json       preprocessing and labels (as fashion_resnet18.json)
  calib.npy                      the calibration inputs (the first --calib training images, preprocessed)

    python converters/train_fashion_mobilenetv2.py                  # full run (about 40 min, 2 cores)
    python converters/train_fashion_mobilenetv2.py --epochs 1 --qat-epochs 1 --limit 4096   # timing check
    python converters/train_fashion_mobilenetv2.py --from-onnx artifacts/fashion_mobilenetv2.onnx --qat-epochs 4
                                                    # the fine-tune alone, from the fp32 export

The QAT forward pass: BN folded into each conv; pointwise (1x1, group 1) weights ternary per output
channel, all other conv and Linear weights int8 symmetric per output channel, every conv/Linear input
int8 symmetric per tensor with a scale calibrated as max|x| / 127 over the calibration images in the
float network (fixed during an epoch, re-calibrated after it). Straight-through estimator for the weights; the activation
rounding passes the gradient inside the clipping range.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_fashion_resnet import (FMNIST_MEAN, FMNIST_STD, augment, datasets, preprocess,  # noqa: E402
                                  set_seeds, verify_onnx)

MODEL_NAME = "fashion_mobilenetv2"
# ternary rule defaults (the method document's): threshold 0.7 * mean|W|, scale = mean |W| above it
TERNARY_THRESHOLD = 0.7


# --------------------------------------------------------------------------- quantisation (torch)

def ternary_weights(w: torch.Tensor, ratio: float = TERNARY_THRESHOLD) -> torch.Tensor:
    """{-a, 0, +a} per output channel (row of w): |w| <= ratio * mean|w| -> 0, else sign * a with a
    the mean |w| of the kept weights. Same rule as haste_edge.prom.quantize.ternary."""
    flat = w.reshape(w.shape[0], -1)
    mag = flat.abs()
    keep = mag > ratio * mag.mean(1, keepdim=True)
    a = (mag * keep).sum(1, keepdim=True) / keep.sum(1, keepdim=True).clamp(min=1)
    return (torch.sign(flat) * keep * a).reshape(w.shape)


def int8_weights(w: torch.Tensor) -> torch.Tensor:
    """Symmetric per output channel: scale max|w| / 127, round half to even (as NumPy's rint)."""
    flat = w.reshape(w.shape[0], -1)
    s = (flat.abs().amax(1, keepdim=True) / 127).clamp(min=1e-30)
    return (torch.round(flat / s).clamp(-127, 127) * s).reshape(w.shape)


def ste(w: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """q in the forward pass, the identity's gradient in the backward pass."""
    return w + (q - w).detach()


def fake_quant_act(x: torch.Tensor, scale: float) -> torch.Tensor:
    q = torch.round(x / scale).clamp(-127, 127) * scale
    inside = (x.abs() <= 127 * scale).to(x.dtype)
    return x * inside + (q - x * inside).detach()


# --------------------------------------------------------------------------- model

class ConvBN(nn.Module):
    """Conv (no bias) + BN + optional ReLU6; after fold(): conv with bias, BN gone, and in QAT mode
    the weights and the input fake-quantised by PROM's rule."""

    def __init__(self, cin, cout, k=1, stride=1, groups=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = act
        self.pointwise = k == 1 and groups == 1
        self.qat = False
        self.register_buffer("in_scale", torch.tensor(0.0))
        self.observe = False
        self.seen_max = 0.0

    @torch.no_grad()
    def fold(self):
        g = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
        conv = nn.Conv2d(self.conv.in_channels, self.conv.out_channels, self.conv.kernel_size,
                         self.conv.stride, self.conv.padding, groups=self.conv.groups, bias=True)
        conv.weight.copy_(self.conv.weight * g[:, None, None, None])
        conv.bias.copy_(self.bn.bias - self.bn.running_mean * g)
        self.conv, self.bn = conv, nn.Identity()

    def forward(self, x):
        if self.observe:
            self.seen_max = max(self.seen_max, float(x.detach().abs().max()))
        w = self.conv.weight
        if self.qat:
            x = fake_quant_act(x, float(self.in_scale))
            w = ste(w, ternary_weights(w) if self.pointwise else int8_weights(w))
        y = self.bn(F.conv2d(x, w, self.conv.bias, self.conv.stride, self.conv.padding, 1, self.conv.groups))
        return F.relu6(y) if self.act else y


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        mid = cin * expand
        layers = [ConvBN(cin, mid)] if expand != 1 else []
        layers += [ConvBN(mid, mid, 3, stride, groups=mid), ConvBN(mid, cout, act=False)]
        self.body = nn.Sequential(*layers)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.skip else self.body(x)


class FashionMobileNetV2(nn.Module):
    """MobileNetV2 for 28x28 grey images: 3x3 stem, inverted residual blocks (expansion t, width c,
    repeats n, first stride s), 1x1 head conv, global average pool, Linear."""

    # the first block halves the map: on torch's CPU kernels a 28x28 stage made an epoch 2-3x longer
    SETTING = ((1, 16, 1, 2), (4, 24, 2, 1), (4, 32, 3, 2), (4, 64, 3, 1), (4, 96, 2, 1))

    def __init__(self, num_classes=10, stem=32, head=384):
        super().__init__()
        layers, cin = [ConvBN(1, stem, 3)], stem
        for t, c, n, s in self.SETTING:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(ConvBN(cin, head))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(head, num_classes)
        self.qat = False
        self.register_buffer("fc_scale", torch.tensor(0.0))
        self.observe = False
        self.seen_max = 0.0

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        if self.observe:
            self.seen_max = max(self.seen_max, float(x.detach().abs().max()))
        if self.qat:
            x = fake_quant_act(x, float(self.fc_scale))
            return F.linear(x, ste(self.fc.weight, int8_weights(self.fc.weight)), self.fc.bias)
        return self.fc(x)

    def convs(self):
        return [m for m in self.modules() if isinstance(m, ConvBN)]


@torch.no_grad()
def calibrate(model, x_calib):
    """Each quantised input's scale = max|x| / 127 over the calibration images, observed in the
    float network (the converter's rule: haste_edge/prom/calibrate.py)."""
    parts = [*model.convs(), model]
    was = model.qat
    set_qat(model, False)
    model.eval()
    for p in parts:
        p.observe, p.seen_max = True, 0.0
    for i in range(0, len(x_calib), 256):
        model(x_calib[i:i + 256])
    for p in parts:
        p.observe = False
        (p.fc_scale if p is model else p.in_scale).fill_(max(p.seen_max, 1e-8) / 127)
    set_qat(model, was)


def set_qat(model, on: bool):
    for c in model.convs():
        c.qat = on
    model.qat = on


# --------------------------------------------------------------------------- training

@torch.no_grad()
def evaluate(model, x_test, y_test, batch=1000) -> float:
    model.eval()
    x_test = x_test.contiguous(memory_format=torch.channels_last)
    correct = sum((model(x_test[i:i + batch]).argmax(1) == y_test[i:i + batch]).sum().item()
                  for i in range(0, len(x_test), batch))
    return correct / len(x_test)


def train(model, x_train, y_train, epochs, lr, batch, gen, log, after_epoch=None, decay=4e-5):
    n = len(x_train)
    steps = n // batch
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD([{"params": [p for p in params if p.ndim > 1], "weight_decay": decay},
                           {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}],
                          lr=lr, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=epochs, steps_per_epoch=steps,
                                                pct_start=0.25 if epochs > 2 else 0.1,
                                                div_factor=20.0, final_div_factor=200.0)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    for epoch in range(1, epochs + 1):
        model.train()
        t0 = time.time()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for step in range(steps):
            idx = perm[step * batch:(step + 1) * batch]
            xb = augment(x_train[idx], gen).contiguous(memory_format=torch.channels_last)
            loss = loss_fn(model(xb), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        if after_epoch:
            after_epoch()
        log(f"  epoch {epoch}/{epochs} loss {total / steps:.4f} ({time.time() - t0:.0f} s)")


@torch.no_grad()
def load_onnx_weights(model, path):
    """The folded model's parameters from this script's own fp32 export (names kept by the exporter)."""
    import onnx
    from onnx import numpy_helper
    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
    params = dict(model.named_parameters())
    missing = [k for k in params if k not in init]
    if missing:
        raise SystemExit(f"{path}: not this model's fp32 export (no {missing[0]})")
    for k, p in params.items():
        p.copy_(torch.from_numpy(init[k].copy()))


def export(model, path):
    model = copy.deepcopy(model).float().eval().to(memory_format=torch.contiguous_format)
    set_qat(model, False)
    torch.onnx.export(model, torch.randn(1, 1, 28, 28), path, opset_version=17, dynamo=False,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--qat-epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--qat-lr", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--calib", type=int, default=512, help="calibration images (the first training images)")
    p.add_argument("--limit", type=int, default=0, help="only the first N training images (timing checks)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out-dir", default="artifacts")
    p.add_argument("--from-onnx", default=None, metavar="FILE",
                   help="skip the fp32 training: start the fine-tune from this script's fp32 export "
                        "(fashion_mobilenetv2.onnx: BN already folded, parameter names kept)")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    set_seeds(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    t_start = time.time()

    def log(msg):
        print(f"[{time.time() - t_start:6.0f} s] {msg}", flush=True)

    train_x, train_y = datasets.load_fashion_mnist("train")
    test_x, test_y = datasets.load_fashion_mnist("test")
    if args.limit:
        train_x, train_y = train_x[:args.limit], train_y[:args.limit]
    x_train, y_train = preprocess(train_x), torch.from_numpy(train_y.astype(np.int64))
    x_test, y_test = preprocess(test_x), torch.from_numpy(test_y.astype(np.int64))
    x_calib = x_train[:args.calib]

    model = FashionMobileNetV2().to(memory_format=torch.channels_last)   # faster depthwise convs
    log(f"params {sum(p.numel() for p in model.parameters()):,}; train {len(x_train)}, "
        f"{0 if args.from_onnx else args.epochs} fp32 + {args.qat_epochs} QAT epochs, batch {args.batch_size}, "
        f"seed {args.seed}")
    if args.from_onnx:
        for c in model.convs():
            c.fold()
        load_onnx_weights(model, args.from_onnx)
    else:
        train(model, x_train, y_train, args.epochs, args.lr, args.batch_size, gen, log)
    fp32_acc = evaluate(model, x_test, y_test)
    log(f"fp32 test accuracy {fp32_acc * 100:.2f} %")

    if not args.from_onnx:
        for c in model.convs():
            c.fold()
    model = model.to(memory_format=torch.channels_last)
    set_qat(model, True)
    calibrate(model, x_calib)
    ptq_acc = evaluate(model, x_test, y_test)
    log(f"PROM post-training (torch fake-quant) test accuracy {ptq_acc * 100:.2f} %")
    os.makedirs(args.out_dir, exist_ok=True)
    fp32 = copy.deepcopy(model)
    set_qat(fp32, False)
    if not args.from_onnx:
        export(fp32, os.path.join(args.out_dir, f"{MODEL_NAME}.onnx"))

    # BN is folded: the fine-tune trains conv weights and biases under the quantised forward pass
    train(model, x_train, y_train, args.qat_epochs, args.qat_lr, args.batch_size, gen, log,
          after_epoch=lambda: calibrate(model, x_calib), decay=0.0)
    qat_acc = evaluate(model, x_test, y_test)
    log(f"PROM QAT (torch fake-quant) test accuracy {qat_acc * 100:.2f} %")
    qat_path = os.path.join(args.out_dir, f"{MODEL_NAME}_qat.onnx")
    export(model, qat_path)

    np.save(os.path.join(args.out_dir, "calib.npy"), x_calib.numpy())
    meta = {"name": MODEL_NAME, "dataset": "fashion-mnist",
            "input": {"mode": "L", "size": [28, 28], "resize": 28, "crop": 28, "scale": 1.0 / 255.0,
                      "mean": [FMNIST_MEAN], "std": [FMNIST_STD], "layout": "NCHW"},
            "labels": list(datasets.FASHION_MNIST_LABELS),
            "test_accuracy_torch": {"fp32": round(fp32_acc, 6), "prom_ptq_fake_quant": round(ptq_acc, 6),
                                    "prom_qat_fake_quant": round(qat_acc, 6)}}
    with open(os.path.join(args.out_dir, f"{MODEL_NAME}.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    fp32_path = args.from_onnx or os.path.join(args.out_dir, f"{MODEL_NAME}.onnx")
    with torch.no_grad():
        logits = fp32.eval()(x_test[:500])
    log(f"onnxruntime vs torch (fp32, 500 images): max abs diff "
        f"{verify_onnx(fp32_path, x_test[:500], logits):.2e}")
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
