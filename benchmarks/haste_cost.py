"""HASTE's cost model (haste_edge/haste/cost.py) checked against measurement, per conv of the
bundled ResNet on real images: predicted and measured HASTE time, dense time, their ratio, the
kept fraction and the break-even kept fraction under which HASTE would pay.

    python benchmarks/haste_cost.py [--spec fast] [--images 8] [--name haste_cost]

The rates are calibrated in this process on synthetic layers (cost.calibrate: no data set, no
bundled-model layer), 1 thread; the measured figures are each conv alone on its real input (best
of 7, process time), averaged over --images training images (the input changes the buckets).
Writes benchmarks/results/<name>_<arch>.md and .json.
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from common import header, write_results

import haste_edge
from haste_edge.datasets import load_fashion_mnist
from haste_edge.haste import cost
from haste_edge.haste.method import Haste, HasteLayer
from haste_edge.preprocess import normalise
from haste_edge.runtime import _run_step, check_feeds, execute


def conv_inputs(model, x) -> dict:
    """{conv name: (input, W, bias, attrs, setting)} of the model's HASTE convs on input x."""
    got = {}

    def grab(st, args, counters):
        if isinstance(st.layer, HasteLayer):
            got[st.node_name] = (np.array(args[0]), args[1], args[2] if len(args) > 2 else None,
                                 {k: v for k, v in st.attrs.items() if not k.startswith("residual")},
                                 st.layer.setting)
        return _run_step(st, args, counters)

    feeds = check_feeds(model.graph, {model.input_names[0]: x})
    plan = model.plan({k: v.shape for k, v in feeds.items()})
    execute(plan, feeds, run_step=grab)
    return got


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default="fast")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--name", default="haste_cost")
    args = ap.parse_args()
    haste_edge.set_threads(1)
    rates, _ = cost.calibrate(clock=time.process_time)
    model = haste_edge.load()
    model.compress(Haste(args.spec))
    images, _ = load_fashion_mnist("train")
    rows = {}
    for im in images[-args.images:]:
        x = normalise(im.astype(np.float32), model.meta["input"])[None]
        for name, (xi, W, b, attrs, setting) in conv_inputs(model, x).items():
            m = cost.measure_layer(xi, W, b, attrs, setting, clock=time.process_time)
            h, d = cost.predict(rates, m["shape"], setting, m["kept"])
            r = rows.setdefault(name, {"haste": [], "dense": [], "kept": [], "pred_haste": [], "pred_dense": [],
                                       "breakeven": cost.kept_breakeven(rates, m["shape"], setting),
                                       "gathered": cost.gathered(m["shape"], setting)})
            for k, v in (("haste", m["phases"]["total"]), ("dense", m["dense"]), ("kept", m["kept"]),
                         ("pred_haste", h), ("pred_dense", d)):
                r[k].append(v)
    lines = [f"# HASTE cost model vs measurement: bundled ResNet, --haste {args.spec}, {args.images} training images, "
             "1 thread", "", header(), "", f"rates (s per count, calibrated on synthetic layers): {rates}", "",
             "| conv | path | kept | break-even kept | HASTE ms measured | predicted | dense ms measured | predicted "
             "| HASTE/dense measured | predicted |", "|---|---|---|---|---|---|---|---|---|---|"]
    out = []
    for name, r in rows.items():
        m = {k: float(np.mean(v)) for k, v in r.items() if isinstance(v, list)}
        out.append({"conv": name, **m, "breakeven": r["breakeven"], "gathered": r["gathered"]})
        lines.append(f"| {name} | {'gathered' if r['gathered'] else 'loop'} | {m['kept']:.2f} | {r['breakeven']:.2f} | "
                     f"{m['haste'] * 1e3:.3f} | {m['pred_haste'] * 1e3:.3f} | {m['dense'] * 1e3:.3f} | "
                     f"{m['pred_dense'] * 1e3:.3f} | {m['haste'] / m['dense']:.2f} | {m['pred_haste'] / m['pred_dense']:.2f} |")
    tot = {k: sum(o[k] for o in out) for k in ("haste", "dense", "pred_haste", "pred_dense")}
    lines.append(f"| all | | {min(o['kept'] for o in out):.2f} (min) | | {tot['haste'] * 1e3:.3f} | "
                 f"{tot['pred_haste'] * 1e3:.3f} | {tot['dense'] * 1e3:.3f} | {tot['pred_dense'] * 1e3:.3f} | "
                 f"{tot['haste'] / tot['dense']:.2f} | {tot['pred_haste'] / tot['pred_dense']:.2f} |")
    err = [abs(o["pred_haste"] / o["haste"] - 1) for o in out] + [abs(o["pred_dense"] / o["dense"] - 1) for o in out]
    lines += ["", f"prediction error per conv: median {np.median(err):.0%}, max {max(err):.0%}; "
              f"convs where HASTE pays (measured < 0.97 dense): {sum(o['haste'] < 0.97 * o['dense'] for o in out)}, "
              f"predicted: {sum(o['pred_haste'] < 0.97 * o['pred_dense'] for o in out)}"]
    write_results(f"{args.name}_{platform.machine()}", lines, {"rates": vars(rates), "rows": out})


if __name__ == "__main__":
    main()
