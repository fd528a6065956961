"""Device benchmark protocol: `haste-edge bench` and onnxruntime on the same model, same inputs, same
threads, runs and warm-up, each runtime in its own fresh process (start-up and peak memory are per
process), then one table per machine kind.

    python benchmarks/bench_device.py [--runs 100] [--warmup 10] [--threads 1 2] [--haste L=12,P=4]
                                      [--onnx MODEL.onnx] [--cooldown 5] [--out benchmarks/results]

Protocol, per thread count: haste-edge dense, haste-edge with HASTE (`--haste`), onnxruntime (intra-op
threads = T, inter-op 1, spinning off so idle workers sleep like haste-edge's); batch 1; inputs: the
bundled test images cycled (the same arrays for both runtimes); `--cooldown` seconds of rest between
processes (as benchncnn does). Results: one JSON per haste-edge run (`haste-edge bench --compare`
reads two of them) and device_<machine>.md with the table and the machine header.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, ort_session

DEFAULT_ONNX = ROOT / "models" / "fashion_resnet18.onnx"


def bench_haste_edge(onnx, threads, haste, args, out: Path) -> dict:
    model = [] if Path(onnx) == DEFAULT_ONNX else [str(onnx)]   # the bundled .haste is that ONNX converted
    cmd = [sys.executable, "-m", "haste_edge.cli", "--threads", str(threads), "bench", *model,
           "--runs", str(args.runs), "--warmup", str(args.warmup), "--input", "samples", "--json", str(out)]
    if haste:
        cmd += ["--haste", haste]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def bench_onnxruntime(onnx, threads, runs, warmup) -> dict:
    """In a fresh process (this script, --ort): session creation, first inference, steady state, peak RSS."""
    import numpy as np

    import haste_edge
    from haste_edge.bench.inputs import make_inputs
    from haste_edge.bench.run import peak_rss_mib
    from haste_edge.bench.timing import latency_stats, run_loop
    model = haste_edge.load() if Path(onnx) == DEFAULT_ONNX else haste_edge.load(onnx)
    inputs, _ = make_inputs(model, "samples")
    t0 = time.perf_counter()
    sess = ort_session(onnx, threads)
    create_s = time.perf_counter() - t0
    name = sess.get_inputs()[0].name
    t0 = time.perf_counter()
    sess.run(None, {name: inputs[0]})
    first_s = time.perf_counter() - t0
    n = len(inputs)
    run_loop(lambda i: sess.run(None, {name: inputs[i % n]}), runs=warmup, label="ort warm-up")
    loop = run_loop(lambda i: sess.run(None, {name: inputs[i % n]}), runs=runs, label="ort")
    import onnxruntime
    return {"runtime": f"onnxruntime {onnxruntime.__version__}", "session_s": create_s, "first_inference_s": first_s,
            "steady": latency_stats(loop.times, loop.wall_s), "peak_rss_mib": peak_rss_mib(),
            "numpy": np.__version__}


def row(runtime, threads, r) -> str:
    s = r["steady"]
    e = r.get("energy") or {}
    energy = (f"{e['net_j_per_inference'] * 1e3:.3f} mJ ({'measured' if e['measured'] else 'estimate'})"
              if e else "-")
    macs = f"{r['macs']['executed']['mean'] / 1e6:.1f}" if "macs" in r else "-"
    first = r["startup"]["first_inference_s"] if "startup" in r else r["first_inference_s"]
    return (f"| {runtime} | {threads} | {first:.3f} | {s['mean_ms']:.2f} | {s['p50_ms']:.2f} | {s['p90_ms']:.2f} | "
            f"{s['p99_ms']:.2f} | {s['inferences_per_s']:.0f} | {r['peak_rss_mib']:.0f} | {macs} | {energy} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--haste", default="L=12,P=4")
    ap.add_argument("--onnx", default=str(DEFAULT_ONNX))
    ap.add_argument("--cooldown", type=float, default=5.0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--ort", action="store_true", help=argparse.SUPPRESS)   # child process mode
    args = ap.parse_args()
    if args.ort:
        print(json.dumps(bench_onnxruntime(args.onnx, args.threads[0], args.runs, args.warmup)))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kind = platform.machine()
    name = Path(args.onnx).stem
    rows, header = [], None
    for t in args.threads:
        for haste in (None, args.haste):
            tag = f"device_{kind}_{name}_t{t}_{'dense' if haste is None else 'haste'}.json"
            r = bench_haste_edge(args.onnx, t, haste, args, out / tag)
            header = header or r["machine"]
            rows.append(row(f"haste-edge {'dense' if haste is None else 'HASTE ' + haste}", t, r))
            time.sleep(args.cooldown)
        child = subprocess.run([sys.executable, __file__, "--ort", "--onnx", args.onnx, "--threads", str(t),
                                "--runs", str(args.runs), "--warmup", str(args.warmup)],
                               check=True, capture_output=True, text=True)
        r = json.loads(child.stdout.strip().splitlines()[-1])
        rows.append(row(r["runtime"], t, r))
        time.sleep(args.cooldown)
    lines = [f"machine: {header['machine']}, {header['cpu']}, {header['cores']} cores, {header['system']}; "
             f"python {header['python']}, numpy {header['numpy']}, numba {header['numba']} "
             f"(threading layer {header['threading_layer']})",
             f"model {name}, batch 1, inputs: the bundled test images cycled; {args.runs} timed runs after "
             f"{args.warmup} warm-up runs; each runtime in a fresh process; `python benchmarks/bench_device.py "
             f"--runs {args.runs} --warmup {args.warmup} --threads {' '.join(map(str, args.threads))}`", "",
             "| runtime | threads | first inference s | mean ms | p50 ms | p90 ms | p99 ms | inferences/s | "
             "peak RSS MiB | executed MMAC | energy per inference |",
             "|---|---|---|---|---|---|---|---|---|---|---|", *rows]
    table = out / f"device_{kind}.md"
    table.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwrote {table}")


if __name__ == "__main__":
    main()
