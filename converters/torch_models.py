"""Small torch CNNs with random (seeded) weights, exported to ONNX as converter/engine test models.

Each builder returns an eval-mode model for 3x32x32 input and 10 classes whose BatchNorm layers
carry random affine parameters and non-trivial running statistics, so folding BN into the
preceding conv is really exercised (an identity BN would hide folding bugs).

  resnet_tiny       CIFAR ResNet, BasicBlocks, 1x1-conv projection shortcuts, Flatten + Gemm.
  vgg_tiny          VGG-BN, MaxPool, `x.view(x.size(0), -1)` flatten (exports as a
                    Shape/Gather/Unsqueeze/Concat/Reshape chain), Linear/ReLU/Dropout head.
  mobilenetv2_tiny  inverted residuals, depthwise convs, ReLU6 (Clip), stride-2 blocks.
  mobilenetv3_tiny  HardSwish activations and squeeze-excite (GlobalAveragePool -> 1x1 conv ->
                    ReLU -> 1x1 conv -> HardSigmoid/Sigmoid -> broadcasting Mul).

`export()` keeps BatchNormalization nodes in the ONNX graph by default (the TorchScript exporter
would otherwise fuse them into the convs itself); pass fold_bn=True to get exporter-fused convs.

Usage:  python converters/torch_models.py --out-dir artifacts/test_models
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

NUM_CLASSES = 10
INPUT_SHAPE = (3, 32, 32)  # per-sample CHW shape of every model here


# ---------------------------------------------------------------- building blocks

def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    """Conv (no bias, 'same'-style symmetric padding) followed by BatchNorm."""
    return [nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout)]


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN, identity or 1x1 conv-BN projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(*conv_bn(cin, cout, 3, stride), nn.ReLU(inplace=True),
                                  *conv_bn(cout, cout, 3, 1))
        needs_projection = stride != 1 or cin != cout
        self.shortcut = nn.Sequential(*conv_bn(cin, cout, 1, stride)) if needs_projection else nn.Identity()

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNetTiny(nn.Module):
    def __init__(self, widths=(16, 32, 64), blocks_per_stage=2):
        super().__init__()
        layers = [*conv_bn(3, widths[0]), nn.ReLU(inplace=True)]
        cin = widths[0]
        for stage, width in enumerate(widths):
            for b in range(blocks_per_stage):
                stride = 2 if stage > 0 and b == 0 else 1
                layers.append(BasicBlock(cin, width, stride))
                cin = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)          # -> GlobalAveragePool
        self.fc = nn.Linear(cin, NUM_CLASSES)        # -> Gemm

    def forward(self, x):
        x = self.pool(self.features(x))
        return self.fc(torch.flatten(x, 1))          # -> Flatten


class VGGTiny(nn.Module):
    def __init__(self, cfg=(16, 16, "M", 32, 32, "M", 64, "M")):
        super().__init__()
        layers, cin = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [*conv_bn(cin, v), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(cin * 4 * 4, 64), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(64, NUM_CLASSES))

    def forward(self, x):
        x = self.features(x)
        # Deliberately the old flatten idiom: the export computes the target shape at run time
        # (Shape -> Gather -> Unsqueeze -> Concat -> Reshape), which the converter must fold.
        x = x.view(x.size(0), -1)
        return self.classifier(x)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> 3x3 depthwise (stride s) -> 1x1 linear project,
    residual add when shape is kept. Optional squeeze-excite after the depthwise conv."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int,
                 act=nn.ReLU6, se_gate: type | None = None):
        super().__init__()
        hidden = cin * expand
        layers = []
        if expand != 1:
            layers += [*conv_bn(cin, hidden, 1), act()]
        layers += [*conv_bn(hidden, hidden, 3, stride, groups=hidden), act()]
        if se_gate is not None:
            layers.append(SqueezeExcite(hidden, gate=se_gate))
        layers += conv_bn(hidden, cout, 1)           # linear bottleneck: no activation
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class SqueezeExcite(nn.Module):
    """x * gate(W2 relu(W1 mean_hw(x))): the (N,C,1,1) gate broadcasts over H and W in Mul."""

    def __init__(self, channels: int, reduction: int = 4, gate: type = nn.Hardsigmoid):
        super().__init__()
        squeezed = max(8, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)                      # -> GlobalAveragePool
        self.reduce = nn.Conv2d(channels, squeezed, 1)           # 1x1 conv with bias
        self.expand = nn.Conv2d(squeezed, channels, 1)
        self.gate = gate()                                       # -> HardSigmoid or Sigmoid

    def forward(self, x):
        s = self.expand(torch.relu(self.reduce(self.pool(x))))
        return x * self.gate(s)                                  # -> Mul with broadcasting


class MobileNetTiny(nn.Module):
    # (expand ratio, output channels, stride, squeeze-excite gate or None)
    V2_CFG = ((1, 16, 1, None), (4, 24, 2, None), (4, 24, 1, None),
              (4, 32, 2, None), (4, 32, 1, None), (4, 48, 1, None))
    V3_CFG = ((1, 16, 1, nn.Hardsigmoid), (4, 24, 2, None), (4, 24, 1, nn.Sigmoid),
              (4, 32, 2, nn.Hardsigmoid), (4, 32, 1, nn.Hardsigmoid))

    def __init__(self, cfg, act, head_channels: int):
        super().__init__()
        layers, cin = [*conv_bn(3, 16, 3, 1), act()], 16
        for expand, cout, stride, gate in cfg:
            layers.append(InvertedResidual(cin, cout, stride, expand, act, gate))
            cin = cout
        layers += [*conv_bn(cin, head_channels, 1), act(), nn.AdaptiveAvgPool2d(1)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(head_channels, NUM_CLASSES))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


# ---------------------------------------------------------------- random weights

@torch.no_grad()
def randomise(model: nn.Module, seed: int, input_shape=INPUT_SHAPE) -> nn.Module:
    """Seeded random weights with realistic, non-identity BatchNorm layers; returns eval model.

    1. default init, reproducible per seed; random BN gamma/beta; squeeze-excite gates scaled
       up so HardSigmoid's clipping is exercised;
    2. BN running statistics measured on random input in train mode (so activations keep a
       sane scale through the depth), then jittered so they are not exact batch statistics;
    3. the last Linear is rescaled so logits on random input have zero mean per class and unit
       spread: outputs then depend on the input (random nets otherwise tend to predict one class)."""
    torch.manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    for m in model.modules():
        if isinstance(m, SqueezeExcite):              # widen gate input so it reaches both
            m.expand.weight.mul_(10.0)               # saturated ends of HardSigmoid
            m.expand.bias.mul_(10.0)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_(0.0, 0.2)
        bn.reset_running_stats()
        bn.momentum = None                           # cumulative average over the batches below
    model.train()
    for _ in range(4):
        model(torch.randn(16, *input_shape))
    model.eval()
    for bn in bns:
        bn.running_mean.add_(0.05 * bn.running_var.sqrt() * torch.randn_like(bn.running_mean))
        bn.running_var.mul_(torch.empty_like(bn.running_var).uniform_(0.8, 1.25))
        bn.momentum = 0.1

    fc = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    y = model(torch.randn(64, *input_shape))
    mean, spread = y.mean(0), (y - y.mean(0)).std()
    fc.weight.div_(spread)
    fc.bias.sub_(mean).div_(spread)
    return model


def resnet_tiny(seed: int = 0) -> nn.Module:
    return randomise(ResNetTiny(), seed)


def vgg_tiny(seed: int = 1) -> nn.Module:
    return randomise(VGGTiny(), seed)


def mobilenetv2_tiny(seed: int = 2) -> nn.Module:
    return randomise(MobileNetTiny(MobileNetTiny.V2_CFG, nn.ReLU6, head_channels=128), seed)


def mobilenetv3_tiny(seed: int = 3) -> nn.Module:
    return randomise(MobileNetTiny(MobileNetTiny.V3_CFG, nn.Hardswish, head_channels=128), seed)


MODELS = {
    "resnet_tiny": resnet_tiny,
    "vgg_tiny": vgg_tiny,
    "mobilenetv2_tiny": mobilenetv2_tiny,
    "mobilenetv3_tiny": mobilenetv3_tiny,
}


# ---------------------------------------------------------------- export

def export(model: nn.Module, path, input_shape=INPUT_SHAPE, fold_bn: bool = False) -> Path:
    """Export `model` to ONNX at `path`: opset 17, TorchScript exporter, input "input" with a
    dynamic batch dim "N", output "logits".

    input_shape: per-sample shape (C, H, W); a 4-tuple is taken as a full NCHW shape.
    fold_bn: False keeps BatchNormalization nodes (exported with TrainingMode.PRESERVE on the
    eval model); True lets the exporter fuse BN into the preceding convs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = tuple(input_shape) if len(input_shape) == 4 else (1, *input_shape)
    model = model.eval()
    training = torch.onnx.TrainingMode.EVAL if fold_bn else torch.onnx.TrainingMode.PRESERVE
    torch.onnx.export(
        model, torch.zeros(shape), str(path),
        opset_version=17, dynamo=False, training=training,
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    return path


def check_with_onnxruntime(model: nn.Module, path, input_shape=INPUT_SHAPE, batch: int = 3) -> float:
    """Max |torch - onnxruntime| on a random batch (batch != 1 exercises the dynamic dim)."""
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((batch, *input_shape[-3:])).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    return float(np.abs(sess.run(["logits"], {"input": x})[0] - ref).max())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Export the tiny random-weight test models to ONNX.")
    ap.add_argument("--out-dir", required=True, help="folder for <name>.onnx files")
    ap.add_argument("--fold-bn", action="store_true", help="let the exporter fuse BN into convs")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # shared host

    for name, build in MODELS.items():
        t0 = time.perf_counter()
        model = build()
        path = export(model, Path(args.out_dir) / f"{name}.onnx", fold_bn=args.fold_bn)
        dt = time.perf_counter() - t0
        diff = check_with_onnxruntime(model, path)
        print(f"{path}  {dt:.2f} s  max |ort - torch| {diff:.2e}")


if __name__ == "__main__":
    main()
