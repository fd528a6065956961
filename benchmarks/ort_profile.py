"""onnxruntime's own per-node times inside a whole graph (its profiler), to set beside
`haste-edge --threads N profile MODEL`.

    python benchmarks/ort_profile.py MODEL_NAME [--threads 1] [--runs 30]

MODEL_NAME: fashion_resnet18 or a tests/model_zoo.py model (efficientnet_lite0, mobilenetv2_224,
...), fed the same input as benchmarks/bench_dense.py. Inside a graph onnxruntime fuses nodes
(Conv + activation + residual Add) and keeps activations in channel blocks of 16 (NCHWc), so its
node names are those of the fused nodes' outputs. Prints and writes
benchmarks/results/ort_profile_<model>_t<threads>.md: median microseconds per node over --runs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile

import onnxruntime as ort

from bench_conv_rule import onnx_path
from bench_tiles import model_and_input
from common import header, write_results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    _, x = model_and_input(args.model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.enable_profiling = True
    with tempfile.TemporaryDirectory() as d:
        opts.profile_file_prefix = os.path.join(d, "ort")
        sess = ort.InferenceSession(str(onnx_path(args.model)), opts, providers=["CPUExecutionProvider"])
        feeds = {sess.get_inputs()[0].name: x}
        for _ in range(args.runs):
            sess.run(None, feeds)
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    times: dict = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            times.setdefault((e["name"][:-len("_kernel_time")], e["args"].get("op_name")), []).append(e["dur"])
    rows = sorted(((statistics.median(v), name, op) for (name, op), v in times.items()), reverse=True)
    total = sum(r[0] for r in rows)
    lines = [f"# onnxruntime per node inside the {args.model} graph, {args.threads} thread(s), median of "
             f"{args.runs} runs (its profiler)", "", header(), "",
             f"total of the nodes' medians: {total / 1e3:.3f} ms over {len(rows)} nodes", "",
             "| node (output) | op | us |", "|---|---|---|"]
    lines += [f"| {name} | {op} | {us:.0f} |" for us, name, op in rows]
    write_results(f"ort_profile_{args.model}_t{args.threads}", lines,
                  {"model": args.model, "threads": args.threads, "total_us": total,
                   "nodes": [{"name": n, "op": o, "us": u} for u, n, o in rows]})


if __name__ == "__main__":
    main()
