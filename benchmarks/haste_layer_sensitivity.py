"""Per-layer HASTE sensitivity on the bundled Fashion-MNIST ResNet-18, measured on TRAINING images
(so that choosing per-layer L never looks at the test set).

    python benchmarks/haste_layer_sensitivity.py [--images 500] [--L 8 10] [--P 2]

For each conv HASTE can compress, and each L: only that layer compressed, top-1 agreement with the
dense model and the share of the network's conv MACs it saves. Layers that keep agreement at low L
are where a per-layer override (HasteConfig.per_layer) can lower L.
"""
from __future__ import annotations

import argparse
import numpy as np

import haste_edge
from haste_edge.datasets import load_fashion_mnist
from haste_edge.haste import HasteConfig
from haste_edge.preprocess import normalise


def run(model, x, batch=100):
    """(predictions, conv MACs executed incl. nothing else, dense conv MACs) over x."""
    name, out = model.input_names[0], model.output_names[0]
    preds, exe, dense = [], 0, 0
    for i in range(0, len(x), batch):
        preds.append(model.run({name: x[i:i + batch]})[out].argmax(1))
        st = model.last_stats()
        exe += st.executed(("Conv",)).sum()
        dense += st.dense(("Conv",)).sum()
    return np.concatenate(preds), exe, dense


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--L", type=int, nargs="+", default=[8, 10])
    ap.add_argument("--P", type=int, default=2)
    ap.add_argument("--base-L", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    haste_edge.set_threads(args.threads)
    model = haste_edge.load()
    images, _ = load_fashion_mnist("train")
    x = np.stack([normalise(im.astype(np.float32), model.meta["input"]) for im in images[:args.images]])
    model.set_haste(None)
    dense_pred, _, _ = run(model, x)
    layers = list(model.set_haste(HasteConfig(L=args.base_L, patch=args.P)))

    def measure(per_layer):
        model.set_haste(HasteConfig(L=args.base_L, patch=args.P, per_layer=per_layer))
        pred, exe, dense = run(model, x)
        return float((pred == dense_pred).mean()), 1 - exe / dense

    table = {}
    for name in layers:
        for L in args.L:
            only = {n: {"enabled": n == name} for n in layers}
            only[name]["L"] = L
            table[(name, L)] = measure(only)
            print(f"{name} L={L}: agreement {table[(name, L)][0]:.4f}, conv MACs saved {table[(name, L)][1]:.3f}",
                  flush=True)
    agree, saved = measure({})
    print(f"all layers L={args.base_L}: agreement {agree:.4f}, conv MACs saved {saved:.3f}")


if __name__ == "__main__":
    main()
