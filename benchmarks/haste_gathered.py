"""HASTE's reduced conv on the gathered microkernel tiles against the plain loop it replaced,
whole bundled model, in one process.

    python benchmarks/haste_gathered.py [--points "L=12,P=4" ...] [--threads 1 2] [--images 32] [--runs 7]

For each point, the same --images training images run at batch 1 in turn through the dense engine,
HASTE with haste.kernel.GATHERED on, the same with POOL_PANELS off (a small map's panels on the
calling thread), and HASTE with GATHERED off, interleaved over --runs rounds; the figure is the
median time per image. Both HASTE models compute the same buckets and outputs up to
float rounding (tests/test_haste.py). Writes benchmarks/results/<name>_<arch>.md and .json.
"""
from __future__ import annotations

import argparse
import platform

import numpy as np

from common import header, interleaved, write_results

import haste_edge
from haste_edge.datasets import load_fashion_mnist
from haste_edge.haste import kernel
from haste_edge.haste.method import Haste
from haste_edge.preprocess import normalise


def haste_model(spec: str, gathered: bool):
    """A model with HASTE whose layers were prepared with the gathered tiles on or off."""
    kernel.GATHERED = gathered
    try:
        m = haste_edge.load()
        m.compress(Haste(spec))
        m.run({m.input_names[0]: np.zeros(m.input_shape(1), np.float32)})   # layers prepared now
    finally:
        kernel.GATHERED = True
    return m


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", nargs="+", default=["L=4,P=4,start=15", "L=11,P=4", "L=13,P=4"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--name", default="haste_gathered")
    args = ap.parse_args()
    dense = haste_edge.load()
    images, _ = load_fashion_mnist("train")
    xs = [normalise(im.astype(np.float32), dense.meta["input"])[None] for im in images[-args.images:]]
    name = dense.input_names[0]

    def over_images(m, pool_panels=True):
        def run():
            kernel.POOL_PANELS = pool_panels
            try:
                for x in xs:
                    m.run({name: x})
            finally:
                kernel.POOL_PANELS = True
        return run

    rows = []
    for threads in args.threads:
        haste_edge.set_threads(threads)
        for spec in args.points:
            gathered = haste_model(spec, True)
            t = interleaved({"dense": over_images(dense), "gathered": over_images(gathered),
                             "serial_panels": over_images(gathered, False),
                             "loop": over_images(haste_model(spec, False))}, args.runs)
            t = {k: v / len(xs) for k, v in t.items()}
            rows.append({"threads": threads, "point": spec, **{f"{k}_s": v for k, v in t.items()}})
            print(rows[-1], flush=True)
    lines = [f"# HASTE reduced conv: gathered microkernel tiles vs the plain loop, bundled model, {args.images} "
             f"training images, batch 1, median of {args.runs} interleaved rounds", "", header(), "",
             "| threads | point | dense ms | HASTE gathered ms | panels on one thread ms | HASTE loop ms "
             "| dense / gathered | dense / loop | loop / gathered | one-thread panels / gathered |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d, g, sp, lp = r["dense_s"], r["gathered_s"], r["serial_panels_s"], r["loop_s"]
        lines.append(f"| {r['threads']} | {r['point']} | {d * 1e3:.3f} | {g * 1e3:.3f} | {sp * 1e3:.3f} | "
                     f"{lp * 1e3:.3f} | {d / g:.2f}x | {d / lp:.2f}x | {lp / g:.2f}x | {sp / g:.2f}x |")
    write_results(f"{args.name}_{platform.machine()}", lines, {"rows": rows})


if __name__ == "__main__":
    main()
