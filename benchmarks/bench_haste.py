"""HASTE against the dense engine and onnxruntime, whole model, side by side in one process.

    python benchmarks/bench_haste.py [--points "L=12,P=4" "L=10,P=4" ...] [--threads 1 2]
                                     [--images 20] [--rounds 9] [--name haste_vs_dense]

Batch 1, real Fashion-MNIST test images (HASTE's cost depends on the input, so all three runtimes
get the same sequence of --images images). One round runs every image through each runtime in
turn (interleaved, so noise on this shared machine hits all alike); the figure per runtime is the
median over rounds of the time per image. For each operating point it reports:
  measured speed-up   dense engine time / HASTE time
  predicted speed-up  dense MACs / (executed MACs + overhead additions), whole model, counted by
                      the kernels on the same images
  ratio               measured / predicted (1.0 = every MAC saved turned into time saved)
and, at 1 thread, the per-phase profile of the whole model (hashing, bucketing, input merge,
filter merge, reduced conv, plus the zero-padded channels-last copy and every other op).
Writes benchmarks/results/<name>.md and .json.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from common import ROOT, header, interleaved, ort_session, write_results

import haste_edge
from haste_edge.datasets import load_fashion_mnist
from haste_edge.haste.phases import PHASE_COLUMNS, phase_profile
from haste_edge.preprocess import normalise

ONNX = ROOT / "models" / "fashion_resnet18.onnx"


def mac_prediction(model, xs, name):
    """(dense MACs, executed MACs, overhead) per image, whole model, as counted by the kernels."""
    d = e = o = 0
    for x in xs:
        model.run({name: x})
        st = model.last_stats()
        d += st.dense().sum()
        e += st.executed().sum()
        o += st.overhead().sum()
    n = len(xs)
    return d / n, e / n, o / n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", nargs="+", default=["L=12,P=4", "L=10,P=4", "L=12,P=8", "L=12,P=2"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--name", default="haste_vs_dense")
    args = ap.parse_args()

    dense = haste_edge.load()
    name = dense.input_names[0]
    images, _ = load_fashion_mnist("test")
    xs = [normalise(im.astype(np.float32), dense.meta["input"])[None] for im in images[:args.images]]
    compressed = {}
    for p in args.points:
        m = haste_edge.load()
        m.set_haste(p)
        compressed[p] = m

    macs = {p: mac_prediction(m, xs, name) for p, m in compressed.items()}   # the same at any thread count
    rows, profiles = [], {}
    for threads in args.threads:
        haste_edge.set_threads(threads)
        sess = ort_session(ONNX, threads)
        runtimes = {"dense": lambda x: dense.run({name: x}), "onnxruntime": lambda x: sess.run(None, {name: x})}
        for p, m in compressed.items():
            runtimes[p] = (lambda mm: lambda x: mm.run({name: x}))(m)
        # one call = every image once; the first (warm-up) call compiles, plans and warms caches
        per_call = interleaved({k: (lambda f: lambda: [f(x) for x in xs])(f) for k, f in runtimes.items()},
                               runs=args.rounds, warmup=1)
        med = {k: t / len(xs) for k, t in per_call.items()}
        for p in compressed:
            d, e, o = macs[p]
            measured = med["dense"] / med[p]
            predicted = d / (e + o)
            rows.append({"threads": threads, "point": p, "dense_ms": med["dense"] * 1e3,
                         "haste_ms": med[p] * 1e3, "ort_ms": med["onnxruntime"] * 1e3,
                         "dense_macs": d, "executed_macs": e, "overhead": o,
                         "measured_speedup": measured, "predicted_speedup": predicted,
                         "predicted_without_overhead": d / e, "ratio": measured / predicted})
            print(f"{threads} thread(s) {p}: dense {med['dense'] * 1e3:.3f} ms, HASTE {med[p] * 1e3:.3f} ms, "
                  f"onnxruntime {med['onnxruntime'] * 1e3:.3f} ms; speed-up {measured:.2f}x, predicted "
                  f"{predicted:.2f}x, ratio {measured / predicted:.2f}", flush=True)
        if threads == 1:
            for p, m in compressed.items():
                acc = {}
                for x in xs[:5]:
                    prof = phase_profile(m, {name: x}, repeats=5, clock=time.process_time)
                    acc.setdefault("other_ops", []).append(prof["other_ops"])
                    acc.setdefault("total", []).append(prof["total"])
                    for k, v in prof["phases"].items():
                        acc.setdefault(k, []).append(v)
                profiles[p] = {k: float(np.mean(v)) for k, v in acc.items()}
            dprof = phase_profile(dense, {name: xs[0]}, repeats=5, clock=time.process_time)
            profiles["dense"] = {"other_ops": dprof["other_ops"], "total": dprof["total"]}
    write(rows, profiles, args)


def write(rows, profiles, args):
    lines = [f"# HASTE vs dense engine vs onnxruntime: bundled Fashion-MNIST ResNet-18, batch 1, "
             f"{args.images} test images, median of {args.rounds} interleaved rounds", "", header(), "",
             "| threads | HASTE | dense ms | HASTE ms | onnxruntime ms | speed-up over dense | predicted by MACs "
             "(with overhead) | without overhead | measured / predicted |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['threads']} | {r['point']} | {r['dense_ms']:.3f} | {r['haste_ms']:.3f} | "
                     f"{r['ort_ms']:.3f} | {r['measured_speedup']:.2f}x | {r['predicted_speedup']:.2f}x | "
                     f"{r['predicted_without_overhead']:.2f}x | {r['ratio']:.2f} |")
    if profiles:
        lines += ["", "Per-phase profile, 1 thread, CPU ms per image (mean over 5 images, best of 5 calls each; "
                  "'other ops' = everything not compressed: first conv, 1x1 shortcuts, adds, pooling, classifier):",
                  "", "| run | " + " | ".join(PHASE_COLUMNS) + " | other ops | total |",
                  "|---|" + "---|" * (len(PHASE_COLUMNS) + 2)]
        for p, prof in profiles.items():
            cells = [f"{prof[c] * 1e3:.3f}" if c in prof else "" for c in PHASE_COLUMNS]
            lines.append(f"| {p} | " + " | ".join(cells) + f" | {prof['other_ops'] * 1e3:.3f} | "
                         f"{prof['total'] * 1e3:.3f} |")
    write_results(args.name, lines, {"rows": rows, "profiles": profiles})


if __name__ == "__main__":
    main()
