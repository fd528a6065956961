"""Do two kinds of CPU merge the same channels? HASTE's buckets on real test images, compared.

    python benchmarks/haste_cross_cpu.py record OUT.npz [--images 500] [--rtol 1e-4 0]
    bash tools/x86/as_avx2.sh python benchmarks/haste_cross_cpu.py record OUT_AVX2.npz
    python benchmarks/haste_cross_cpu.py compare A.npz B.npz [--name haste_cross_cpu]

`record` runs the first --images Fashion-MNIST test images (batch 100) through the bundled model at
the settings of tests/test_aarch64.py, for each hashing tolerance given (HASH_RTOL; 0 is the plain
"> 0" test), and stores every HASTE conv's per-image bucket sum. `compare` counts, per setting and
tolerance, the images whose buckets differ anywhere between the two recordings, and the first
layer where they do (a difference there changes everything after it). Run `record` on each machine
(or under tools/x86/as_avx2.sh for AVX2 kernels on an AVX-512 host), then `compare`.
"""
from __future__ import annotations

import argparse
import platform

import numpy as np

from common import header, write_results

import haste_edge
import haste_edge.haste.kernel as kernel
from haste_edge.datasets import load_fashion_mnist
from haste_edge.preprocess import normalise

SETTINGS = ("L=10,P=2,seed=0", "L=8,P=4,seed=1")


def record(args):
    from threadpoolctl import threadpool_info
    model = haste_edge.load()
    images, _ = load_fashion_mnist("test")
    x = np.stack([normalise(im.astype(np.float32), model.meta["input"]) for im in images[:args.images]])
    out = {}
    for rtol in args.rtol:
        kernel.HASH_RTOL = rtol
        for spec in SETTINGS:
            model.set_haste(spec)
            parts = []
            for i in range(0, len(x), 100):
                model.run({model.input_names[0]: x[i:i + 100]})
                parts.append(np.stack([r.counters["buckets_sum"] for r in model.last_stats().layers
                                        if r.method == "haste"]))
            out[f"{spec}|{rtol:g}"] = np.concatenate(parts, axis=1)
    blas = ",".join(str(i.get("architecture")) for i in threadpool_info() if i["user_api"] == "blas")
    out["machine"] = np.array(f"{platform.machine()}, BLAS kernels {blas}, Numba CPU "
                              f"{__import__('numba').config.CPU_NAME or 'host'}")
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out}: {out['machine']}")


def compare(args):
    a, b = np.load(args.a), np.load(args.b)
    lines = [f"# HASTE buckets on two CPUs: {a['machine']} against {b['machine']}", "", header(), "",
             "| setting | HASH_RTOL | images | images with any bucket sum different | first differing layer (index: images) |",
             "|---|---|---|---|---|"]
    rows = []
    for key in [k for k in a.files if k != "machine"]:
        spec, rtol = key.split("|")
        diff = a[key] != b[key]                        # (layers, images)
        bad = diff.any(axis=0)
        first = np.bincount(diff[:, bad].argmax(axis=0), minlength=diff.shape[0]) if bad.any() else []
        where = ", ".join(f"{i}: {n}" for i, n in enumerate(first) if n)
        rows.append({"setting": spec, "rtol": float(rtol), "images": int(diff.shape[1]), "differ": int(bad.sum()),
                     "first_layer": [int(n) for n in first]})
        lines.append(f"| {spec} | {rtol} | {diff.shape[1]} | {int(bad.sum())} | {where or '-'} |")
    write_results(args.name, lines, {"a": str(a["machine"]), "b": str(b["machine"]), "rows": rows})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("out")
    r.add_argument("--images", type=int, default=500)
    r.add_argument("--rtol", type=float, nargs="+", default=[kernel.HASH_RTOL, 0.0])
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--name", default="haste_cross_cpu")
    args = ap.parse_args()
    record(args) if args.cmd == "record" else compare(args)


if __name__ == "__main__":
    main()
