#!/usr/bin/env python3
"""Train the small vision transformer (converters/vit.py) on Fashion-MNIST with torch on the host,
then export it to ONNX (opset 17) plus the preprocessing JSON, as train_fashion_resnet.py does.

Host-side only (torch 2.13.0 CPU). Writes to --out-dir:
  fashion_vit.onnx   (fashion_vit_t<T>.onnx with --frames T > 1)
  fashion_vit.pt     the state dict
  fashion_vit.json   preprocessing and labels (as fashion_resnet18.json; "frames" when T > 1)

    python converters/train_fashion_vit.py                             # full run (see DEFAULT_EPOCHS)
    python converters/train_fashion_vit.py --epochs 1 --limit 2000     # smoke run, about a minute
    python converters/train_fashion_vit.py --frames 2                  # two frames of each item
    haste-edge convert artifacts/fashion_vit.onnx -o fashion_vit.haste # the engine's file

Frames: with --frames T the model reads (B, T, 28, 28), T views of one item. Frame 0 is the
image; frame t > 0 is a copy shifted by up to 2 pixels (black border) with Gaussian noise of
std --frame-noise (in normalised units). Training draws new views every step; the test views
come from a generator seeded with --seed, so the reported accuracy is reproducible.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_fashion_resnet import (FMNIST_MEAN, FMNIST_STD, augment, datasets, preprocess,  # noqa: E402
                                  seeded_run, verify_onnx)
from vit import FashionViT, export  # noqa: E402

MODEL_NAME = "fashion_vit"
# one frame: 177 images/s trained on one thread of the shared 2-core host (smoke run), so an
# epoch of 60,000 takes at most ~5.6 min; 7 epochs stay within ~40 min
DEFAULT_EPOCHS = 7


def shifted_views(x: torch.Tensor, frames: int, noise: float, gen: torch.Generator) -> torch.Tensor:
    """(N, 1, 28, 28) images -> (N, frames, 28, 28): the image, then shifted noisy copies."""
    views = [x]
    bg = -FMNIST_MEAN / FMNIST_STD
    for _ in range(frames - 1):
        n, _, h, w = x.shape
        xp = nn.functional.pad(x, (2, 2, 2, 2), value=bg)
        dy = torch.randint(0, 5, (n,), generator=gen)
        dx = torch.randint(0, 5, (n,), generator=gen)
        rows = dy[:, None] + torch.arange(h)[None, :]
        cols = dx[:, None] + torch.arange(w)[None, :]
        shifted = xp[torch.arange(n)[:, None, None], 0, rows[:, :, None], cols[:, None, :]]
        views.append((shifted + noise * torch.randn(shifted.shape, generator=gen)).unsqueeze(1))
    return torch.cat(views, dim=1)


@torch.no_grad()
def evaluate(model, x_test, y_test, batch: int = 500) -> tuple[float, torch.Tensor]:
    model.eval()
    logits = torch.cat([model(x_test[i:i + batch]) for i in range(0, len(x_test), batch)])
    return (logits.argmax(1) == y_test).float().mean().item(), logits


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    p.add_argument("--frames", type=int, default=1, help="views of each item as one token sequence (1-4)")
    p.add_argument("--frame-noise", type=float, default=0.1, help="noise std of the extra views")
    p.add_argument("--dim", type=int, default=96)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--mlp-ratio", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW peak learning rate (OneCycle)")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--limit", type=int, default=0, help="only the first N training images (smoke runs)")
    p.add_argument("--test-limit", type=int, default=0, help="only the first N test images (smoke runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-root", default=None, help=f"Fashion-MNIST dir (default {datasets.FASHION_MNIST_DIR})")
    p.add_argument("--out-dir", default="artifacts")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    gen, log = seeded_run(args.threads, args.seed)

    train_x, train_y = datasets.load_fashion_mnist("train", args.data_root)
    test_x, test_y = datasets.load_fashion_mnist("test", args.data_root)
    if args.limit:
        train_x, train_y = train_x[:args.limit], train_y[:args.limit]
    if args.test_limit:
        test_x, test_y = test_x[:args.test_limit], test_y[:args.test_limit]
    x_train, y_train = preprocess(train_x), torch.from_numpy(train_y.astype(np.int64))
    y_test = torch.from_numpy(test_y.astype(np.int64))
    x_test = shifted_views(preprocess(test_x), args.frames, args.frame_noise,
                           torch.Generator().manual_seed(args.seed + 1))

    model = FashionViT(frames=args.frames, dim=args.dim, depth=args.depth, heads=args.heads,
                       mlp_ratio=args.mlp_ratio)
    n, batch = len(x_train), args.batch_size
    steps = n // batch                      # the last partial batch is dropped
    log(f"params {sum(p.numel() for p in model.parameters()):,}; train {n}, test {len(x_test)}, "
        f"{args.epochs} epochs x {steps} steps, batch {batch}, frames {args.frames}, seed {args.seed}")

    # no weight decay on norms, biases and embeddings
    decay = [p for name, p in model.named_parameters() if p.ndim > 1 and name not in ("pos", "frame")]
    rest = [p for name, p in model.named_parameters() if not (p.ndim > 1 and name not in ("pos", "frame"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=steps,
                                                pct_start=0.15, div_factor=20.0, final_div_factor=200.0)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    for epoch in range(1, args.epochs + 1):
        model.train()
        t0 = time.time()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for step in range(steps):
            idx = perm[step * batch:(step + 1) * batch]
            xb = shifted_views(augment(x_train[idx], gen), args.frames, args.frame_noise, gen)
            loss = loss_fn(model(xb), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += loss.item()
        acc, _ = evaluate(model, x_test, y_test)
        log(f"epoch {epoch}/{args.epochs} loss {total / max(steps, 1):.4f} test {acc * 100:.2f} % "
            f"({time.time() - t0:.0f} s, {steps * batch / max(time.time() - t0, 1e-9):.0f} img/s)")

    acc, logits = evaluate(model, x_test, y_test)
    log(f"final test accuracy ({len(x_test)} images): {acc * 100:.2f} %")
    os.makedirs(args.out_dir, exist_ok=True)
    stem = MODEL_NAME if args.frames == 1 else f"{MODEL_NAME}_t{args.frames}"
    onnx_path = os.path.join(args.out_dir, f"{stem}.onnx")
    torch.save(model.state_dict(), os.path.join(args.out_dir, f"{stem}.pt"))
    export(model, onnx_path)
    meta = {"name": stem, "dataset": "fashion-mnist",
            "input": {"mode": "L", "size": [28, 28], "resize": 28, "crop": 28, "scale": 1.0 / 255.0,
                      "mean": [FMNIST_MEAN], "std": [FMNIST_STD], "layout": "NCHW"},
            "labels": list(datasets.FASHION_MNIST_LABELS),
            "test_accuracy_torch": round(acc, 6),
            "architecture": {"dim": args.dim, "depth": args.depth, "heads": args.heads,
                             "mlp_ratio": args.mlp_ratio, "patch": 4, "tokens_per_frame": 49}}
    if args.frames > 1:
        meta["frames"] = {"count": args.frames, "views": "frame 0 the image; others shifted by up to 2 "
                          f"pixels with noise std {args.frame_noise} (normalised units)"}
    with open(os.path.join(args.out_dir, f"{stem}.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    check = min(len(x_test), 500)
    log(f"onnxruntime vs torch ({check} images): max abs diff "
        f"{verify_onnx(onnx_path, x_test[:check], logits[:check]):.2e}")
    log(f"wrote {onnx_path}; convert with: haste-edge convert {onnx_path} -o {stem}.haste")
    return 0


if __name__ == "__main__":
    sys.exit(main())
