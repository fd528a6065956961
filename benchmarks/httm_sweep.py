"""HTTM against uniform (ToMe-style) token merging on the multi-frame ViT: accuracy on the Fashion-MNIST
test set against attention MACs and against measured attention time, with dense and onnxruntime.

    python benchmarks/httm_sweep.py [--model fashion_vit_t4] [--limit 10000] [--runs 200] [--name NAME]

Each setting runs over the first --limit test images (batch 100; the views of every item are those
haste-edge eval makes: preprocess.frame_views) for accuracy and the counted MACs per image (the
attention nodes': dense, executed, HTTM's matching and merging). Timing, one thread, batch 1,
--runs images, every setting and onnxruntime interleaved image by image: the attention nodes'
time (the plan's per-node timer around each ScaledDotProductAttention step, dense or merged) and
the whole model's (an untimed-per-node run). Writes benchmarks/results/<NAME>.md, .json and .png
(default httm_<model>).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from common import ROOT, header, ort_session, pyplot, write_results

import haste_edge
from haste_edge.datasets import load_fashion_mnist
from haste_edge.httm.method import OP, attention_summary
from haste_edge.preprocess import frame_views, normalise
from haste_edge.threads import set_threads

BUDGETS = [(0.75, 0.75), (0.5, 0.5), (0.5, 0.3), (0.3, 0.3), (0.2, 0.3), (0.2, 0.2)]
BLOCKS = "ns=8,nt=4"


def settings():
    out = [("dense", None)]
    for mode in ("head", "uniform"):
        for q, kv in BUDGETS:
            out.append((f"{mode} q={q} kv={kv}", f"q={q},kv={kv},{BLOCKS},mode={mode}"))
    out.append(("head q=0.3 kv=0.3 outliers=0.1", f"q=0.3,kv=0.3,{BLOCKS},outliers=0.1"))
    return out


def inputs(model, limit, batch=100):
    spec = model.meta["input"]
    images, labels = load_fashion_mnist("test")
    images, labels = images[:limit], labels[:limit]
    xs = [frame_views(np.stack([normalise(im.astype(np.float32), spec) for im in images[i:i + batch]]), spec)
          for i in range(0, len(images), batch)]
    return xs, labels


def accuracy(model, xs, labels):
    name, correct, macs = model.input_names[0], 0, np.zeros(3)
    start = 0
    for x in xs:
        logits = model.run({name: x})[model.output_names[0]]
        correct += int((logits.argmax(1) == labels[start:start + len(x)]).sum())
        st = model.last_stats()
        att = [l for l in st.layers if l.op == OP]
        macs += [sum(l.dense.sum() for l in att), sum(l.executed.sum() for l in att),
                 sum(l.overhead.sum() for l in att)]
        start += len(x)
    kept = attention_summary(st) if model.compressed else {"queries_kept": 1.0, "keys_kept": 1.0}
    return correct / start, macs / start, kept


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fashion_vit_t4")
    ap.add_argument("--onnx", default=None, help="the model's ONNX file for onnxruntime (default: models/<model>.onnx)")
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--name", default=None, help="results file name (default httm_<model>)")
    args = ap.parse_args()
    set_threads(1)
    base = haste_edge.load(args.model)
    tag = Path(args.model).stem
    xs, labels = inputs(base, args.limit)
    rows = []
    models = {}
    for label, spec in settings():
        m = haste_edge.load(args.model)
        if spec:
            m.set_httm(spec)
        t0 = time.perf_counter()
        acc, macs, kept = accuracy(m, xs, labels)
        rows.append({"setting": label, "spec": spec, "accuracy": acc, "attention_dense_macs": macs[0],
                     "attention_executed_macs": macs[1], "httm_overhead_ops": macs[2], **kept})
        models[label] = m
        print(f"{label}: {acc:.4f}, attention MACs {macs[1] / 1e6:.2f} M of {macs[0] / 1e6:.2f} M "
              f"(+{macs[2] / 1e6:.2f} M), {time.perf_counter() - t0:.0f} s", flush=True)

    # timing: one image at a time, all settings and onnxruntime interleaved
    onnx = args.onnx or ROOT / "models" / f"{tag}.onnx"
    sess = ort_session(onnx, 1)
    name = base.input_names[0]
    images = np.concatenate(xs)[:args.runs]
    att = {k: [] for k in models}
    whole = {k: [] for k in models}
    ort_t = []
    for m in models.values():
        for _ in range(3):
            m.run({name: images[:1]})
            m.run({name: images[:1]}, profile=True)
    for i in range(len(images)):
        x = images[i:i + 1]
        for k, m in models.items():
            plan = m.last_plan
            plan.timings.clear()
            m.run({name: x}, profile=True)
            nodes = {st.node_name for st in plan.steps if st.op == OP}
            att[k].append(sum(t for n, t in plan.timings.items() if n in nodes))
            t0 = time.perf_counter()
            m.run({name: x})
            whole[k].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sess.run(None, {sess.get_inputs()[0].name: x})
        ort_t.append(time.perf_counter() - t0)
    dense_att, dense_whole = statistics.median(att["dense"]), statistics.median(whole["dense"])
    ort_ms = statistics.median(ort_t) * 1e3
    for r in rows:
        r["attention_ms"] = statistics.median(att[r["setting"]]) * 1e3
        r["model_ms"] = statistics.median(whole[r["setting"]]) * 1e3
        r["attention_speedup"] = dense_att * 1e3 / r["attention_ms"]
        r["model_speedup"] = dense_whole * 1e3 / r["model_ms"]
    dense_acc = rows[0]["accuracy"]

    lines = [f"# HTTM on {tag}: accuracy ({args.limit} test images) against attention MACs and time", "",
             header(), "",
             f"timing: 1 thread, batch 1, median over {len(images)} images, settings and onnxruntime interleaved; "
             f"attention = the {OP} nodes (per-node timer), model = a whole run; onnxruntime (whole model) "
             f"{ort_ms:.3f} ms; blocks {BLOCKS}", "",
             "| setting | top-1 | vs dense (pt) | queries kept | keys kept | attention MMAC executed / dense | "
             "+ HTTM ops (M) | attention ms | attention speed-up | model ms | model speed-up | model / onnxruntime |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['accuracy'] * 100:.2f} | {(r['accuracy'] - dense_acc) * 100:+.2f} | "
                     f"{r['queries_kept']:.1%} | {r['keys_kept']:.1%} | "
                     f"{r['attention_executed_macs'] / 1e6:.2f} / {r['attention_dense_macs'] / 1e6:.2f} | "
                     f"{r['httm_overhead_ops'] / 1e6:.2f} | {r['attention_ms']:.3f} | {r['attention_speedup']:.2f}x | "
                     f"{r['model_ms']:.3f} | {r['model_speedup']:.2f}x | {r['model_ms'] / ort_ms:.2f} |")
    write_results(args.name or f"httm_{tag}", lines, {"model": tag, "limit": args.limit, "runs": len(images),
                                                 "onnxruntime_ms": ort_ms, "blocks": BLOCKS, "rows": rows})
    plt = pyplot()
    if plt:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for mode, marker in (("head", "o-"), ("uniform", "s--")):
            sel = [r for r in rows if r["setting"].startswith(mode) and "outliers" not in r["setting"]]
            for ax, key, scale in ((axes[0], "attention_executed_macs", 1e6), (axes[1], "attention_ms", 1)):
                ax.plot([r[key] / scale for r in sel], [r["accuracy"] * 100 for r in sel], marker,
                        label="HTTM (head-wise)" if mode == "head" else "uniform merging (ToMe-style)")
        for ax, key, scale, xl in ((axes[0], "attention_executed_macs", 1e6, "attention MMAC per image"),
                                   (axes[1], "attention_ms", 1, "attention ms per image (1 thread)")):
            ax.plot([rows[0][key] / scale], [dense_acc * 100], "k*", markersize=12, label="dense")
            ax.set_xlabel(xl)
            ax.set_ylabel("top-1 %")
            ax.grid(alpha=0.3)
        axes[0].legend()
        fig.suptitle(f"{tag}: token merging in attention")
        fig.tight_layout()
        fig.savefig(ROOT / "benchmarks" / "results" / f"{args.name or f'httm_{tag}'}.png", dpi=110)


if __name__ == "__main__":
    main()
