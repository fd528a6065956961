"""Every conv of a model alone, on its real input: haste-edge's conv paths against onnxruntime.

    python benchmarks/bench_layers.py [--model efficientnet_lite0|mobilenetv2_224|...] [--threads 1]
                                      [--repeats 50] [--flush]

Each Conv node is run on the input it gets in the model (a bundled image or a photo through the
dense model) by: the microkernel path (what runs by default on one thread; depthwise convs take
their own kernels in both columns), the im2row/im2col + OpenBLAS path, and onnxruntime on a
one-node ONNX model of the same conv (with its fused Relu/Clip as a second node, which
onnxruntime fuses too; NCHW in and out, so not the layout it keeps inside a whole graph). Times are
the best of --repeats calls each (robust to a busy machine), the three interleaved per round.
Columns: MACs, ms, GMAC/s, the ratio to onnxruntime, the layout and tile shape the microkernel
path chose. Writes benchmarks/results/<name>.md and .json.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from common import ROOT, header, ort_session, write_results

import haste_edge
from haste_edge import microkernel, runtime
from haste_edge.ops import conv as conv_mod
from haste_edge.preprocess import load_batch


def conv_inputs(model, x):
    """[(node name, x, w, b, attrs)] of every Conv, x its real input."""
    feeds = runtime.check_feeds(model.graph, {model.input_names[0]: x})
    plan = model.plan({k: v.shape for k, v in feeds.items()}, blocked=False)
    caps = []

    def capture(st, args, counters):
        if st.op == "Conv":
            caps.append((st.node_name, np.array(args[0]), args[1], args[2] if len(args) > 2 else None, st.attrs))
        return runtime._run_step(st, args, counters)

    runtime.execute(plan, feeds, run_step=capture)
    return caps


def onnx_conv(path, x, w, b, attrs):
    """A one-node ONNX model of the conv (+ its fused activation)."""
    inits = [numpy_helper.from_array(w, "W")] + ([numpy_helper.from_array(b, "B")] if b is not None else [])
    act = attrs.get("activation") or ""
    conv_out = "y" if not act else "c"
    nodes = [helper.make_node("Conv", ["x", "W"] + (["B"] if b is not None else []), [conv_out],
                              kernel_shape=attrs["kernel_shape"], strides=attrs["strides"],
                              dilations=attrs["dilations"], pads=attrs["pads"], group=attrs["group"])]
    if act == "Relu":
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    elif act == "Clip":
        lo, hi = attrs.get("clip_min"), attrs.get("clip_max")
        inits += [numpy_helper.from_array(np.array(-np.inf if lo is None else lo, np.float32), "lo"),
                  numpy_helper.from_array(np.array(np.inf if hi is None else hi, np.float32), "hi")]
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
    g = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


_FLUSH = None      # --flush: a buffer larger than the last-level cache, rewritten before each call


def best(fn, repeats):
    t = np.inf
    for _ in range(repeats):
        if _FLUSH is not None:
            np.add(_FLUSH, 1.0, out=_FLUSH)
        t0 = time.perf_counter()
        fn()
        t = min(t, time.perf_counter() - t0)
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fashion_resnet18", help="fashion_resnet18 or efficientnet_lite0")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--name", default=None)
    ap.add_argument("--flush", action="store_true",
                    help="rewrite a 64 MiB buffer before every timed call: weights, input and output come from "
                         "memory, as in a whole model where other layers evicted them")
    args = ap.parse_args()
    global _FLUSH
    if args.flush:
        _FLUSH = np.zeros(16 << 20, np.float32)
    haste_edge.set_threads(args.threads)
    if args.model == "fashion_resnet18":
        model = haste_edge.load()
        x = load_batch(haste_edge.sample_images()[:1], model.meta["input"])
    else:
        from model_zoo import foolbox_images, get_model
        model = haste_edge.load(get_model(args.model))
        x = load_batch([foolbox_images()[0][0]], model.meta["input"])
    tmp = ROOT / "benchmarks" / "results" / ".layer.onnx"
    rows = []
    for name, xi, w, b, attrs in conv_inputs(model, x):
        kernel = conv_mod.conv
        a_new, a_old = dict(attrs), dict(attrs)            # one plan each (plans are keyed by attrs)
        conv_mod._DIRECT = True                              # plans pick their path when made
        y = kernel([xi, w, b], a_new)[0]
        conv_mod._DIRECT = conv_mod._AUTO = False
        y_old = kernel([xi, w, b], a_old)[0]
        onnx_conv(tmp, xi, w, b, attrs)
        sess = ort_session(tmp, args.threads)
        y_ort = sess.run(None, {"x": xi})[0]
        err = float(np.abs(y - y_ort).max() / max(np.abs(y_ort).max(), 1e-12))
        outs, outs_old = [np.empty_like(y)], [np.empty_like(y)]
        times = {"ours": np.inf, "blas": np.inf, "ort": np.inf}
        for _ in range(3):                                   # interleaved rounds
            times["ours"] = min(times["ours"], best(lambda: kernel([xi, w, b], a_new, outs), args.repeats))
            times["blas"] = min(times["blas"], best(lambda: kernel([xi, w, b], a_old, outs_old), args.repeats))
            times["ort"] = min(times["ort"], best(lambda: sess.run(None, {"x": xi}), args.repeats))
        plan = conv_mod._get_plan(a_new, xi.shape, w.shape)
        d = getattr(plan, "micro", None)
        if getattr(d, "lanes", False):
            how = "lanes {}x{}".format(*microkernel.lanes_dims_py(d.variant)) + (" pointwise" if d.pointwise else "")
        else:
            layout = "pointwise" if getattr(d, "pointwise", False) else "exact" if getattr(d, "exact", False) else "wide"
            how = (f"{layout} {microkernel.mr_of(d.variant)}x{microkernel.nr_of(d.variant)}"
                   if hasattr(d, "variant") else plan.path)
        macs = conv_mod.conv_macs([xi.shape, w.shape], [y.shape], attrs)
        rows.append({"layer": name, "x": list(xi.shape), "w": list(w.shape), "macs": macs, "how": how,
                     "ours_ms": times["ours"] * 1e3, "blas_ms": times["blas"] * 1e3, "ort_ms": times["ort"] * 1e3,
                     "err": err})
        r = rows[-1]
        print(f"{name}: {r['ours_ms']:.3f} / {r['blas_ms']:.3f} / ort {r['ort_ms']:.3f} ms ({how})", flush=True)
    tmp.unlink(missing_ok=True)
    tot = {k: sum(r[k] for r in rows) for k in ("ours_ms", "blas_ms", "ort_ms", "macs")}
    lines = [f"# Convs of {args.model} alone on their real inputs, {args.threads} thread(s), best of "
             f"{args.repeats} x 3 rounds" + (", caches flushed before every call" if args.flush else ""), "", header() + "; " + microkernel.describe(), "",
             "| layer | input | weights | MMAC | microkernel ms | GMAC/s | im2col+BLAS ms | onnxruntime ms | GMAC/s | "
             "microkernel / onnxruntime | layout, tile | max rel. diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['x']} | {r['w']} | {r['macs'] / 1e6:.2f} | {r['ours_ms']:.3f} | "
                     f"{r['macs'] / r['ours_ms'] / 1e6:.1f} | {r['blas_ms']:.3f} | {r['ort_ms']:.3f} | "
                     f"{r['macs'] / r['ort_ms'] / 1e6:.1f} | {r['ours_ms'] / r['ort_ms']:.2f} | {r['how']} | {r['err']:.1e} |")
    lines.append(f"| all convs | | | {tot['macs'] / 1e6:.1f} | {tot['ours_ms']:.3f} | {tot['macs'] / tot['ours_ms'] / 1e6:.1f} | "
                 f"{tot['blas_ms']:.3f} | {tot['ort_ms']:.3f} | {tot['macs'] / tot['ort_ms'] / 1e6:.1f} | "
                 f"{tot['ours_ms'] / tot['ort_ms']:.2f} | | |")
    name = args.name or f"layers_{args.model}_t{args.threads}" + ("_flushed" if args.flush else "")
    write_results(name, lines, {"threads": args.threads, "flush": args.flush, "rows": rows})


if __name__ == "__main__":
    main()
