"""Each compiled call of a model's replay (runtime.py) timed inside the graph, after an onnxruntime run.

    python benchmarks/replay_calls.py MODEL [--threads 1] [--runs 200]

MODEL: fashion_resnet18 (the bundled model) or a test-zoo name (efficientnet_lite0, resnet18_224, ...).
Per round, onnxruntime runs the model once (evicting caches as it does in bench_dense.py's interleaved
timing), then every call of our recorded replay is made in order, each timed alone; the table gives
each call's median over the rounds and the step it belongs to. Set beside `python
benchmarks/ort_profile.py MODEL --threads N` (onnxruntime's own per-node times). Writes
benchmarks/results/replay_calls_<MODEL>_t<N>.md and .json.
"""
from __future__ import annotations

import argparse
import statistics
import time

from bench_conv_rule import onnx_path
from bench_tiles import model_and_input
from common import header, ort_session, write_results

from haste_edge.threads import run_context, set_threads


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    set_threads(args.threads)
    model, x = model_and_input(args.model)
    feeds = {model.input_names[0]: x}
    for _ in range(5):
        model.run(feeds)
    plan = model.last_plan
    calls = plan.replay.calls
    sess = ort_session(onnx_path(args.model), args.threads)
    ort_feeds = {sess.get_inputs()[0].name: x}
    times = [[] for _ in calls]
    for _ in range(args.runs):
        sess.run(None, ort_feeds)
        with run_context():
            for i, (f, a) in enumerate(calls):
                t0 = time.perf_counter()
                f(*a)
                times[i].append(time.perf_counter() - t0)
    steps = plan.replay.steps
    rows = [(steps[i], getattr(f, "__name__", type(f).__name__), statistics.median(times[i]) * 1e6)
            for i, (f, _) in enumerate(calls)]
    total = sum(r[2] for r in rows)
    lines = [f"# {args.model}: each replay call inside the graph after an onnxruntime run, {args.threads} "
             f"thread(s), median of {args.runs}", "", header(), "",
             f"sum of the calls' medians: {total / 1e3:.3f} ms over {len(rows)} calls", "",
             "| step | call | us |", "|---|---|---|"]
    lines += [f"| {s} | {n} | {us:.0f} |" for s, n, us in rows]
    write_results(f"replay_calls_{args.model}_t{args.threads}", lines,
                  {"model": args.model, "threads": args.threads, "total_us": total,
                   "calls": [{"step": s, "call": n, "us": us} for s, n, us in rows]})


if __name__ == "__main__":
    main()
