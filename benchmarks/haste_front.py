"""HASTE's accuracy-versus-latency front on the bundled Fashion-MNIST ResNet-18: top-1 on all 10,000
test images (3 seeds) against measured time per image at 1 and 2 threads, with the dense engine's
and onnxruntime's latency as reference lines.

    python benchmarks/bench_haste.py --points POINT... --name haste_front_latency     # latency
    python benchmarks/haste_front.py [--latency haste_front_latency]                  # table + PNG

Latency comes from that bench_haste.py run (batch 1, interleaved with the dense engine and
onnxruntime in one process). Accuracy comes from the haste_sweep.py result files named in POINTS:
the kernel's tiles changed the time since some of them were measured, not the buckets or the outputs
beyond float rounding (tests/test_haste.py: same counters), so their accuracy stands. The named
settings (haste_edge/haste/config.py) were chosen on training images (haste_select.py); every other
point was set before this front was drawn. Writes results/haste_front.md, .json and .png.
"""
from __future__ import annotations

import argparse
import json

from common import RESULTS, header, pyplot, write_results

# bench_haste point label -> (accuracy result file, P, L of its row, name shown)
POINTS = {
    "L=12,P=2@per_layer_L_14_12_12_8": ("rtol_P2_stage_L14-12-12-8", 2, 12, "P=2 stage L 14/12/12/8"),
    "L=12,P=2": ("rtol_P2_P4_L12", 2, 12, "L=12,P=2"),
    "L=12,P=4": ("rtol_P2_P4_L12", 4, 12, "L=12,P=4"),
    "L=8,P=4,start=10": ("rtol_P4_start10", 4, 8, "L=8,P=4,start=10"),
    "L=6,P=4,start=15": ("rtol_P4_start15", 4, 6, "L=6,P=4,start=15"),
    "L=4,P=4,start=15": ("rtol_P4_start15", 4, 4, "fast (L=4,P=4,start=15)"),
    "L=11,P=4": ("sweep_P4_named", 4, 11, "L=11,P=4"),
    "fewest-macs": ("rtol_P2_stage_15_14_13_4", 2, 12, "fewest-macs (P=2, L 15/14/13/4)"),
    "L=13,P=4": ("sweep_P4_named", 4, 13, "L=13,P=4"),
}


def accuracy(file: str, P: int, L: int) -> tuple[dict, float]:
    doc = json.loads((RESULTS / f"{file}.json").read_text())
    row = next(r for r in doc["rows"] if r["P"] == P and r["L"] == L)
    return row, doc["dense_acc"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", default="haste_front_latency", help="bench_haste.py result name")
    ap.add_argument("--name", default="haste_front")
    args = ap.parse_args()
    lat = json.loads((RESULTS / f"{args.latency}.json").read_text())["rows"]
    threads = sorted({r["threads"] for r in lat})
    rows, dense_acc = [], None
    for r in lat:
        if r["point"] not in POINTS:
            continue
        file, P, L, shown = POINTS[r["point"]]
        acc, dense_acc = accuracy(file, P, L)
        rows.append({"point": shown, "threads": r["threads"], "ms": r["haste_ms"], "dense_ms": r["dense_ms"],
                     "ort_ms": r["ort_ms"], "acc": acc["acc_mean"], "acc_std": acc["acc_std"],
                     "saved": acc["saved"], "source": file})
    lines = [f"# HASTE accuracy (10,000 test images, 3 seeds) against latency (batch 1), bundled ResNet-18", "",
             header(), "", f"dense top-1 {dense_acc:.2%}; latency from results/{args.latency}.md", "",
             "| threads | point | top-1 (mean ± std) | drop (pp) | conv MACs saved | ms/image | dense ms | onnxruntime ms "
             "| speed over dense | accuracy from |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["threads"], r["ms"])):
        lines.append(f"| {r['threads']} | {r['point']} | {r['acc']:.2%} ± {r['acc_std']:.2%} | "
                     f"{(dense_acc - r['acc']) * 100:.2f} | {r['saved']:.1%} | {r['ms']:.3f} | {r['dense_ms']:.3f} | "
                     f"{r['ort_ms']:.3f} | {r['dense_ms'] / r['ms']:.2f}x | {r['source']}.md |")
    write_results(args.name, lines, {"dense_acc": dense_acc, "rows": rows})
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, len(threads), figsize=(5.5 * len(threads), 4), sharey=True, squeeze=False)
    for ax, t in zip(axes[0], threads):
        rs = [r for r in rows if r["threads"] == t]
        ax.errorbar([r["ms"] for r in rs], [r["acc"] * 100 for r in rs], yerr=[r["acc_std"] * 100 for r in rs],
                    fmt="o", label="HASTE")
        for r in rs:
            ax.annotate(r["point"], (r["ms"], r["acc"] * 100), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.axvline(rs[0]["dense_ms"], color="k", lw=0.8, label=f"dense engine {rs[0]['dense_ms']:.2f} ms")
        ax.axvline(rs[0]["ort_ms"], color="tab:red", lw=0.8, ls="--", label=f"onnxruntime {rs[0]['ort_ms']:.2f} ms")
        ax.axhline(dense_acc * 100, color="grey", lw=0.6, ls=":", label="dense top-1")
        ax.axhline(dense_acc * 100 - 1, color="grey", lw=0.6, ls="-.", label="dense - 1 point")
        ax.set_xlabel(f"ms per image, batch 1, {t} thread(s)")
        ax.set_title(f"{t} thread(s)")
        ax.legend(fontsize=6, loc="lower right")
    axes[0][0].set_ylabel("top-1 on 10,000 test images (%)")
    fig.suptitle("HASTE on the bundled Fashion-MNIST ResNet-18: accuracy vs latency")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{args.name}.png", dpi=120)


if __name__ == "__main__":
    main()
