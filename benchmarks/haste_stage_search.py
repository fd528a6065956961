"""Choose HASTE's L per ResNet stage on TRAINING images (the test set is never looked at), greedily.

    python benchmarks/haste_stage_search.py [--images 2000] [--P 2] [--start-L 14] [--budget 0.6]
                                            [--seeds 0 1] [--out results/per_stage_search_P2.json]

A stage is every conv whose name starts with /layerK/. Start with every stage at --start-L; at each
step try lowering each stage's L by one and keep the step with the most conv MACs saved per point of
training accuracy lost, as long as the loss against the dense model stays within --budget points
(mean over --seeds). Stops when no step fits. Writes the chosen per-layer overrides as JSON for
`haste_sweep.py --per-layer`, which then measures them on the test set.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import haste_edge
from haste_edge.datasets import load_fashion_mnist
from haste_edge.haste import HasteConfig
from haste_edge.preprocess import normalise


def accuracy_and_saving(model, x, y, batch=250):
    name, out = model.input_names[0], model.output_names[0]
    correct, exe, dense = 0, 0, 0
    for i in range(0, len(x), batch):
        logits = model.run({name: x[i:i + batch]})[out]
        correct += int((logits.argmax(1) == y[i:i + batch]).sum())
        st = model.last_stats()
        exe += st.executed(("Conv",)).sum()
        dense += st.dense(("Conv",)).sum()
    return correct / len(x), 1 - exe / dense


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--P", type=int, default=2)
    ap.add_argument("--start-L", type=int, default=14)
    ap.add_argument("--min-L", type=int, default=5)
    ap.add_argument("--budget", type=float, default=0.6, help="training accuracy points the search may lose")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "per_stage_search.json"))
    args = ap.parse_args()
    haste_edge.set_threads(args.threads)
    model = haste_edge.load()
    images, labels = load_fashion_mnist("train")
    # spread over the training set, not its first rows only
    pick = np.random.default_rng(0).choice(len(images), args.images, replace=False)
    x = np.stack([normalise(im.astype(np.float32), model.meta["input"]) for im in images[pick]])
    y = labels[pick]
    model.set_haste(None)
    dense_acc, _ = accuracy_and_saving(model, x, y)
    layers = list(model.set_haste(HasteConfig(L=args.start_L, patch=args.P)))
    stages = sorted({n.split("/")[1] for n in layers if n.startswith("/layer")})
    print(f"dense training accuracy {dense_acc:.4f} on {args.images} images; stages {stages}", flush=True)

    def measure(stage_L):
        per_layer = {n: {"L": stage_L[n.split("/")[1]]} for n in layers if n.split("/")[1] in stage_L}
        runs = []
        for seed in args.seeds:
            model.set_haste(HasteConfig(L=args.start_L, patch=args.P, seed=seed, per_layer=per_layer))
            runs.append(accuracy_and_saving(model, x, y))
        a = np.array(runs).mean(axis=0)
        return float(a[0]), float(a[1]), per_layer

    current = {s: args.start_L for s in stages}
    acc, saved, per_layer = measure(current)
    print(f"start {current}: accuracy {acc:.4f} (-{(dense_acc - acc) * 100:.2f} pp) saved {saved:.3f}", flush=True)
    while True:
        best = None
        for s in stages:
            if current[s] <= args.min_L:
                continue
            trial = dict(current, **{s: current[s] - 1})
            t_acc, t_saved, t_per_layer = measure(trial)
            loss = (dense_acc - t_acc) * 100
            gain = (t_saved - saved) / max(acc - t_acc, 1e-4)      # MACs saved per accuracy lost
            print(f"  try {trial}: accuracy {t_acc:.4f} (-{loss:.2f} pp) saved {t_saved:.3f}", flush=True)
            if loss <= args.budget and (best is None or gain > best[0]):
                best = (gain, trial, t_acc, t_saved, t_per_layer)
        if best is None:
            break
        _, current, acc, saved, per_layer = best
        print(f"step -> {current}: accuracy {acc:.4f} (-{(dense_acc - acc) * 100:.2f} pp) saved {saved:.3f}",
              flush=True)
    Path(args.out).write_text(json.dumps(per_layer, indent=1) + "\n")
    print(f"chosen {current}: training accuracy -{(dense_acc - acc) * 100:.2f} pp, conv MACs saved {saved:.3f}; "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
