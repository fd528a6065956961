"""Time haste_edge's Conv kernel against onnxruntime on single Conv layers (batch 1).

Layers are those of a Fashion-MNIST ResNet-18 (widths 32..256, 28x28 input) and of
EfficientNet-Lite0 (224x224 input: stem, depthwise 3x3/5x5, 1x1 pointwise). Each layer is timed
with 1 and 2 threads: numba.set_num_threads + threadpoolctl (OpenBLAS) for us,
intra_op_num_threads for onnxruntime. The fused activation is part of both sides (onnxruntime
fuses Conv+Relu/Clip itself). Reported time is the best of several repeats of a timed loop,
the figure least disturbed by other load on the machine.

    python benchmarks/bench_conv_kernels.py [--threads 1 2] [--repeat 7] [--only resnet|effnet] [--clock cpu]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numba
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # run from a checkout, uninstalled
from haste_edge.ops.conv import _get_plan, conv, conv_infer, conv_macs  # noqa: E402

# (name, C_in, H=W, C_out, k, stride, group, activation). Pads are "same" for odd k: k // 2.
RESNET = [
    ("stem 1->32 3x3", 1, 28, 32, 3, 1, 1, "Relu"),
    ("32->32 3x3 @28", 32, 28, 32, 3, 1, 1, "Relu"),
    ("32->64 3x3 s2", 32, 28, 64, 3, 2, 1, "Relu"),
    ("32->64 1x1 s2", 32, 28, 64, 1, 2, 1, ""),
    ("64->64 3x3 @14", 64, 14, 64, 3, 1, 1, "Relu"),
    ("64->128 3x3 s2", 64, 14, 128, 3, 2, 1, "Relu"),
    ("64->128 1x1 s2", 64, 14, 128, 1, 2, 1, ""),
    ("128->128 3x3 @7", 128, 7, 128, 3, 1, 1, "Relu"),
    ("128->256 3x3 s2", 128, 7, 256, 3, 2, 1, "Relu"),
    ("128->256 1x1 s2", 128, 7, 256, 1, 2, 1, ""),
    ("256->256 3x3 @4", 256, 4, 256, 3, 1, 1, "Relu"),
]
EFFNET = [
    ("stem 3->32 3x3 s2", 3, 224, 32, 3, 2, 1, "Clip"),
    ("dw 32 3x3 @112", 32, 112, 32, 3, 1, 32, "Clip"),
    ("pw 32->16 @112", 32, 112, 16, 1, 1, 1, ""),
    ("pw 16->96 @112", 16, 112, 96, 1, 1, 1, "Clip"),
    ("dw 96 3x3 s2 @112", 96, 112, 96, 3, 2, 96, "Clip"),
    ("pw 96->24 @56", 96, 56, 24, 1, 1, 1, ""),
    ("pw 24->144 @56", 24, 56, 144, 1, 1, 1, "Clip"),
    ("dw 144 3x3 @56", 144, 56, 144, 3, 1, 144, "Clip"),
    ("dw 144 5x5 s2 @56", 144, 56, 144, 5, 2, 144, "Clip"),
    ("pw 144->40 @28", 144, 28, 40, 1, 1, 1, ""),
    ("pw 40->240 @28", 40, 28, 240, 1, 1, 1, "Clip"),
    ("dw 240 5x5 @28", 240, 28, 240, 5, 1, 240, "Clip"),
    ("dw 240 3x3 s2 @28", 240, 28, 240, 3, 2, 240, "Clip"),
    ("pw 240->80 @14", 240, 14, 80, 1, 1, 1, ""),
    ("pw 80->480 @14", 80, 14, 480, 1, 1, 1, "Clip"),
    ("dw 480 3x3 @14", 480, 14, 480, 3, 1, 480, "Clip"),
    ("dw 480 5x5 @14", 480, 14, 480, 5, 1, 480, "Clip"),
    ("pw 480->112 @14", 480, 14, 112, 1, 1, 1, ""),
    ("pw 112->672 @14", 112, 14, 672, 1, 1, 1, "Clip"),
    ("dw 672 5x5 s2 @14", 672, 14, 672, 5, 2, 672, "Clip"),
    ("pw 672->192 @7", 672, 7, 192, 1, 1, 1, ""),
    ("pw 192->1152 @7", 192, 7, 1152, 1, 1, 1, "Clip"),
    ("dw 1152 5x5 @7", 1152, 7, 1152, 5, 1, 1152, "Clip"),
    ("pw 1152->320 @7", 1152, 7, 320, 1, 1, 1, ""),
    ("pw 320->1280 @7", 320, 7, 1280, 1, 1, 1, "Clip"),
]


def make_case(c_in, hw, c_out, k, stride, group, act, rng):
    p = k // 2
    attrs = dict(kernel_shape=[k, k], strides=[stride, stride], dilations=[1, 1], pads=[p, p, p, p],
                 group=group, activation=act, clip_min=0.0, clip_max=6.0)
    x = rng.standard_normal((1, c_in, hw, hw)).astype(np.float32)
    w = (rng.standard_normal((c_out, c_in // group, k, k)) / np.sqrt(c_in // group * k * k)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32)
    return attrs, x, w, b


def ort_model(attrs, x, w, b):
    """Single Conv (+ Relu/Clip) model; onnxruntime fuses the activation into its conv."""
    a = {k: attrs[k] for k in ("kernel_shape", "strides", "dilations", "pads", "group")}
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")]
    conv_out = "Y" if not attrs["activation"] else "T"
    nodes = [helper.make_node("Conv", ["X", "W", "B"], [conv_out], **a)]
    if attrs["activation"] == "Relu":
        nodes.append(helper.make_node("Relu", ["T"], ["Y"]))
    elif attrs["activation"] == "Clip":
        inits += [numpy_helper.from_array(np.float32(0.0), "lo"), numpy_helper.from_array(np.float32(6.0), "hi")]
        nodes.append(helper.make_node("Clip", ["T", "lo", "hi"], ["Y"]))
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("X", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnx may write a newer IR than the installed onnxruntime reads
    return model.SerializeToString()


def best_times(fns, repeat, clock, budget=0.03):
    """Best per-call seconds of each fn over `repeat` rounds; within a round the fns run back to
    back, so both sides of a comparison see the same background load. Each timed loop is sized
    to take about `budget` s."""
    numbers = []
    for fn in fns:
        fn()
        t0 = clock()
        fn()
        numbers.append(max(1, int(budget / max(clock() - t0, 1e-6))))
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for k, (fn, number) in enumerate(zip(fns, numbers)):
            t0 = clock()
            for _ in range(number):
                fn()
            best[k] = min(best[k], (clock() - t0) / number)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--only", choices=["resnet", "effnet"])
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu = CPU time of the calling thread: steadier on a loaded machine, "
                         "meaningful for --threads 1 only (every kernel then runs in that thread)")
    args = ap.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    rng = np.random.default_rng(0)
    suites = [("ResNet-18 (Fashion-MNIST, 28x28)", RESNET), ("EfficientNet-Lite0 (224x224)", EFFNET)]
    if args.only:
        suites = [s for s in suites if s[0].lower().startswith(args.only[:3])]

    cases = {}
    for _, layers in suites:
        for name, *spec in layers:
            attrs, x, w, b = make_case(*spec, rng)
            y = np.empty(conv_infer([x.shape, w.shape, b.shape], attrs)[0], np.float32)
            conv([x, w, b], attrs, [y])  # JIT warm-up (and compile on a cold cache)
            cases[name] = (attrs, x, w, b, y, ort_model(attrs, x, w, b))

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; numba {numba.__version__} threading layer: {numba.threading_layer()}, "
          f"onnxruntime {ort.__version__}, numpy {np.__version__}, onnx {onnx.__version__}; "
          f"clock {args.clock}, best of {args.repeat}")
    env = {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "NUMBA_THREADING_LAYER",
                                      "OPENBLAS_THREAD_TIMEOUT") if k in os.environ}
    if env:
        print("thread-pool environment:", env)
    for threads in args.threads:
        numba.set_num_threads(threads)
        with threadpool_limits(limits=threads):
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            for title, layers in suites:
                print(f"\n{title}, batch 1, threads={threads}")
                print(f"{'layer':<22}{'path':>14}{'ours ms':>10}{'ort ms':>10}{'ours/ort':>10}{'GMAC/s':>8}")
                tot_ours = tot_ort = 0.0
                for name, *_ in layers:
                    attrs, x, w, b, y, model = cases[name]
                    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
                    ref = sess.run(None, {"X": x})[0]
                    conv([x, w, b], attrs, [y])
                    assert np.allclose(y, ref, rtol=1e-3, atol=1e-3), name
                    t_ours, t_ort = best_times([lambda: conv([x, w, b], attrs, [y]),
                                                lambda: sess.run(None, {"X": x})], args.repeat, clock)
                    tot_ours += t_ours
                    tot_ort += t_ort
                    # the fast path conv() chose for this layer, and our dense MAC rate on it
                    path = _get_plan(attrs, x.shape, w.shape).path
                    macs = conv_macs([x.shape, w.shape], [y.shape], attrs)
                    print(f"{name:<22}{path:>14}{t_ours * 1e3:>10.3f}{t_ort * 1e3:>10.3f}{t_ours / t_ort:>10.2f}"
                          f"{macs / t_ours / 1e9:>8.1f}")
                print(f"{'sum of layers':<36}{tot_ours * 1e3:>10.3f}{tot_ort * 1e3:>10.3f}"
                      f"{tot_ours / tot_ort:>10.2f}")


if __name__ == "__main__":
    main()
