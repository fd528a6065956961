"""HASTE's accuracy-versus-cost curve on EfficientNet-Lite0 (ImageNet) with real photos.

    python benchmarks/haste_sweep_efficientnet.py [--L 8 16 24 32 40 48 62] [--P 2 4 8 16] [--seeds 0 1 2]
                                                  [--threads 1]

Photos: the 20 labeled ImageNet photos in foolbox's package folder (label in the file name; needs
`pip install --no-deps foolbox==3.3.4`), plus unlabeled photos from scikit-image (chelsea, coffee,
astronaut, rocket, stereo_motorcycle left view) and scikit-learn (china, flower) when those packages
are installed (benchmark-only dependencies; a missing source is skipped with a note). Every photo
goes through haste_edge.preprocess.load_batch with the model's own preprocessing (meta["input"]).
The model is tests/model_zoo.get_model("efficientnet_lite0") (exported once, needs torch).

EfficientNet-Lite0's 3x3/5x5 convs are depthwise, which HASTE never merges, and its only standard
conv with a kernel larger than 1x1 is the stem (left dense by start_layer=1). So the default
HasteConfig compresses nothing on this net; the sweep sets include_1x1=True, which puts HASTE on
the 32 pointwise convs (expand, project, head). The default configuration is reported as one row.

For every (P, L) and seed, batch 1, one image at a time: top-1 agreement with the dense model over
all photos, true top-1 on the labeled ones, conv-MAC reduction without and with the hashing and
merging overhead (each overhead addition counted as one MAC), and wall-clock time per image relative
to a dense pass over the same photos run right before it in the same process. Writes
benchmarks/results/<name>.md, .json and .png.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from common import RESULTS, header, pyplot, write_results

import haste_edge
from haste_edge.haste import HasteConfig
from haste_edge.preprocess import load_batch


SKIMAGE_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "stereo_motorcycle")


def load_photos(spec: dict):
    """(x (N, 3, 224, 224), names, labels with -1 for unlabeled photos, notes about skipped sources)."""
    from model_zoo import foolbox_images

    paths, names, labels, notes = [], [], [], []
    try:
        for p, y in foolbox_images("imagenet"):
            paths.append(p), names.append(p.stem), labels.append(y)
    except FileNotFoundError as e:
        notes.append(f"foolbox ImageNet photos skipped: {e}")
    try:
        from sklearn.datasets import load_sample_images
        for f in load_sample_images().filenames:
            paths.append(Path(f)), names.append(f"sklearn:{Path(f).stem}"), labels.append(-1)
    except ImportError:
        notes.append("scikit-learn not installed: its sample photos (china, flower) skipped")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            from PIL import Image
            from skimage import data as skdata
            for n in SKIMAGE_PHOTOS:
                try:
                    arr = getattr(skdata, n)()
                except Exception as e:            # a data file that would need a download
                    notes.append(f"skimage.data.{n}() unavailable ({type(e).__name__}): skipped")
                    continue
                if isinstance(arr, tuple):        # stereo_motorcycle: (left, right, disparity)
                    arr = arr[0]
                p = Path(tmp) / f"{n}.png"        # lossless, then the same file path as every photo
                Image.fromarray(arr).save(p)
                paths.append(p), names.append(f"skimage:{n}"), labels.append(-1)
        except ImportError:
            notes.append("scikit-image not installed: its sample photos skipped")
        x = load_batch(paths, spec) if paths else None
    for n in notes:
        print("note:", n)
    if x is None:
        raise SystemExit("no photos available")
    return x, names, np.array(labels), notes


def evaluate(model, x):
    """(top-1 class per image, conv MACs dense, executed, overhead, seconds per image), batch 1."""
    name, out = model.input_names[0], model.output_names[0]
    preds, dense, exe, over, secs = [], 0, 0, 0, 0.0
    for i in range(len(x)):
        t0 = time.perf_counter()
        logits = model.run({name: x[i:i + 1]})[out]
        secs += time.perf_counter() - t0
        st = model.last_stats()
        preds.append(int(logits.argmax(1)[0]))
        dense += int(st.dense(("Conv",)).sum())
        exe += int(st.executed(("Conv",)).sum())
        over += int(st.overhead(("Conv",)).sum())
    return np.array(preds), dense, exe, over, secs / len(x)


def score(model, cfg, x, labels, dense_pred):
    """One configuration: dense timing pass, then the HASTE pass; the measures of one run."""
    model.set_haste(None)
    dense_t = evaluate(model, x)[4]
    layers = model.set_haste(cfg)
    evaluate(model, x[:1])              # per-setting set-up (hyperplanes, kernel caches) not timed
    pred, dense, exe, over, t = evaluate(model, x)
    lab = labels >= 0
    return {"agree": float((pred == dense_pred).mean()),
            "top1": float((pred[lab] == labels[lab]).mean()) if lab.any() else float("nan"),
            "saved": 1 - exe / dense, "saved_overhead": 1 - (exe + over) / dense,
            "time_ratio": t / dense_t, "ms": t * 1e3, "dense_ms": dense_t * 1e3, "layers": len(layers),
            "pred": pred.tolist()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--L", type=int, nargs="+", default=[8, 16, 24, 32, 40, 48, 62])
    ap.add_argument("--P", type=int, nargs="+", default=[2, 4, 8, 16])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--s", type=float, default=2.0 / 3.0, help="hyperplane sparsity (HasteConfig.s)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--name", default="sweep_efficientnet")
    args = ap.parse_args()
    haste_edge.set_threads(args.threads)

    from model_zoo import get_model
    model = haste_edge.load(get_model("efficientnet_lite0"))
    x, names, labels, notes = load_photos(model.meta["input"])
    lab = labels >= 0
    print(f"{len(x)} photos ({int(lab.sum())} labeled)", flush=True)

    model.set_haste(None)
    evaluate(model, x[:2])                                   # warm up (Numba compile / cache load)
    dense_pred, _, _, _, dense_t = evaluate(model, x)
    dense_top1 = float((dense_pred[lab] == labels[lab]).mean())
    print(f"dense: top-1 {dense_top1:.2%} on {int(lab.sum())} labeled, {dense_t * 1e3:.1f} ms/image", flush=True)

    default = score(model, HasteConfig(L=12, s=args.s), x, labels, dense_pred)
    print(f"default config (L=12, 1x1 excluded): {default['layers']} convs get HASTE, "
          f"saved {default['saved']:.3f}, agreement {default['agree']:.3f}", flush=True)

    rows = []
    t_start = time.perf_counter()
    for P in args.P:
        for L in args.L:
            runs = []
            for seed in args.seeds:
                cfg = HasteConfig(L=L, s=args.s, patch=P, seed=seed, include_1x1=True)
                runs.append(score(model, cfg, x, labels, dense_pred))
                r = runs[-1]
                print(f"P={P} L={L} seed={seed}: agree {r['agree']:.3f} top1 {r['top1']:.3f} saved {r['saved']:.3f} "
                      f"(with overhead {r['saved_overhead']:.3f}) {r['ms']:.1f} ms/image = {r['time_ratio']:.2f}x dense "
                      f"[{time.perf_counter() - t_start:.0f} s]", flush=True)
            row = {"P": P, "L": L, "layers": runs[0]["layers"], "runs": runs}
            for k in ("agree", "top1", "saved", "saved_overhead", "time_ratio"):
                v = np.array([r[k] for r in runs])
                row[k + "_mean"], row[k + "_std"] = float(v.mean()), float(v.std())
            rows.append(row)
    write(rows, default, dense_top1, dense_t, dense_pred, names, labels, notes, args)


def write(rows, default, dense_top1, dense_t, dense_pred, names, labels, notes, args):
    n, n_lab = len(names), int((labels >= 0).sum())
    lines = [f"# HASTE sweep: EfficientNet-Lite0 (ImageNet), {n} photos ({n_lab} labeled), "
             f"seeds {args.seeds}, s = {args.s:.3g}, batch 1",
             "", header() + f"; threads {args.threads}", "",
             f"Photos: {', '.join(names)}.", *[f"Note: {t}." for t in notes], "",
             f"dense: top-1 {dense_top1:.0%} on the {n_lab} labeled photos, {dense_t * 1e3:.1f} ms/image",
             "",
             f"Default HasteConfig (1x1 convs excluded, start_layer 1): {default['layers']} convs get HASTE, "
             f"conv MACs saved {default['saved']:.1%}, agreement {default['agree']:.0%}.",
             "Sweep: include_1x1=True (HASTE on the 32 pointwise convs, 88 % of the conv MACs).",
             "Agreement: top-1 equal to the dense model's, all photos. True top-1: labeled photos only.",
             "",
             "| P | L | agreement with dense (mean ± std) | true top-1 (mean ± std) | conv MACs saved "
             "| saved, overhead counted | HASTE time / dense time |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['P']} | {r['L']} | {r['agree_mean']:.0%} ± {r['agree_std']:.0%} | "
                     f"{r['top1_mean']:.0%} ± {r['top1_std']:.0%} | {r['saved_mean']:.1%} | "
                     f"{r['saved_overhead_mean']:.1%} | {r['time_ratio_mean']:.2f}x |")
    write_results(args.name, lines, {
        "photos": names, "labels": labels.tolist(), "dense_pred": dense_pred.tolist(), "dense_top1": dense_top1,
        "dense_s": dense_t, "s": args.s, "seeds": args.seeds, "notes": notes, "default_config": default,
        "rows": rows})
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for ax, key, dense_val, what in ((axes[0], "agree", 1.0, f"top-1 agreement with dense ({n} photos, %)"),
                                     (axes[1], "top1", dense_top1, f"true top-1 ({n_lab} labeled photos, %)")):
        for i, P in enumerate(sorted({r["P"] for r in rows})):
            rs = [r for r in rows if r["P"] == P]
            c = f"C{i}"
            ax.errorbar([r["saved_mean"] * 100 for r in rs], [r[key + "_mean"] * 100 for r in rs],
                        yerr=[r[key + "_std"] * 100 for r in rs], color=c, marker="o", capsize=2,
                        label=f"P={P}, without overhead")
            ax.plot([r["saved_overhead_mean"] * 100 for r in rs], [r[key + "_mean"] * 100 for r in rs], "--",
                    color=c, marker="x", alpha=0.6, label=f"P={P}, overhead counted")
            for r in rs:
                ax.annotate(f"{r['L']}", (r["saved_mean"] * 100, r[key + "_mean"] * 100), fontsize=6,
                            xytext=(2, 2), textcoords="offset points")
        ax.axhline(dense_val * 100, color="grey", lw=0.8, label="dense")
        ax.axvline(0, color="black", lw=0.5)
        ax.set_xlabel("conv MACs saved (%)")
        ax.set_ylabel(what)
    axes[0].legend(fontsize=6)
    fig.suptitle("HASTE on EfficientNet-Lite0, 1x1 convs included (labels: L; mean of seeds "
                 + " ".join(map(str, args.seeds)) + ")", fontsize=10)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{args.name}.png", dpi=120)


if __name__ == "__main__":
    main()
