"""PROM's layers replayed by their compiled calls against stepped through, with the fp32 model.

    python benchmarks/prom_replay.py [--runs 400] [--threads 1 2] [--name NAME]

Three models in one process, interleaved (each call after GAP_S idle): the bundled PROM model as
it runs (its layers in the plan's replay, runtime.py), the same with its layers' replay turned off
(every PROM step through Python each run, as before layers could be replayed), and the fp32 model;
where the CPU has int8 dot products (prom/dot.py), also the PROM model on the additions kernel.
Writes benchmarks/results/<NAME>.md and .json (default prom_replay_<arch>).
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from common import GAP_S, header, write_results

import haste_edge
from haste_edge.prom import dot


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=400)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    lines = ["# PROM layers replayed against stepped through, bundled fashion_mobilenetv2_prom, batch 1", "",
             header(), "", f"median of {args.runs} interleaved calls, each after {GAP_S * 1e3:.0f} ms idle", "",
             "pointwise convs on int8 dot products: " + {"vnni": "AVX-512 VNNI", "avx2": "AVX2 (ternary weights)"}.get(
                 dot.KIND, "no") + (f" (code for {os.environ['NUMBA_CPU_NAME']})" if os.environ.get("NUMBA_CPU_NAME") else ""),
             "",
             "| threads | PROM replayed ms | PROM stepped ms | fp32 ms | replayed / stepped | replayed / fp32 "
             "| PROM, additions kernel ms | replayed / additions |",
             "|---|---|---|---|---|---|---|---|"]
    doc = []
    for th in args.threads:
        haste_edge.set_threads(th)
        replayed, stepped = haste_edge.load("fashion_mobilenetv2_prom"), haste_edge.load("fashion_mobilenetv2_prom")
        fp32 = haste_edge.load("fashion_mobilenetv2")
        x = np.random.default_rng(0).random(replayed.input_shape(1), dtype=np.float32)
        stepped.run({stepped.input_names[0]: x})
        for st in stepped.last_plan.steps:          # no layer replays: recorded again without them
            if st.layer is not None:
                st.layer.replay = None
        stepped.last_plan.replay = None
        models = {"replayed": replayed, "stepped": stepped, "fp32": fp32}
        if dot.DOT:                                 # layers prepared while it is off keep the additions
            dot.DOT = False
            models["additions"] = haste_edge.load("fashion_mobilenetv2_prom")
            models["additions"].run({models["additions"].input_names[0]: x})
            dot.DOT = True
        outs = {k: m.run({m.input_names[0]: x})[m.output_names[0]] for k, m in models.items()}
        assert np.array_equal(outs["replayed"], outs["stepped"])
        assert np.array_equal(outs["replayed"], outs.get("additions", outs["replayed"]))
        times = {k: [] for k in models}
        for _ in range(args.runs):
            for k, m in models.items():
                time.sleep(GAP_S)
                t0 = time.perf_counter()
                m.run({m.input_names[0]: x})
                times[k].append(time.perf_counter() - t0)
        med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
        doc.append({"threads": th, **med})
        lines.append(f"| {th} | {med['replayed']:.3f} | {med['stepped']:.3f} | {med['fp32']:.3f} | "
                     f"{med['replayed'] / med['stepped']:.2f} | {med['replayed'] / med['fp32']:.2f} | "
                     + (f"{med['additions']:.3f} | {med['replayed'] / med['additions']:.2f} |" if "additions" in med
                        else "- | - |"))
    write_results(args.name or f"prom_replay_{platform.machine()}", lines, {"runs": args.runs, "rows": doc})


if __name__ == "__main__":
    main()
