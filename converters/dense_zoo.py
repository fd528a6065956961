"""ImageNet-size CNNs (3x224x224 input, 1000 classes) with synthetic but trained-looking weights,
exported to ONNX for comparing the dense engine with onnxruntime at realistic layer shapes.

No pretrained weights are available here, so each model is given seeded Kaiming-normal conv weights
and then BatchNorm layers calibrated the way a trained net's are: random affine parameters
(gamma ~ U(0.5, 1.5), beta ~ N(0, 0.1)), running mean/var measured on 8 smooth synthetic images
(multi-scale low-pass noise, ImageNet-normalised). Every BN output is then roughly unit-scale, so
activations neither explode nor die through the depth, and the logits depend on the input.

  resnet18_224     ResNet-18: 7x7/2 stem conv + BN + ReLU + 3x3/2 MaxPool, 4 stages of 2 BasicBlocks
                   (64/128/256/512), 1x1 projection shortcuts, GlobalAveragePool, Linear.
  vgg11_224        VGG-11 with BN (config "A"). The classifier is GlobalAveragePool + Linear(512, 1000)
                   instead of the two 4096-wide FC layers, to keep benchmarks short (those FC layers
                   hold ~120 M weights and measure memory bandwidth rather than convolution).
  mobilenetv2_224  MobileNetV2, width 1.0: 3x3/2 stem conv to 32, the standard inverted residual
                   settings, ReLU6, 1x1 conv to 1280, GlobalAveragePool, Linear.

Exports fold BN into the convs (as a deployed model would be), opset 17, input "input" (N,3,224,224),
output "logits" (N,1000); a sidecar <stem>.json carries the ImageNet preprocessing the BN statistics
were calibrated for. The export is deterministic (fixed seeds).

Usage:  python converters/dense_zoo.py --out-dir artifacts/dense_zoo [--models resnet18_224 ...]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

try:                                    # imported as converters.dense_zoo
    from .torch_models import BasicBlock, InvertedResidual, conv_bn, export
except ImportError:                     # run as a script
    from torch_models import BasicBlock, InvertedResidual, conv_bn, export

NUM_CLASSES = 1000
INPUT_SHAPE = (3, 224, 224)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Preprocessing (haste_edge/preprocess.py keys) matching the calibration images' normalisation.
PREPROCESS = {"mode": "RGB", "resize": 256, "crop": 224, "scale": 1 / 255,
              "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "layout": "NCHW"}


# ---------------------------------------------------------------- architectures

class Classifier(nn.Sequential):
    """features -> GlobalAveragePool -> Flatten -> Linear."""

    def __init__(self, features: list[nn.Module], channels: int):
        super().__init__(*features, nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(channels, NUM_CLASSES))


def resnet18() -> nn.Module:
    layers, cin = [*conv_bn(3, 64, 7, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)], 64
    for stage, width in enumerate((64, 128, 256, 512)):
        for b in range(2):
            layers.append(BasicBlock(cin, width, 2 if stage > 0 and b == 0 else 1))
            cin = width
    return Classifier(layers, cin)


def vgg11_bn() -> nn.Module:
    layers, cin = [], 3
    for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [*conv_bn(cin, v), nn.ReLU(inplace=True)]
            cin = v
    return Classifier(layers, cin)


def mobilenetv2() -> nn.Module:
    layers, cin = [*conv_bn(3, 32, 3, 2), nn.ReLU6(inplace=True)], 32
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(n):
            layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t, nn.ReLU6))
            cin = c
    layers += [*conv_bn(cin, 1280, 1), nn.ReLU6(inplace=True)]
    return Classifier(layers, 1280)


# ---------------------------------------------------------------- weights

def natural_images(n: int = 8, size: int = 224, seed: int = 0) -> torch.Tensor:
    """n smooth synthetic RGB images, ImageNet-normalised (N, 3, size, size).

    Sum of bicubically upsampled noise grids of 4..128 cells, one octave apart, with equal energy
    per octave (the 1/f amplitude spectrum of natural images); channels share a luminance pattern
    plus weaker colour patterns; each image is then given a random brightness and contrast, clipped
    to [0, 1] and normalised with the ImageNet mean and std."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 3, size, size)
    for cells in (4, 8, 16, 32, 64, 128):
        lum = torch.randn(n, 1, cells, cells, generator=g)
        colour = 0.4 * torch.randn(n, 3, cells, cells, generator=g)
        x += F.interpolate(lum + colour, size=(size, size), mode="bicubic", align_corners=False)
    x = (x - x.mean((1, 2, 3), keepdim=True)) / x.std((1, 2, 3), keepdim=True)
    brightness = 0.3 + 0.35 * torch.rand(n, 1, 1, 1, generator=g)
    contrast = 0.15 + 0.15 * torch.rand(n, 1, 1, 1, generator=g)
    x = (brightness + contrast * x).clamp(0, 1)
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


@torch.no_grad()
def calibrate(model: nn.Module, seed: int, images: int = 8) -> nn.Module:
    """Seeded Kaiming-normal convs, default-initialised Linear, random BN affine parameters, BN
    running statistics measured on `images` synthetic images; returns the model in eval mode."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            m.reset_parameters()
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.1)
            m.reset_running_stats()
            m.momentum = None                    # cumulative average over the calibration batch
    model.train()
    model(natural_images(images, INPUT_SHAPE[-1], seed))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    return model.eval()


def resnet18_224(seed: int = 18) -> nn.Module:
    return calibrate(resnet18(), seed)


def vgg11_224(seed: int = 11) -> nn.Module:
    return calibrate(vgg11_bn(), seed)


def mobilenetv2_224(seed: int = 2) -> nn.Module:
    return calibrate(mobilenetv2(), seed)


MODELS = {"resnet18_224": resnet18_224, "vgg11_224": vgg11_224, "mobilenetv2_224": mobilenetv2_224}


# ---------------------------------------------------------------- export

def export_model(name: str, path) -> Path:
    """Build model `name`, export it to `path` with BN folded into the convs, write `<stem>.json`."""
    path = export(MODELS[name](), path, INPUT_SHAPE, fold_bn=True)
    sidecar = {"name": name, "dataset": "imagenet", "input": PREPROCESS}
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=1) + "\n")
    return path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Export the ImageNet-size synthetic-weight models to ONNX.")
    ap.add_argument("--out-dir", required=True, help="folder for <name>.onnx and <name>.json files")
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # shared host

    for name in args.models:
        t0 = time.perf_counter()
        path = export_model(name, Path(args.out_dir) / f"{name}.onnx")
        print(f"{path}  {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
