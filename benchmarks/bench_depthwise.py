"""Every depthwise conv of a model alone, on its real input: the channel-blocked kernel
(ops/conv_depthwise_blocked.py) against the per-plane kernel and onnxruntime.

    python benchmarks/bench_depthwise.py [--models mobilenetv2_224 efficientnet_lite0] [--threads 1]
                                         [--repeats 30] [--gap] [--name NAME]

Per layer three calls interleaved, --repeats rounds: the blocked kernel, the per-plane path
(conv._depthwise, what runs when a block's scratch would be too large; results/depthwise_x86_64_t1.md
was measured against the per-plane kernels of df84c21 instead, named in its path column: a vector
tile per plane, channels-last on small planes), and onnxruntime on a one-node model (NCHW in and
out: it reorders to channel blocks and back inside, as the blocked kernel does). With --gap every call follows 2 ms idle (the state a layer meets in a
model whose previous layer ran elsewhere); without, calls follow each other (caches warm).
Medians in ms; writes benchmarks/results/depthwise_<arch>_t<threads>.md and .json.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np

from bench_layers import conv_inputs, onnx_conv
from bench_tiles import model_and_input
from common import ROOT, header, ort_session, write_results

import haste_edge
from haste_edge import microkernel as mk
from haste_edge.ops import conv as conv_mod


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["mobilenetv2_224", "efficientnet_lite0"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--gap", action="store_true")
    ap.add_argument("--name", default=None, help="results file name (default depthwise_<arch>_t<threads>)")
    args = ap.parse_args()
    haste_edge.set_threads(args.threads)
    tmp = ROOT / "benchmarks" / "results" / ".dw.onnx"
    rows = []
    for model_name in args.models:
        model, x = model_and_input(model_name)
        for name, xi, w, b, attrs in conv_inputs(model, x):
            if not (attrs["group"] > 1 and w.shape[1] == 1):
                continue
            a_blk, a_old = dict(attrs), dict(attrs)          # one plan each (plans are keyed by attrs)
            y_blk = conv_mod.conv([xi, w, b], a_blk)[0]
            conv_mod._DW_BLOCKED = False
            try:
                y_old = conv_mod.conv([xi, w, b], a_old)[0]
            finally:
                conv_mod._DW_BLOCKED = True
            old_path = conv_mod._get_plan(a_old, xi.shape, w.shape).path
            onnx_conv(tmp, xi, w, b, attrs)
            sess = ort_session(tmp, args.threads)
            y_ort = sess.run(None, {"x": xi})[0]
            scale = max(float(np.abs(y_ort).max()), 1e-12)
            outs_b, outs_o = [np.empty_like(y_blk)], [np.empty_like(y_old)]
            fns = {"blocked": lambda: conv_mod.conv([xi, w, b], a_blk, outs_b),
                   "old": lambda: conv_mod.conv([xi, w, b], a_old, outs_o),
                   "ort": lambda: sess.run(None, {"x": xi})}
            times = {k: [] for k in fns}
            for fn in fns.values():
                fn()
            for _ in range(args.repeats):
                for k, fn in fns.items():
                    if args.gap:
                        time.sleep(0.002)
                    t0 = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            rows.append({"model": model_name, "layer": name, "x": list(xi.shape), "w": list(w.shape),
                         "stride": attrs["strides"][0], "old_path": old_path, **{f"{k}_ms": v for k, v in med.items()},
                         "err_blocked": float(np.abs(y_blk - y_ort).max()) / scale,
                         "err_old": float(np.abs(y_old - y_ort).max()) / scale})
            r = rows[-1]
            print(f"{model_name} {name} {r['x']} s{r['stride']}: blocked {r['blocked_ms']:.3f} "
                  f"{old_path} {r['old_ms']:.3f} ort {r['ort_ms']:.3f}", flush=True)
    tmp.unlink(missing_ok=True)
    lines = [f"# Depthwise convs alone: channel-blocked kernel vs per-plane kernels vs onnxruntime, "
             f"{args.threads} thread(s), median of {args.repeats} interleaved rounds"
             + (", 2 ms idle before every call" if args.gap else ""), "",
             header() + "; blocked depthwise: " + f"{mk.DWB_VL} channels x {mk.DWB_MR} pixels", "",
             "| model | layer | input | kernel, stride | blocked ms | per-plane ms (path) | onnxruntime ms | "
             "blocked / per-plane | blocked / onnxruntime | max rel. diff |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['layer']} | {r['x']} | {r['w'][2]}x{r['w'][3]} s{r['stride']} | "
                     f"{r['blocked_ms']:.3f} | {r['old_ms']:.3f} ({r['old_path']}) | {r['ort_ms']:.3f} | "
                     f"{r['blocked_ms'] / r['old_ms']:.2f} | {r['blocked_ms'] / r['ort_ms']:.2f} | "
                     f"{r['err_blocked']:.1e} |")
    for m in args.models:
        sel = [r for r in rows if r["model"] == m]
        t = {k: sum(r[k] for r in sel) for k in ("blocked_ms", "old_ms", "ort_ms")}
        lines.append(f"| {m} | all depthwise | | | {t['blocked_ms']:.3f} | {t['old_ms']:.3f} | {t['ort_ms']:.3f} | "
                     f"{t['blocked_ms'] / t['old_ms']:.2f} | {t['blocked_ms'] / t['ort_ms']:.2f} | |")
    name = args.name or f"depthwise_{platform.machine()}_t{args.threads}" + ("_gap" if args.gap else "")
    write_results(name, lines, {"threads": args.threads, "gap": args.gap, "rows": rows})


if __name__ == "__main__":
    main()
