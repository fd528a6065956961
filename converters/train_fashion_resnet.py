#!/usr/bin/env python3
"""Train the default haste-edge model (CIFAR-style ResNet-18 on Fashion-MNIST)
with torch on the host, then export it to ONNX plus a preprocessing JSON.

Host-side only: torch is never needed on the device.

    python converters/train_fashion_resnet.py                      # full run
    python converters/train_fashion_resnet.py --epochs 1 --limit 4096   # timing check
    python converters/train_fashion_resnet.py --export-images      # sample PNGs only
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import random
import re
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Fashion-MNIST train-set statistics of x/255 (computed over all 60k images).
FMNIST_MEAN = 0.2860
FMNIST_STD = 0.3530

MODEL_NAME = "fashion_resnet18"
DEFAULT_EPOCHS = 5  # ~6-8 min/epoch at batch 128 on a contended 2-core host


def _load_datasets_module():
    """Import haste_edge.datasets without importing the rest of haste_edge."""
    try:
        import haste_edge.datasets as mod  # noqa: PLC0415
        return mod
    except Exception:
        path = os.path.join(REPO_ROOT, "haste_edge", "datasets.py")
        spec = importlib.util.spec_from_file_location("_haste_edge_datasets", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod


datasets = _load_datasets_module()


# --------------------------------------------------------------------------- model

class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            # 1x1 conv + BN projection where the shape changes.
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class FashionResNet18(nn.Module):
    """CIFAR-family ResNet-18: 3x3 stem, no maxpool, widths 32/64/128/256."""

    def __init__(self, num_classes: int = 10, widths=(32, 64, 128, 256), blocks=(2, 2, 2, 2)):
        super().__init__()
        self.conv1 = nn.Conv2d(1, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stage = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                stage.append(BasicBlock(cin, w, stride))
                cin = w
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Zero-init the last BN of each residual branch (blocks start as identity).
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


# --------------------------------------------------------------------------- data

def preprocess(images_u8: np.ndarray) -> torch.Tensor:
    """uint8 (N,28,28) -> float32 (N,1,28,28): x/255, then (x-mean)/std."""
    x = torch.from_numpy(images_u8).float().div_(255.0)
    return x.sub_(FMNIST_MEAN).div_(FMNIST_STD).unsqueeze(1)


def augment(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random crop (zero padding of `pad` in normalized space = black pixels) + h-flip."""
    n, c, h, w = x.shape
    bg = -FMNIST_MEAN / FMNIST_STD  # value of a black pixel after normalization
    xp = F.pad(x, (pad, pad, pad, pad), value=bg)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :])  # (n,h)
    cols = (dx[:, None] + torch.arange(w)[None, :])  # (n,w)
    flip = torch.rand(n, generator=gen) < 0.5
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    idx_n = torch.arange(n)[:, None, None]
    out = xp[idx_n, 0, rows[:, :, None], cols[:, None, :]]  # (n,h,w)
    return out.unsqueeze(1).contiguous()


# --------------------------------------------------------------------------- helpers

def set_seeds(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def seeded_run(threads: int, seed: int):
    """Torch on `threads` threads, every generator seeded: (a torch Generator for the data order and
    augmentation, log(msg) printing the seconds since this call)."""
    torch.set_num_threads(threads)
    set_seeds(seed)
    start = time.time()

    def log(msg):
        print(f"[{time.time() - start:6.0f} s] {msg}", flush=True)
    return torch.Generator().manual_seed(seed), log


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def export_images(out_dir: str, root: str | None = None) -> list[str]:
    """Save the first test image of each class as a 28x28 grey PNG."""
    from PIL import Image

    images, labels = datasets.load_fashion_mnist("test", root)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for cls, name in enumerate(datasets.FASHION_MNIST_LABELS):
        idx = int(np.flatnonzero(labels == cls)[0])
        path = os.path.join(out_dir, f"fmnist_test_{idx}_{slug(name)}.png")
        Image.fromarray(images[idx]).save(path)  # 2-D uint8 -> mode "L"
        paths.append(path)
    return paths


@torch.no_grad()
def evaluate(model, x_test, y_test, args, batch: int = 500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x_test), batch):
        xb = x_test[i:i + batch]
        if args.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.amp):
            logits = model(xb)
        correct += (logits.argmax(1) == y_test[i:i + batch]).sum().item()
    return correct / len(x_test)


@torch.no_grad()
def evaluate_fp32(model, x_test, y_test, batch: int = 500) -> tuple[float, torch.Tensor]:
    """Plain fp32 NCHW evaluation (what the exported model computes)."""
    model.eval()
    outs = []
    for i in range(0, len(x_test), batch):
        outs.append(model(x_test[i:i + batch].contiguous()))
    logits = torch.cat(outs)
    return (logits.argmax(1) == y_test).float().mean().item(), logits


def export_onnx(model, path: str) -> None:
    model = model.float().eval().to(memory_format=torch.contiguous_format)
    dummy = torch.randn(1, 1, 28, 28)
    torch.onnx.export(model.eval(), dummy, path, opset_version=17, dynamo=False,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})


def verify_onnx(path: str, x: torch.Tensor, torch_logits: torch.Tensor) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ort_logits = sess.run(["logits"], {"input": x.numpy()})[0]
    return float(np.abs(ort_logits - torch_logits.numpy()).max())


# --------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    p.add_argument("--out-dir", default="artifacts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1, help="OneCycle peak learning rate")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--limit", type=int, default=0,
                   help="use only the first N training images (timing checks)")
    p.add_argument("--threads", type=int, default=2,
                   help="torch intra-op threads; on a CPU shared with other busy processes "
                        "1 is much faster than 2 (OpenMP barriers stall on descheduled threads)")
    p.add_argument("--data-root", default=None, help="Fashion-MNIST dir (default: "
                   f"{datasets.FASHION_MNIST_DIR})")
    p.add_argument("--channels-last", dest="channels_last", action="store_true", default=True)
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--amp", dest="amp", action="store_true", default=True,
                   help="bfloat16 autocast for training (fp32 weights; default on)")
    p.add_argument("--no-amp", dest="amp", action="store_false")
    p.add_argument("--export-images", action="store_true",
                   help="only write the 10 sample PNGs to --images-dir and exit")
    p.add_argument("--images-dir", default=os.path.join(REPO_ROOT, "haste_edge", "assets", "images"))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.export_images:
        for path in export_images(args.images_dir, args.data_root):
            print(path)
        return 0

    torch.set_num_threads(args.threads)
    set_seeds(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    t_start = time.time()

    train_x, train_y = datasets.load_fashion_mnist("train", args.data_root)
    test_x, test_y = datasets.load_fashion_mnist("test", args.data_root)
    if args.limit:
        train_x, train_y = train_x[:args.limit], train_y[:args.limit]
    x_train, y_train = preprocess(train_x), torch.from_numpy(train_y.astype(np.int64))
    x_test, y_test = preprocess(test_x), torch.from_numpy(test_y.astype(np.int64))
    n = len(x_train)
    steps_per_epoch = n // args.batch_size  # drop the last partial batch
    print(f"train {n} test {len(x_test)} | epochs {args.epochs} x {steps_per_epoch} steps | "
          f"batch {args.batch_size} threads {args.threads} channels_last {args.channels_last} "
          f"amp(bf16) {args.amp} seed {args.seed}", flush=True)

    model = FashionResNet18()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    print(f"params: {sum(p.numel() for p in model.parameters()):,}", flush=True)

    # No weight decay on BN parameters and biases.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=args.lr, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=steps_per_epoch,
        pct_start=0.25, div_factor=20.0, final_div_factor=200.0)
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)

    for epoch in range(1, args.epochs + 1):
        model.train()
        t0 = time.time()
        perm = torch.randperm(n, generator=gen)
        loss_sum, seen = 0.0, 0
        for step in range(steps_per_epoch):
            idx = perm[step * args.batch_size:(step + 1) * args.batch_size]
            xb = augment(x_train[idx], gen)
            yb = y_train[idx]
            if args.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.amp):
                logits = model(xb)
            loss = criterion(logits.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            seen += len(idx)
            if step % 100 == 0:
                rate = seen / max(time.time() - t0, 1e-9)
                print(f"  epoch {epoch} step {step}/{steps_per_epoch} loss {loss.item():.4f} "
                      f"lr {sched.get_last_lr()[0]:.4f} {rate:.0f} img/s", flush=True)
        t_train = time.time() - t0
        acc = evaluate(model, x_test, y_test, args)
        print(f"epoch {epoch}/{args.epochs} train_loss {loss_sum / seen:.4f} "
              f"test_acc {acc * 100:.2f}% | train {t_train:.0f}s eval {time.time() - t0 - t_train:.0f}s "
              f"| elapsed {time.time() - t_start:.0f}s", flush=True)

    # Final accuracy in plain fp32 NCHW on all 10,000 test images.
    model = model.float().to(memory_format=torch.contiguous_format).eval()
    final_acc, torch_logits = evaluate_fp32(model, x_test, y_test)
    print(f"final test accuracy (fp32, {len(x_test)} images): {final_acc * 100:.2f}%", flush=True)

    os.makedirs(args.out_dir, exist_ok=True)
    onnx_path = os.path.join(args.out_dir, f"{MODEL_NAME}.onnx")
    pt_path = os.path.join(args.out_dir, f"{MODEL_NAME}.pt")
    json_path = os.path.join(args.out_dir, f"{MODEL_NAME}.json")
    torch.save(model.state_dict(), pt_path)
    export_onnx(model, onnx_path)
    meta = {
        "name": MODEL_NAME,
        "dataset": "fashion-mnist",
        "input": {"mode": "L", "size": [28, 28], "resize": 28, "crop": 28,
                  "scale": 1.0 / 255.0, "mean": [FMNIST_MEAN], "std": [FMNIST_STD],
                  "layout": "NCHW"},
        "labels": list(datasets.FASHION_MNIST_LABELS),
        "test_accuracy_torch": round(final_acc, 6),
    }
    with open(json_path, "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")

    max_diff = verify_onnx(onnx_path, x_test, torch_logits)
    print(f"onnxruntime vs torch on {len(x_test)} test images: max abs diff {max_diff:.3e}")
    for path in (onnx_path, pt_path, json_path):
        print(f"wrote {path} ({os.path.getsize(path):,} bytes)")
    print(f"total wall time {time.time() - t_start:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
