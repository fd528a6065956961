"""One accuracy-versus-saved-MACs plot and table from several haste_sweep.py result files.

    python benchmarks/plot_sweeps.py results/sweep_P2.json results/sweep_P4.json ... -o results/haste_curve.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+")
    ap.add_argument("-o", "--out", default=str(Path(__file__).parent / "results" / "haste_curve.png"))
    args = ap.parse_args()
    fig, ax = plt.subplots(figsize=(9, 4.6))
    dense = None
    for path in args.results:
        doc = json.loads(Path(path).read_text())
        dense = doc["dense_acc"]
        rows = doc["rows"]
        label = Path(path).stem.replace("sweep_", "")
        line = ax.errorbar([r["saved"] * 100 for r in rows], [r["acc_mean"] * 100 for r in rows],
                           yerr=[r["acc_std"] * 100 for r in rows], marker="o", label=f"{label}")
        ax.plot([r["saved_overhead"] * 100 for r in rows], [r["acc_mean"] * 100 for r in rows], ":", marker="x",
                color=line[0].get_color(), label=f"{label}, overhead counted")
        for r in rows if "_L" not in label else []:  # per-layer runs carry their L in the file name
            ax.annotate(f"L={r['L']}", (r["saved"] * 100, r["acc_mean"] * 100), fontsize=7)
    ax.axhline(dense * 100, color="grey", lw=0.8, label="dense")
    ax.axhline(dense * 100 - 1, color="grey", lw=0.8, ls="--", label="dense - 1 pp")
    ax.set_xlabel("conv MACs saved (%)")
    ax.set_ylabel("top-1 accuracy (%), mean of 3 seeds")
    ax.set_title("HASTE on the Fashion-MNIST ResNet-18 (10,000 test images)")
    ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))   # outside: never over points
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
