"""HASTE's accuracy-versus-cost curve on the bundled Fashion-MNIST ResNet-18 (all 10,000 test images).

    python benchmarks/haste_sweep.py [--L 6 8 10 12 14] [--P 2 4] [--seeds 0 1 2] [--limit N]

For every (P, L) and seed: top-1 accuracy, conv-MAC reduction without and with the hashing/merging
overhead (each overhead addition counted as one MAC), and wall-clock time per image relative to the
dense engine in the same process. Writes benchmarks/results/haste_sweep.md and .png.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from common import RESULTS, header, pyplot, write_results

import haste_edge
from haste_edge.datasets import load_fashion_mnist
from haste_edge.haste import HasteConfig
from haste_edge.preprocess import normalise



def evaluate(model, x, y, batch):
    """(accuracy, conv reduction, conv reduction with overhead, seconds per image)."""
    name, out = model.input_names[0], model.output_names[0]
    correct, dense, exe, over, secs = 0, 0, 0, 0, 0.0
    for i in range(0, len(x), batch):
        t0 = time.perf_counter()
        logits = model.run({name: x[i:i + batch]})[out]
        secs += time.perf_counter() - t0
        st = model.last_stats()
        correct += int((logits.argmax(1) == y[i:i + batch]).sum())
        dense += st.dense(("Conv",)).sum()
        exe += st.executed(("Conv",)).sum()
        over += st.overhead(("Conv",)).sum()
    return correct / len(x), 1 - exe / dense, 1 - (exe + over) / dense, secs / len(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--L", type=int, nargs="+", default=[6, 8, 10, 12, 14])
    ap.add_argument("--P", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--start", type=int, default=1, help="first compressed conv (index among eligible)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N test images")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--per-layer", default=None, metavar="JSON",
                    help="file with HasteConfig.per_layer overrides ({node name: {\"L\": ...}}), applied to every point")
    ap.add_argument("--name", default="haste_sweep")
    args = ap.parse_args()
    haste_edge.set_threads(args.threads)
    per_layer = json.loads(Path(args.per_layer).read_text()) if args.per_layer else {}
    model = haste_edge.load()
    images, labels = load_fashion_mnist("test")
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    x = np.stack([normalise(im.astype(np.float32), model.meta["input"]) for im in images])

    model.set_haste(None)
    evaluate(model, x[:args.batch], labels[:args.batch], args.batch)  # warm up
    dense_acc, _, _, dense_t = evaluate(model, x, labels, args.batch)
    print(f"dense: accuracy {dense_acc:.4f}, {dense_t * 1e3:.3f} ms/image", flush=True)
    rows = []
    for P in args.P:
        for L in args.L:
            runs = []
            for seed in args.seeds:
                model.set_haste(HasteConfig(L=L, patch=P, seed=seed, start_layer=args.start,
                                             per_layer=per_layer))
                runs.append(evaluate(model, x, labels, args.batch))
                print(f"P={P} L={L} seed={seed}: acc {runs[-1][0]:.4f} saved {runs[-1][1]:.3f} "
                      f"(with overhead {runs[-1][2]:.3f}) {runs[-1][3] * 1e3:.3f} ms/image", flush=True)
            a = np.array(runs)
            rows.append({"P": P, "L": L, "acc_mean": a[:, 0].mean(), "acc_std": a[:, 0].std(),
                         "saved": a[:, 1].mean(), "saved_overhead": a[:, 2].mean(),
                         "time_ratio": a[:, 3].mean() / dense_t})
    write(rows, dense_acc, dense_t, args)


def write(rows, dense_acc, dense_t, args):
    n = args.limit or 10000
    lines = [f"# HASTE sweep: Fashion-MNIST ResNet-18, {n} test images, seeds {args.seeds}, start layer {args.start}"
             + (f", per-layer overrides from {Path(args.per_layer).name}" if args.per_layer else ""),
             "", header(), "", f"dense: top-1 {dense_acc:.2%}, {dense_t * 1e3:.3f} ms/image (batch {args.batch})", "",
             "| P | L | top-1 (mean ± std) | drop (pp) | conv MACs saved | saved incl. overhead | HASTE time / dense time |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['P']} | {r['L']} | {r['acc_mean']:.2%} ± {r['acc_std']:.2%} | "
                     f"{(dense_acc - r['acc_mean']) * 100:.2f} | {r['saved']:.1%} | {r['saved_overhead']:.1%} | "
                     f"{r['time_ratio']:.2f}x |")
    write_results(args.name, lines, {"dense_acc": dense_acc, "dense_s": dense_t, "rows": rows})
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for P in sorted({r["P"] for r in rows}):
        rs = [r for r in rows if r["P"] == P]
        ax.errorbar([r["saved"] * 100 for r in rs], [r["acc_mean"] * 100 for r in rs],
                    yerr=[r["acc_std"] * 100 for r in rs], marker="o", label=f"P={P}, without overhead")
        ax.plot([r["saved_overhead"] * 100 for r in rs], [r["acc_mean"] * 100 for r in rs], "--", marker="x",
                label=f"P={P}, overhead counted")
        for r in rs:
            ax.annotate(f"L={r['L']}", (r["saved"] * 100, r["acc_mean"] * 100), fontsize=7)
    ax.axhline(dense_acc * 100, color="grey", lw=0.8, label="dense")
    ax.set_xlabel("conv MACs saved (%)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("HASTE on the Fashion-MNIST ResNet-18")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{args.name}.png", dpi=120)


if __name__ == "__main__":
    main()
