"""Every tile shape of the microkernel on every distinct group-1 conv of a model, one thread.

    python benchmarks/bench_tiles.py [--models fashion_resnet18 efficientnet_lite0] [--repeats 20]

Each conv (on its real input) runs through the microkernel path (conv_direct) once per tile shape,
best of --repeats calls x 3 rounds; the table marks the shape microkernel.choose_variant picks.
All shapes give bit-identical outputs (same k order, fused multiply-adds), asserted here.
Writes benchmarks/results/tile_choice_<arch>.md and .json.
"""
from __future__ import annotations

import argparse
import platform

import numpy as np

from bench_layers import best, conv_inputs
from common import header, write_results

import haste_edge
from haste_edge import microkernel as mk
from haste_edge.ops import conv as conv_mod
from haste_edge.ops import conv_direct
from haste_edge.preprocess import load_batch


def model_and_input(name):
    if name == "fashion_resnet18":
        model = haste_edge.load()
        return model, load_batch(haste_edge.sample_images()[:1], model.meta["input"])
    from model_zoo import foolbox_images, get_model
    model = haste_edge.load(get_model(name))
    return model, load_batch([foolbox_images()[0][0]], model.meta["input"])


def with_variant(w, plan, v):
    """A DirectConv whose tile shape is forced to v."""
    chosen = mk.choose_variant
    conv_direct.mk.choose_variant = lambda rows, cols: v
    try:
        return conv_direct.DirectConv(w, plan)
    finally:
        conv_direct.mk.choose_variant = chosen


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["fashion_resnet18", "efficientnet_lite0"])
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    haste_edge.set_threads(1)
    names = [f"{mk.mr_of(v)}x{mk.nr_of(v)}" for v in range(len(mk.SHAPES))]
    lines = [f"# Microkernel tile shapes per conv, 1 thread, best of {args.repeats} x 3 rounds (ms; * = chosen)", "",
             header() + "; " + mk.describe(), "",
             "| model | layer | input | C_out | kernel | GEMM columns | " + " | ".join(names) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(names)]
    rows = []
    for model_name in args.models:
        model, x = model_and_input(model_name)
        seen = set()
        for name, xi, w, b, attrs in conv_inputs(model, x):
            key = (xi.shape, w.shape, tuple(attrs["strides"]), tuple(attrs["pads"]))
            if attrs["group"] != 1 or key in seen:
                continue
            seen.add(key)
            a = dict(attrs)
            plan = conv_mod._get_plan(a, xi.shape, w.shape)
            bias = plan.zero_bias if b is None else b
            times, outs = [], []
            for v in range(len(mk.SHAPES)):
                d = with_variant(w, plan, v)
                y = np.empty(plan.out_shape, np.float32)
                d.run(xi, y, bias, plan)
                outs.append(y)
                times.append(min(best(lambda: d.run(xi, y, bias, plan), args.repeats) for _ in range(3)) * 1e3)
            assert all(np.array_equal(o, outs[0]) for o in outs), name
            cols = conv_direct.DirectConv(w, plan).length
            chosen = mk.choose_variant(w.shape[0], cols)
            cells = [("*" if v == chosen else "") + f"{t:.3f}" for v, t in enumerate(times)]
            rows.append({"model": model_name, "layer": name, "x": list(xi.shape), "c_out": w.shape[0],
                         "kernel": attrs["kernel_shape"], "cols": cols, "ms": times, "chosen": chosen})
            lines.append(f"| {model_name} | {name} | {list(xi.shape[1:])} | {w.shape[0]} | "
                         f"{attrs['kernel_shape'][0]}x{attrs['kernel_shape'][1]} s{attrs['strides'][0]} | {cols} | "
                         + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    best_sum = sum(min(r["ms"]) for r in rows)
    chosen_sum = sum(r["ms"][r["chosen"]] for r in rows)
    lines += ["", f"Sum over these convs: chosen shapes {chosen_sum:.3f} ms, best shape per conv {best_sum:.3f} ms."]
    write_results(f"tile_choice_{platform.machine()}", lines, {"shapes": names, "rows": rows})


if __name__ == "__main__":
    main()
