"""--haste auto against the dense engine per model and thread count, in one process.

    python benchmarks/haste_auto.py [--models fashion_resnet18 efficientnet_lite0 ...] [--threads 1 2] [--runs 30]

auto decides per conv when the model is compressed, for the thread count set then (haste/method.py,
haste/cost.py): so each thread count gets its own compressed model. Batch 1, the input of
bench_dense.py's cases; the dense model and the auto model run interleaved (median of --runs).
Reports which convs auto compressed, the time ratio auto / dense (the issue's bar: >= 0.97x speed,
i.e. ratio <= 1.03), and the top-1 class of both. Writes results/<name>_<arch>.md and .json.
"""
from __future__ import annotations

import argparse
import platform

from bench_dense import MODELS, cases
from common import header, interleaved, write_results

import haste_edge
from haste_edge.haste.method import Haste


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--name", default="haste_auto")
    args = ap.parse_args()
    rows = []
    for name, dense, path, x in cases(args.models):
        feed = {dense.input_names[0]: x}
        out = dense.output_names[0]
        for t in args.threads:
            haste_edge.set_threads(t)
            auto = haste_edge.load(path if name != "fashion_resnet18" else None)
            method = Haste("auto")
            convs = auto.compress(method)
            med = interleaved({"dense": lambda: dense.run(feed), "auto": lambda: auto.run(feed)}, args.runs)
            same = int(dense.run(feed)[out].argmax()) == int(auto.run(feed)[out].argmax())
            rows.append({"model": name, "threads": t, "compressed": len(convs), "candidates": len(method.decisions),
                         "dense_ms": med["dense"] * 1e3, "auto_ms": med["auto"] * 1e3,
                         "ratio": med["auto"] / med["dense"], "same_top1": same})
            print(rows[-1], flush=True)
    lines = [f"# --haste auto vs dense, batch 1, median of {args.runs} interleaved runs", "", header(), "",
             "| model | threads | convs compressed / candidates | dense ms | auto ms | auto / dense time | same top-1 |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['threads']} | {r['compressed']} / {r['candidates']} | {r['dense_ms']:.3f} | "
                     f"{r['auto_ms']:.3f} | {r['ratio']:.2f} | {'yes' if r['same_top1'] else 'no'} |")
    write_results(f"{args.name}_{platform.machine()}", lines, {"runs": args.runs, "rows": rows})


if __name__ == "__main__":
    main()
