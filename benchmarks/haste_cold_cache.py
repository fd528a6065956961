"""How much of a HASTE conv's time inside the model is caches: each compressed conv of an operating
point called alone in a loop, on its real input, with 0, 4, 16 and 64 MB read between calls.

    python benchmarks/haste_cold_cache.py [--point "L=8,P=4,start=10"] [--images 2] [--calls 25]

The convs' inputs are captured from the model running real Fashion-MNIST test images. Reading an
array of the given size between calls pushes the conv's weights, scratch and input out of the
caches that size covers (4 MB: this machine's L2 of both cores; 16-64 MB: much of the L3 share
a process gets). 1 thread, median ms per call over --calls calls, per conv and image.
Writes benchmarks/results/haste_cold_cache.md and .json.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from common import header, write_results

import haste_edge
from haste_edge.datasets import load_fashion_mnist
from haste_edge.haste import haste_conv
from haste_edge.preprocess import normalise
from haste_edge.runtime import _run_step, check_feeds, execute

EVICT_MB = (0, 4, 16, 64)


def capture(model, xs) -> list[tuple]:
    """(node name, input copy, W, bias, attrs, setting) of every HASTE conv call on the inputs xs."""
    name, calls = model.input_names[0], []

    def hook(st, args, counters):
        if st.layer is not None:
            calls.append((st.node_name, args[0].copy(), args[1], args[2] if len(args) > 2 else None,
                          st.attrs, st.layer.setting))
        return _run_step(st, args, counters)

    for x in xs:
        feeds = check_feeds(model.graph, {name: x})
        execute(model.plan({k: v.shape for k, v in feeds.items()}, blocked=False), feeds, run_step=hook)
    return calls


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--point", default="L=8,P=4,start=10")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--calls", type=int, default=25)
    args = ap.parse_args()

    haste_edge.set_threads(1)
    model = haste_edge.load()
    model.set_haste(args.point)
    images, _ = load_fashion_mnist("test")
    xs = [normalise(im.astype(np.float32), model.meta["input"])[None] for im in images[:args.images]]
    calls = capture(model, xs)
    times = {}                                            # conv -> {MB: [median ms per image]}
    for mb in EVICT_MB:
        evict = np.ones(max(1, mb * 2**20 // 4), dtype=np.float32)
        for layer, x, W, b, attrs, setting in calls:
            haste_conv(x, W, b, attrs, setting)           # compiled, set-up cached
            ts = []
            for _ in range(args.calls):
                if mb:
                    evict.sum()
                t0 = time.perf_counter()
                haste_conv(x, W, b, attrs, setting)
                ts.append(time.perf_counter() - t0)
            times.setdefault(layer, {}).setdefault(mb, []).append(float(np.median(ts)) * 1e3)
    rows = [{"conv": layer, **{f"{mb}_mb_ms": float(np.mean(v)) for mb, v in per.items()}}
            for layer, per in times.items()]
    lines = [f"# HASTE conv time alone, with data read between calls: {args.point}, {args.images} test images, "
             f"1 thread, median of {args.calls} calls", "", header(), "",
             "| conv | " + " | ".join(f"{mb} MB read ms" for mb in EVICT_MB) + " |",
             "|---|" + "---|" * len(EVICT_MB)]
    for r in rows:
        lines.append(f"| {r['conv']} | " + " | ".join(f"{r[f'{mb}_mb_ms']:.3f}" for mb in EVICT_MB) + " |")
    write_results("haste_cold_cache", lines, {"point": args.point, "rows": rows})


if __name__ == "__main__":
    main()
