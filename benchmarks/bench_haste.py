"""HASTE against the dense engine and onnxruntime, whole model, side by side in one process.

    python benchmarks/bench_haste.py [--points "L=12,P=4" "L=10,P=4" ...] [--threads 1 2]
                                     [--images 20] [--rounds 9] [--name haste_vs_dense]

Without --points it times the README's operating points (DEFAULT_POINTS).

A point is a spec as `haste-edge --haste` takes it, optionally followed by @FILE: a JSON file of
per-layer overrides ({conv node name: {"L": ...}}, as haste_sweep.py --per-layer takes), e.g.
"L=12,P=2@benchmarks/results/per_layer_L_14_12_12_8.json".

Batch 1, real Fashion-MNIST test images (HASTE's cost depends on the input, so all three runtimes
get the same sequence of --images images). One round runs every image through each runtime in
turn (interleaved, so noise on this shared machine hits all alike); the figure per runtime is the
median over rounds of the time per image. For each operating point it reports:
  measured speed-up   dense engine time / HASTE time
  predicted speed-up  dense MACs / (executed MACs + overhead additions), whole model, counted by
                      the kernels on the same images
  ratio               measured / predicted (1.0 = every MAC saved turned into time saved)
and, at 1 thread, the per-phase profile of the whole model (hashing, bucketing, input merge,
filter merge, reduced conv, plus the zero-padded channels-last copy and every other op), and the
compressed convs grouped by stage: their time inside the running model against the dense engine's
same convs, the speed-up their counted MACs predict, the warm per-phase split, the reduced conv's
GMAC/s against the dense conv's, and the time one read of their weights from memory takes at the
stream bandwidth measured in the same process (where the MAC count stops predicting the time).
Writes benchmarks/results/<name>.md and .json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from common import ROOT, header, interleaved, ort_session, write_results

import haste_edge
from haste_edge.datasets import load_fashion_mnist
from haste_edge.haste import parse_haste_spec
from haste_edge.bench.haste_phases import PHASE_COLUMNS, phase_profile
from haste_edge.jit import njit
from haste_edge.preprocess import normalise

ONNX = ROOT / "models" / "fashion_resnet18.onnx"
# the operating points of the README's accuracy table: the accuracy target (P=2, per-stage L), the
# P=4 ones of stages 3-4 and of stage 4 alone, and L=12,P=4 on every conv
DEFAULT_POINTS = [f"L=12,P=2@{ROOT}/benchmarks/results/per_layer_L_14_12_12_8.json",
                  f"L=10,P=4,start=10@{ROOT}/benchmarks/results/per_layer_P4_L3_10_L4_6.json",
                  "L=8,P=4,start=10", "L=6,P=4,start=15", "L=4,P=4,start=15", "L=12,P=4"]


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


@njit
def _stream_sum(a):
    t = np.float32(0.0)
    for i in range(a.shape[0]):
        t += a[i]
    return t


def stream_bandwidth(mb: float, reads: int = 3) -> float:
    """GB/s of one thread summing a float32 array of `mb` MB front to back (best of `reads`): with 256 MB
    the rate weights come from main memory at, with a few MB the rate from cache."""
    a = np.ones(int(mb * 2**20) // 4, dtype=np.float32)
    _stream_sum(a)
    best = min(_timed(lambda: _stream_sum(a)) for _ in range(reads))
    return a.nbytes / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def stage_breakdown(dense, model, xs, name, rounds: int, dram_gbs: float) -> list[dict]:
    """The compressed convs grouped by stage (output channels and map size): see the module docstring.
    In-model times: both models run every image with per-step timing, in interleaved rounds (median)."""
    timings = {"dense": [], "haste": []}
    for _ in range(rounds):
        for key, m in (("dense", dense), ("haste", model)):
            m.run({name: xs[0]})
            plan = m.last_plan
            plan.timings.clear()
            for x in xs:
                m.run({name: x}, profile=True)
            timings[key].append(dict(plan.timings))
    in_model = {k: {layer: float(np.median([r[layer] for r in rs])) / len(xs) for layer in rs[0]}
                for k, rs in timings.items()}
    counts = {}
    for x in xs:
        model.run({name: x})
        for ls in model.last_stats().layers:
            if ls.method == "haste":
                c = counts.setdefault(ls.name, np.zeros(3))
                c += (ls.dense.sum(), ls.executed.sum(), ls.overhead.sum())
    warm, profiled = {}, xs[:3]
    for x in profiled:
        for layer, ph in phase_profile(model, {name: x}, repeats=5, clock=time.process_time)["layers"].items():
            w = warm.setdefault(layer, dict.fromkeys(PHASE_COLUMNS, 0.0))
            for k in PHASE_COLUMNS:
                w[k] += ph[k] / len(profiled)
    plan = model.last_plan
    groups = {}
    for node in model.graph.nodes:
        if node.name not in counts:
            continue
        c_out, _, kh, kw = model.graph.weights[node.inputs[1]].shape
        _, _, ho, wo = plan.shapes[node.outputs[0]]
        g = groups.setdefault(f"{c_out} ch {ho}x{wo}", {"convs": 0, "weights_mb": 0.0, "dense_ms": 0.0,
                                                       "haste_ms": 0.0, "dense_macs": 0.0, "cost": 0.0,
                                                       "executed_macs": 0.0,
                                                       **dict.fromkeys(PHASE_COLUMNS, 0.0)})
        g["convs"] += 1
        g["weights_mb"] += model.graph.weights[node.inputs[1]].size * 4 / 2**20
        g["dense_ms"] += in_model["dense"][node.name] * 1e3
        g["haste_ms"] += in_model["haste"][node.name] * 1e3
        d, e, o = counts[node.name] / len(xs)
        g["dense_macs"] += d
        g["executed_macs"] += e
        g["cost"] += e + o
        for k in PHASE_COLUMNS:
            g[k] += warm[node.name][k] * 1e3
    rows = []
    for key, g in groups.items():
        g["stage"] = key
        g["measured"] = g["dense_ms"] / g["haste_ms"]
        g["predicted"] = g["dense_macs"] / g["cost"]
        g["ratio"] = g["measured"] / g["predicted"]
        g["reduced_conv_gmacs"] = g["executed_macs"] / (g["reduced_conv"] * 1e-3) / 1e9 if g["reduced_conv"] > 0 else 0.0
        g["dense_gmacs"] = g["dense_macs"] / (g["dense_ms"] * 1e-3) / 1e9
        g["weight_read_ms"] = g["weights_mb"] * 2**20 / (dram_gbs * 1e9) * 1e3
        g["warm_ms"] = sum(g[k] for k in PHASE_COLUMNS)
        rows.append(g)
    return rows


def point_config(point: str):
    """"SPEC" or "SPEC@per_layer.json" -> HasteConfig."""
    spec, _, per_layer = point.partition("@")
    cfg = parse_haste_spec(spec)
    if per_layer:
        cfg = dataclasses.replace(cfg, per_layer=json.loads(Path(per_layer).read_text()))
    return cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", nargs="+", default=DEFAULT_POINTS)
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
        m.set_haste(point_config(p))
        spec, at, per_layer = p.partition("@")
        compressed[spec + at + Path(per_layer).stem if at else p] = m      # label: file name only

    macs = {p: mac_prediction(m, xs, name) for p, m in compressed.items()}   # the same at any thread count
    rows, profiles, stages, bandwidth = [], {}, {}, {}
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
            bandwidth = {"memory": stream_bandwidth(256), "cache": stream_bandwidth(2.4, reads=20)}
            stages = {p: stage_breakdown(dense, m, xs, name, args.rounds, bandwidth["memory"])
                      for p, m in compressed.items()}
    write(rows, profiles, stages, bandwidth, args)


def write(rows, profiles, stages, bandwidth, args):
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
    if stages:
        lines += ["", "Compressed convs by stage, 1 thread, ms per image. 'in model': per-step wall time inside "
                  "the running model (median of the rounds), dense engine and HASTE on the same convs; 'warm': "
                  "the per-phase profile's sum (each conv called repeatedly, its weights in cache); overhead = "
                  "pad + hashing + bucketing + input merge; 'weights read' = one pass over the stage's weights "
                  f"at the stream bandwidth measured here from memory ({bandwidth['memory']:.1f} GB/s; "
                  f"{bandwidth['cache']:.1f} GB/s from cache, one thread):", "",
                  "| HASTE | stage | convs | dense ms (in model) | HASTE ms (in model) | speed-up | predicted | ratio "
                  "| HASTE ms (warm) | overhead | filter merge | reduced conv | reduced conv GMAC/s | dense GMAC/s "
                  "| weights MB | weights read ms |", "|---|" + "---|" * 15]
        for p, groups in stages.items():
            for g in groups:
                overhead = g["pad"] + g["hashing"] + g["bucketing"] + g["input_merge"]
                lines.append(f"| {p} | {g['stage']} | {g['convs']} | {g['dense_ms']:.3f} | {g['haste_ms']:.3f} | "
                             f"{g['measured']:.2f}x | {g['predicted']:.2f}x | {g['ratio']:.2f} | "
                             f"{g['warm_ms']:.3f} | {overhead:.3f} | {g['filter_merge']:.3f} | "
                             f"{g['reduced_conv']:.3f} | {g['reduced_conv_gmacs']:.1f} | {g['dense_gmacs']:.1f} | "
                             f"{g['weights_mb']:.2f} | {g['weight_read_ms']:.3f} |")
    write_results(args.name, lines, {"rows": rows, "profiles": profiles, "stages": stages, "bandwidth": bandwidth})


if __name__ == "__main__":
    main()
