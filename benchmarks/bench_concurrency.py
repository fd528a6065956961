"""One Model serving several Python threads: runs overlapping (each thread has its own buffers,
threads.SERIALISE_RUNS off) against runs one at a time (what Model.run does), side by side.

    python benchmarks/bench_concurrency.py [--threads-in 1 2 4] [--runs 50] [--rounds 3] [--haste SPEC]

Each of K Python threads runs --runs batch-1 inferences of the bundled model on real test images;
"concurrent" lets them run at once (each thread has its own plan), "one at a time" is Model.run's
default. Engine threads: the default. Rounds alternate the two modes. Reports inferences per second, p50/p99 latency per request, the outputs checked against the
single-thread ones, and the activation memory of the per-thread plans.
Writes benchmarks/results/<name>.md and .json.
"""
from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from common import header, write_results

import haste_edge
from haste_edge import threads as threads_mod
from haste_edge.datasets import load_fashion_mnist
from haste_edge.preprocess import normalise


def serve(model, xs, expected, k, runs, serialise):
    """(seconds for all requests, per-request latencies, wrong outputs) of k threads."""
    lat, wrong = [], []
    name, out = model.input_names[0], model.output_names[0]

    def worker(t):
        for r in range(runs):
            i = (t * runs + r) % len(xs)
            t0 = time.perf_counter()
            y = model.run({name: xs[i]})[out]
            lat.append(time.perf_counter() - t0)
            if not np.array_equal(y, expected[i]):
                wrong.append(i)

    threads_mod.SERIALISE_RUNS = serialise
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(k)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    threads_mod.SERIALISE_RUNS = True
    return time.perf_counter() - t0, lat, len(wrong)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads-in", type=int, nargs="+", default=[1, 2, 4], help="Python threads calling run")
    ap.add_argument("--runs", type=int, default=50, help="requests per Python thread and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--haste", default=None)
    ap.add_argument("--name", default="concurrency")
    args = ap.parse_args()

    model = haste_edge.load()
    model.set_haste(args.haste)
    images, _ = load_fashion_mnist("test")
    xs = [normalise(im.astype(np.float32), model.meta["input"])[None] for im in images[:20]]
    expected = [model.run({model.input_names[0]: x})[model.output_names[0]] for x in xs]
    arena = model.last_plan.arena_bytes
    rows = []
    for k in args.threads_in:
        res = {"concurrent": [], "one at a time": []}
        for _ in range(args.rounds):
            for mode in res:
                res[mode].append(serve(model, xs, expected, k, args.runs, mode != "concurrent"))
        for mode, rs in res.items():
            secs = sum(r[0] for r in rs)
            lat = np.concatenate([r[1] for r in rs])
            rows.append({"python_threads": k, "mode": mode, "per_s": k * args.runs * len(rs) / secs,
                         "p50_ms": float(np.percentile(lat, 50) * 1e3), "p99_ms": float(np.percentile(lat, 99) * 1e3),
                         "wrong": sum(r[2] for r in rs), "requests": int(lat.size),
                         "activation_bytes": arena * k})            # one plan per Python thread
            r = rows[-1]
            print(f"{k} threads {mode}: {r['per_s']:.0f}/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
                  f"wrong {r['wrong']}", flush=True)
    lines = [f"# One Model, several Python threads: bundled model, batch 1, "
             f"{'HASTE ' + args.haste if args.haste else 'dense'}, {args.rounds} rounds x {args.runs} requests per thread",
             "", header(), "",
             "| Python threads | mode | inferences/s | p50 ms per request | p99 ms | wrong outputs | activation buffers |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['python_threads']} | {r['mode']} | {r['per_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{r['wrong']} of {r['requests']} | {r['activation_bytes'] / 1e6:.2f} MB |" for r in rows]
    write_results(args.name, lines, {"haste": args.haste, "rows": rows})


if __name__ == "__main__":
    main()
