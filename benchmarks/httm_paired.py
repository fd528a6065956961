"""HTTM (head-wise) against uniform token merging at equal attention MACs, image by image: the paired
difference in top-1 over all test images and several draws of the frames, with its 95 % interval.

    python benchmarks/httm_paired.py [--model fashion_vit_t4] [--views 4] [--limit 10000]
                                     [--budgets 0.5,0.5 0.3,0.3 0.2,0.3] [--name httm_paired]

A budget q,kv keeps the same number of queries and keys per head in both modes (the kernels count the
same attention MACs: checked), so the two differ only in how tokens are matched. Each of --views
draws makes other views of every item (preprocess.frame_views with seed view * 100003 + batch index;
`haste-edge eval` uses seed 0 for every batch), so one image counts --views times. Per image d = mean
over draws of (head correct - uniform correct); the table gives mean(d) and mean(d) +- 1.96 std(d) /
sqrt(images), the normal interval of a paired mean over 10,000 images. Accuracy only, no timing.
Writes benchmarks/results/<name>.md and .json.
"""
from __future__ import annotations

import argparse
import copy

import numpy as np

from common import header, write_results

import haste_edge
from haste_edge.datasets import load_fashion_mnist
from haste_edge.httm.method import OP
from haste_edge.preprocess import frame_views, normalise
from haste_edge.threads import set_threads

BLOCKS = "ns=8,nt=4"


def view_batches(spec, images, view, batch=100):
    """Normalised multi-frame batches of `images` for one draw of the views."""
    out = []
    for b, i in enumerate(range(0, len(images), batch)):
        s = copy.deepcopy(spec)
        s["frames"]["seed"] = view * 100003 + b
        out.append(frame_views(np.stack([normalise(im.astype(np.float32), spec) for im in images[i:i + batch]]), s))
    return out


def correct_and_macs(model, xs, labels):
    """(per-image correctness (N,) bool, attention MACs executed per image)."""
    name, out, got, macs, n = model.input_names[0], model.output_names[0], [], 0.0, 0
    for x in xs:
        got.append(model.run({name: x})[out].argmax(1))
        st = model.last_stats()
        macs += sum(l.executed.sum() for l in st.layers if l.op == OP)
        n += len(x)
    return np.concatenate(got) == labels, macs / n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fashion_vit_t4")
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--budgets", nargs="+", default=["0.5,0.5", "0.3,0.3", "0.2,0.3"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--name", default="httm_paired")
    args = ap.parse_args()
    set_threads(args.threads)
    model = haste_edge.load(args.model)
    spec = model.meta["input"]
    if not (spec.get("frames") or {}).get("count", 1) > 1:
        raise SystemExit(f"httm_paired: model {args.model} reads one frame; pick a multi-frame model")
    images, labels = load_fashion_mnist("test")
    images, labels = images[:args.limit], labels[:args.limit]
    draws = [view_batches(spec, images, v) for v in range(args.views)]

    def measure(httm):
        model.set_httm(httm)
        res = [correct_and_macs(model, xs, labels) for xs in draws]
        return np.stack([r[0] for r in res]), float(np.mean([r[1] for r in res]))

    dense, dense_macs = measure(None)
    print(f"dense: {dense.mean():.4f}", flush=True)
    rows = []
    for budget in args.budgets:
        q, kv = (float(v) for v in budget.split(","))
        head, head_macs = measure(f"q={q},kv={kv},{BLOCKS},mode=head")
        uni, uni_macs = measure(f"q={q},kv={kv},{BLOCKS},mode=uniform")
        if head_macs != uni_macs:
            raise SystemExit(f"httm_paired: q={q} kv={kv}: head-wise and uniform counted different attention "
                             f"MACs ({head_macs:.0f} vs {uni_macs:.0f})")
        d = head.mean(0) - uni.mean(0)                    # per image, over the draws
        half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
        rows.append({"q": q, "kv": kv, "attention_macs": head_macs, "dense_attention_macs": dense_macs,
                     "head": float(head.mean()), "uniform": float(uni.mean()), "diff": float(d.mean()),
                     "ci95": [float(d.mean() - half), float(d.mean() + half)],
                     "head_only_right": int(((head & ~uni)).sum()), "uniform_only_right": int(((uni & ~head)).sum()),
                     "per_view_diff": [float(v) for v in head.mean(1) - uni.mean(1)]})
        r = rows[-1]
        print(f"q={q} kv={kv}: head {r['head']:.4f} uniform {r['uniform']:.4f} diff {r['diff'] * 100:+.3f} pt "
              f"[{r['ci95'][0] * 100:+.3f}, {r['ci95'][1] * 100:+.3f}]", flush=True)
    lines = [f"# HTTM against uniform merging at equal attention MACs, {args.model}, paired over "
             f"{len(labels)} test images x {args.views} draws of the views", "", header(), "",
             f"dense top-1 {dense.mean():.2%} (per draw: {', '.join(f'{v:.2%}' for v in dense.mean(1))}); blocks "
             f"{BLOCKS}; diff = head-wise - uniform, 95 % interval of the paired mean over images", "",
             "| q | kv | attention MMAC (dense) | head-wise top-1 | uniform top-1 | diff (pt) | 95 % interval (pt) | "
             "only head-wise right | only uniform right | diff per draw (pt) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['q']} | {r['kv']} | {r['attention_macs'] / 1e6:.2f} ({r['dense_attention_macs'] / 1e6:.2f}) | "
                     f"{r['head']:.2%} | {r['uniform']:.2%} | {r['diff'] * 100:+.3f} | "
                     f"[{r['ci95'][0] * 100:+.3f}, {r['ci95'][1] * 100:+.3f}] | {r['head_only_right']} | "
                     f"{r['uniform_only_right']} | {', '.join(f'{v * 100:+.2f}' for v in r['per_view_diff'])} |")
    write_results(args.name, lines, {"model": args.model, "views": args.views, "images": len(labels),
                                     "dense": float(dense.mean()), "rows": rows})


if __name__ == "__main__":
    main()
