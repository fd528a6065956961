"""Winograd F(4x4,3x3) against the implicit GEMM, per 3x3 stride-1 layer shape, in one process.

    python benchmarks/bench_winograd.py [--threads 1] [--runs 15] [--rounds 3]

For each shape (ResNet-18 and VGG-11 layers at 224, and smaller ones) the same conv, planned once
on the microkernel's implicit GEMM (conv_direct) and once on F(4x4) (conv_winograd4), on random
inputs; the two are called alternately, --rounds rounds of --runs calls each, best median kept.
Gives the rule in ops/conv.py its thresholds (_WINOGRAD4_MIN_PIXELS, _WINOGRAD4_MIN_CHANNELS).
Writes benchmarks/results/winograd4_layers_<arch>.md and .json.
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from common import header, write_results

import haste_edge
from haste_edge.ops import conv as conv_mod
from haste_edge.ops.conv_winograd4 import Winograd4Conv

SHAPES = [(32, 28, 32), (64, 14, 64), (128, 7, 128), (32, 56, 32), (64, 28, 64), (128, 14, 128),
          (64, 56, 64), (128, 28, 128), (256, 14, 256), (512, 7, 512), (64, 112, 128), (128, 56, 256),
          (256, 28, 512), (512, 14, 512)]


def median_time(fn, runs):
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    haste_edge.set_threads(args.threads)
    rng = np.random.default_rng(0)
    rows = []
    for ci, hw, co in SHAPES:
        x = rng.standard_normal((1, ci, hw, hw)).astype(np.float32)
        w = (rng.standard_normal((co, ci, 3, 3)) / np.sqrt(9 * ci)).astype(np.float32)
        b = rng.standard_normal(co).astype(np.float32)
        attrs = dict(kernel_shape=[3, 3], strides=[1, 1], dilations=[1, 1], pads=[1, 1, 1, 1], group=1,
                     activation="Relu", clip_min=None, clip_max=None)
        saved = conv_mod._DIRECT, conv_mod._WINOGRAD4
        conv_mod._DIRECT, conv_mod._WINOGRAD4 = True, False      # the implicit GEMM for this copy
        try:
            y = conv_mod.conv([x, w, b], attrs)[0]
        finally:
            conv_mod._DIRECT, conv_mod._WINOGRAD4 = saved
        plan = conv_mod._get_plan(attrs, x.shape, w.shape)
        wino = Winograd4Conv(w, plan)
        y4 = np.empty_like(y)
        out = [np.empty_like(y)]
        t_gemm = t_wino = np.inf
        for _ in range(args.rounds):
            t_gemm = min(t_gemm, median_time(lambda: conv_mod.conv([x, w, b], attrs, out), args.runs))
            t_wino = min(t_wino, median_time(lambda: wino.run(x, y4, b, plan), args.runs))
        err = float(np.abs(y4 - y).max() / np.abs(y).max())
        rows.append({"c_in": ci, "size": hw, "c_out": co, "gemm_ms": t_gemm * 1e3, "winograd4_ms": t_wino * 1e3,
                     "ratio": t_wino / t_gemm, "max_rel_diff": err})
        print(rows[-1], flush=True)
    lines = [f"# Winograd F(4x4,3x3) against the implicit GEMM per 3x3 stride-1 layer, {args.threads} thread(s)",
             "", header(), f"best of {args.rounds} rounds of the median of {args.runs} calls, batch 1, random inputs",
             "", "| C_in | map | C_out | implicit GEMM ms | F(4x4) ms | F(4x4) / GEMM | max rel. diff |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['c_in']} | {r['size']}x{r['size']} | {r['c_out']} | {r['gemm_ms']:.3f} | "
                     f"{r['winograd4_ms']:.3f} | {r['ratio']:.2f} | {r['max_rel_diff']:.1e} |")
    write_results(f"winograd4_layers_{platform.machine()}", lines, {"threads": args.threads, "rows": rows})


if __name__ == "__main__":
    main()
