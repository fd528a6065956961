"""Latency with other programs busy on the board: the default thread setting against one thread.

    python benchmarks/bench_under_load.py [--busy 0 1 2] [--haste SPEC] [--runs 40] [--rounds 5]

For each number of competing processes (each a pure-Python spin loop, like a camera or a web
server that keeps a core busy), the bundled model runs at batch 1 on real test images under three
thread settings, interleaved in rounds so the load hits all alike:
  default        haste_edge.set_threads(): Numba on all cores, the BLAS on all of them while other
                 processes leave the cores idle, on one otherwise (haste_edge/threads.py)
  1 thread       haste_edge.set_threads(1)
  BLAS all cores haste_edge.set_threads(None, blas=cores): the earlier default, for the cause
  BLAS 1 thread  haste_edge.set_threads(None, blas=1): what the default falls back to under load
Reports p50 and p99 per setting and the ratio of each p50 to the 1-thread p50 (target: default
<= 1.5x with one busy process, and < 1x on an idle machine). Writes
benchmarks/results/<name>.md and .json.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

from common import header, write_results

import haste_edge
from haste_edge.datasets import load_fashion_mnist
from haste_edge.preprocess import normalise

SPIN = "while True: pass"


def settings(cores: int) -> dict:
    return {"default": lambda: haste_edge.set_threads(None),
            "1 thread": lambda: haste_edge.set_threads(1),
            "BLAS all cores": lambda: haste_edge.set_threads(None, blas=cores),
            "BLAS 1 thread": lambda: haste_edge.set_threads(None, blas=1)}


def time_runs(model, xs, runs) -> list[float]:
    name = model.input_names[0]
    out = []
    for i in range(runs):
        x = xs[i % len(xs)]
        t0 = time.perf_counter()
        model.run({name: x})
        out.append(time.perf_counter() - t0)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2], help="competing busy processes")
    ap.add_argument("--haste", default=None, help="HASTE spec (default: dense)")
    ap.add_argument("--runs", type=int, default=40, help="inferences per setting and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--name", default="under_load")
    args = ap.parse_args()

    cores = os.cpu_count() or 1
    model = haste_edge.load()
    model.set_haste(args.haste)
    images, _ = load_fashion_mnist("test")
    xs = [normalise(im.astype(np.float32), model.meta["input"])[None] for im in images[:20]]
    configs = settings(cores)
    rows = []
    for busy in args.busy:
        procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(busy)]
        try:
            time.sleep(0.5)
            times = {k: [] for k in configs}
            for _ in range(args.rounds):
                for k, apply in configs.items():
                    apply()
                    time_runs(model, xs, 5)                  # settle the pools
                    time.sleep(0.15)                         # a fresh load reading for the default
                    times[k] += time_runs(model, xs, args.runs)
        finally:
            for p in procs:
                p.kill()
                p.wait()
        one = float(np.percentile(times["1 thread"], 50))
        for k, t in times.items():
            p50, p99 = float(np.percentile(t, 50)), float(np.percentile(t, 99))
            rows.append({"busy": busy, "setting": k, "p50_ms": p50 * 1e3, "p99_ms": p99 * 1e3,
                         "p50_vs_1_thread": p50 / one, "n": len(t)})
            print(f"busy {busy}: {k}: p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms, "
                  f"{p50 / one:.2f}x of 1 thread", flush=True)
    haste_edge.set_threads(None)
    lines = [f"# Latency under load: bundled model, batch 1, {'HASTE ' + args.haste if args.haste else 'dense'}, "
             f"{args.rounds} rounds x {args.runs} runs per setting", "", header(), "",
             "| busy processes | setting | p50 ms | p99 ms | p50 / 1-thread p50 |", "|---|---|---|---|---|"]
    lines += [f"| {r['busy']} | {r['setting']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['p50_vs_1_thread']:.2f} |"
              for r in rows]
    write_results(args.name, lines, {"haste": args.haste, "cores": cores, "rows": rows})


if __name__ == "__main__":
    main()
