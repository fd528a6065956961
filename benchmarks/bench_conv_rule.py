"""The conv rule: every conv on OpenBLAS against the default rule, side by side with onnxruntime.

    python benchmarks/bench_conv_rule.py [--models fashion_resnet18 efficientnet_lite0] [--threads 1 2]

Two copies of each model in one process: one planned with every conv on OpenBLAS
(HASTE_EDGE_CONV=blas), one with the default rule (ops/conv.py: the microkernel on one thread);
each keeps the paths it was planned with. The two and onnxruntime run interleaved, --rounds rounds
of --runs calls, the order rotated per round; the table gives the medians of the per-round ratios. Writes
benchmarks/results/conv_rule_<arch>.md and .json.
"""
from __future__ import annotations

import argparse
import platform

import numpy as np

from bench_tiles import model_and_input
from common import ROOT, header, interleaved, ort_session, write_results

import haste_edge
from haste_edge.ops import conv as conv_mod


def onnx_path(name):
    if name == "fashion_resnet18":
        return ROOT / "models" / "fashion_resnet18.onnx"
    from model_zoo import get_model
    return get_model(name)


def planned(name, blas: bool):
    """(model, input, feeds) with its plans made now, under the chosen rule."""
    model, x = model_and_input(name)
    feeds = {model.input_names[0]: x}
    conv_mod._AUTO = not blas
    try:
        model.run(feeds)
    finally:
        conv_mod._AUTO = conv_mod._CONV_PATH == "auto"
    return model, feeds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["fashion_resnet18", "efficientnet_lite0"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rows = []
    for name in args.models:
        for t in args.threads:
            haste_edge.set_threads(t)      # plans depend on the thread count: made after this
            blas_model, feeds = planned(name, blas=True)
            auto_model, _ = planned(name, blas=False)
            sess = ort_session(onnx_path(name), t)
            ort_feeds = {sess.get_inputs()[0].name: next(iter(feeds.values()))}
            fns = [("blas", lambda: blas_model.run(feeds)), ("auto", lambda: auto_model.run(feeds)),
                   ("ort", lambda: sess.run(None, ort_feeds))]
            ratios = []
            for k in range(args.rounds):       # each round in another order: no seat is favoured
                med = interleaved(dict(fns[k % 3:] + fns[:k % 3]), args.runs)
                ratios.append((med["blas"] / med["ort"], med["auto"] / med["ort"], med["auto"] / med["blas"],
                               med["ort"] * 1e3))
            r = np.median(np.array(ratios), axis=0)
            rows.append({"model": name, "threads": t, "blas_vs_ort": r[0], "default_vs_ort": r[1],
                         "default_vs_blas": r[2], "ort_ms": r[3]})
            print(rows[-1], flush=True)
    lines = ["# Conv rule: all convs on OpenBLAS vs the default rule, interleaved with onnxruntime", "",
             header(), f"medians of {args.rounds} rounds x {args.runs} interleaved calls, batch 1", "",
             "| model | threads | all-OpenBLAS / onnxruntime | default / onnxruntime | default / all-OpenBLAS "
             "| onnxruntime ms |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['threads']} | {r['blas_vs_ort']:.2f} | {r['default_vs_ort']:.2f} | "
                     f"{r['default_vs_blas']:.2f} | {r['ort_ms']:.2f} |")
    write_results(f"conv_rule_{platform.machine()}", lines, {"rows": rows})


if __name__ == "__main__":
    main()
