"""Every lanes tile of the microkernel on pointwise products of the shapes mobile nets have, one thread.

    python benchmarks/bench_lanes_tiles.py [--repeats 30]

A blocked input of K channels and P pixels times K x N weights, blocked output, as BlockedConv
runs a pointwise conv (microkernel.gemm_lanes, tiles reading pixels VL apart). Per tile: the
median time and the rate over the padded work (channels padded to the tile's NR), which is what
microkernel.choose_lanes weighs (LANES_WORK: a tile's cost per padded multiply-add). Writes
benchmarks/results/lanes_tiles_<arch>.md and .json.
"""
from __future__ import annotations

import argparse
import platform

import numpy as np

from bench_winograd import median_time
from common import header, write_results

from haste_edge import microkernel as mk

VL = mk.DWB_VL
# (K, N, pixels): EfficientNet-Lite0's and MobileNetV2's pointwise convs, and large-K products
SHAPES = [(32, 16, 12544), (24, 144, 3136), (144, 24, 3136), (240, 40, 784), (480, 80, 196),
          (576, 32, 196), (1152, 64, 196)]


def timed(variant, k, n, pixels, repeats, rng):
    mr, nr = mk.lanes_dims_py(variant)
    a = rng.standard_normal(mk.DWB_VL * -(-k // VL) * pixels).astype(np.float32)
    c = np.arange(k)
    aoffs = ((c // VL) * pixels * VL + c % VL).astype(np.int64)
    starts = (np.arange(pixels // mr) * mr * VL).astype(np.int64)
    panels = mk.pack_lanes(rng.standard_normal((n, k)).astype(np.float32), nr)
    p_starts = np.arange(panels.shape[0], dtype=np.int64) * nr
    out = np.zeros(panels.shape[0] * nr * pixels, np.float32)
    bias = np.zeros(panels.shape[0] * nr, np.float32)

    def call():
        mk.gemm_lanes(variant + mk.N_LANES, a, aoffs, starts, panels, out, starts, VL, pixels * VL,
                      p_starts // VL * pixels * VL, p_starts, bias, 0.0, 6.0, False, mk.LANES_PREFETCH_K)
    t = median_time(call, repeats)
    return t, pixels * k * panels.shape[0] * nr / t / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    names = ["{}x{}".format(*mk.lanes_dims_py(v)) for v in range(mk.N_LANES)]
    lines = ["# Lanes tiles on pointwise products (blocked in and out), 1 thread, median of "
             f"{args.repeats}", "", header(), "",
             "us per product (GMAC/s over the padded work); * = microkernel.choose_lanes' pick", "",
             "| K | N | pixels | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    rows = []
    for k, n, pixels in SHAPES:
        pick = mk.choose_lanes(pixels, n, divides=True)
        cells, row = [], {"k": k, "n": n, "pixels": pixels, "pick": names[pick], "us": {}}
        for v in range(mk.N_LANES):
            if pixels % mk.LANES[v][0]:
                cells.append("-")
                continue
            t, rate = timed(v, k, n, pixels, args.repeats, rng)
            row["us"][names[v]] = t * 1e6
            cells.append(f"{t * 1e6:.0f} ({rate:.0f}){' *' if v == pick else ''}")
        rows.append(row)
        lines.append(f"| {k} | {n} | {pixels} | " + " | ".join(cells) + " |")
    write_results(f"lanes_tiles_{platform.machine()}", lines, {"rows": rows})


if __name__ == "__main__":
    main()
