"""The conv rule against an alternative, side by side with onnxruntime, in one process.

    python benchmarks/bench_conv_rule.py [--against blas|direct|pointwise-blas|least-padding|no-lanes|lanes-small|no-serial-small|no-winograd4|no-residual-fusion|depthwise-per-plane|gemm-blas|pointwise-small-blas|no-lanes-prefetch|winograd4-64|winograd4-128|
                                                no-winograd4-blocked|winograd4-blocked-784|
                                                blocked-panels-512k|no-winograd4-fused|winograd4-fused-pool|
                                                winograd4-fused-calling|winograd4-fused-dealt|three-lanes-tiles|gemm-rows-serial|serial-phases|
                                                micro-serial-32|micro-serial-0|gather-by-table]
                                         [--models fashion_resnet18 efficientnet_lite0] [--threads 1 2]

Two copies of each model: one planned under the alternative, one under the default rule
(ops/conv.py); each keeps the paths and tiles it was planned with. Alternatives:
  blas            every conv on OpenBLAS (HASTE_EDGE_CONV=blas)
  direct          every non-depthwise conv on the microkernel, at any thread count
  pointwise-blas  the default, but every pointwise conv on OpenBLAS
  least-padding   the default, but tile shapes chosen by least padding alone
  no-lanes        the default, but no conv in the lanes layout (conv_direct.py)
  lanes-small     the default, but every small-map and pointwise conv the lanes layout can take in it
  no-serial-small the default, but on more threads no conv takes the one-thread rule (all on OpenBLAS)
  no-winograd4    the default, but no conv on Winograd F(4x4,3x3)
  no-residual-fusion  the default, but Conv -> Add [-> Relu] as separate steps (runtime.py)
  depthwise-per-plane the default, but depthwise convs per plane, not channel-blocked
  gemm-blas       the default, but small-batch Gemms on OpenBLAS, not the row loops (ops/gemm.py)
  pointwise-small-blas  the default, but on more threads small pointwise convs on OpenBLAS's threads
  no-lanes-prefetch  the default, but the lanes tiles prefetch no weights (microkernel.LANES_PREFETCH_K)
  no-winograd4-blocked  the default, but no conv on Winograd F(4x4) between blocked tensors
  winograd4-blocked-784  the default, but Winograd F(4x4) between blocked tensors from 784 pixels
  blocked-panels-512k  the default, but no conv keeps the blocked layout with a weight panel over 512 KiB
  no-winograd4-fused  the default, but blocked Winograd's three stages never fused per chunk of blocks
  winograd4-fused-pool  the default, but on more threads blocked Winograd's stages apart, on the pool
  winograd4-fused-calling  the default, but on more threads blocked Winograd's fused stages on the
                  calling thread (not dealt to the workers by chunk)
  gemm-rows-serial  the default, but few-row Gemms on the calling thread at any size (gemm.ROWS_POOL_MIN_BYTES)
  three-lanes-tiles  the default, but no conv on the fourth lanes tile (microkernel.LANES[3])
  winograd4-fused-one-chunk  the default, but blocked Winograd fused on more threads down to one
                  chunk per worker (conv_winograd4_blocked.FUSED_MIN_CHUNKS_PER_WORKER = 1)
  winograd4-blocked-197  the default, but blocked Winograd from 197 output pixels (not on 14x14 maps)
  winograd4-fused-dealt  the default, but blocked Winograd's fused chunks dealt to the workers in
                  turn (not claimed one by one)
  serial-phases   the default, but blocked convs' stride phases built on the calling thread at any size
                  (conv_blocked.PHASES_POOL_FLOATS)
  micro-serial-32  the default, but microkernel convs under 32 MMAC on the calling thread on any
                  thread count
  micro-serial-0  the default, but every microkernel conv on the pool on more threads, however small
  gather-by-table  the default, but exact columns of 4-pixel-wide maps gathered by the offset table,
                  not a 4x4 window at a time (conv_direct.WINDOWS)
  winograd4-64 / winograd4-128  the default, but Winograd F(4x4) from 64 / 128 input channels at any
                  thread count
The two and onnxruntime run interleaved, --rounds rounds of --runs calls, the order rotated per
round; the table gives the medians of the per-round ratios. Writes
benchmarks/results/conv_rule_<arch>.md and .json (conv_rule_<alternative>_<arch> for the others).
"""
from __future__ import annotations

import argparse
import platform
from contextlib import contextmanager

import numpy as np

from bench_tiles import model_and_input
from common import ROOT, header, interleaved, ort_session, write_results

import haste_edge
from haste_edge import microkernel as mk, runtime
from haste_edge.ops import conv as conv_mod, conv_blocked, conv_direct, conv_winograd4_blocked, gemm as gemm_mod


def onnx_path(name):
    if name == "fashion_resnet18":
        return ROOT / "models" / "fashion_resnet18.onnx"
    from model_zoo import get_model
    return get_model(name)


ALTERNATIVES = {"blas": "every conv on OpenBLAS", "direct": "every non-depthwise conv on the microkernel",
                "pointwise-blas": "pointwise convs on OpenBLAS", "least-padding": "tiles by least padding",
                "no-lanes": "no lanes layout", "lanes-small": "lanes layout wherever it applies",
                "no-serial-small": "small convs on OpenBLAS on more threads",
                "no-winograd4": "no Winograd F(4x4)", "no-residual-fusion": "no residual fusion",
                "depthwise-per-plane": "depthwise convs per plane", "gemm-blas": "Gemm on OpenBLAS",
                "pointwise-small-blas": "small pointwise convs on OpenBLAS's threads",
                "no-lanes-prefetch": "lanes tiles without weight prefetch",
                "winograd4-64": "Winograd F(4x4) from 64 input channels",
                "winograd4-128": "Winograd F(4x4) from 128 input channels",
                "no-winograd4-blocked": "no Winograd F(4x4) on blocked tensors",
                "winograd4-blocked-784": "Winograd F(4x4) on blocked tensors from 28x28 maps",
                "blocked-panels-512k": "blocked layout for weight panels up to 512 KiB only",
                "no-winograd4-fused": "blocked Winograd's stages never fused per chunk",
                "winograd4-fused-pool": "blocked Winograd's stages fused on one thread only, on the pool apart",
                "winograd4-fused-calling": "blocked Winograd's fused stages on the calling thread only",
                "three-lanes-tiles": "no conv on the fourth lanes tile",
                "gemm-rows-serial": "few-row Gemms on the calling thread",
                "winograd4-blocked-197": "blocked Winograd from 15x15 maps (not on 14x14)",
                "winograd4-fused-one-chunk": "blocked Winograd fused on more threads down to one chunk per worker",
                "winograd4-fused-dealt": "blocked Winograd's fused chunks dealt to the workers in turn",
                "serial-phases": "stride phases of blocked convs built on the calling thread",
                "micro-serial-32": "microkernel convs under 32 MMAC on the calling thread",
                "micro-serial-0": "every microkernel conv on the pool, however small",
                "gather-by-table": "exact columns of 4-pixel-wide maps gathered by the offset table"}


def _three_lanes_tiles(width, channels, divides=False):
    """microkernel.choose_lanes among the first three lanes tiles only."""
    def cost(v):
        mr, nr = mk.lanes_dims_py(v)
        return -(-width // mr) * mr * -(-channels // nr) * nr * mk.LANES_WORK[v]
    fits = [v for v in range(3) if not divides or width % mk.LANES[v][0] == 0]
    return min(fits, key=lambda v: (cost(v), v)) if fits else None


def _least_padding(rows, cols):
    def padded(v):
        mr, nr = mk.mr_of(v), mk.nr_of(v)
        return -(-rows // mr) * mr * -(-cols // nr) * nr
    return min(range(len(mk.SHAPES)), key=lambda v: (padded(v), v))


@contextmanager
def alternative(name):
    """Module settings of the alternative while a model is planned, restored afterwards."""
    saved = (conv_mod._AUTO, conv_mod._DIRECT, conv_mod._POINTWISE_MICRO_MIN_PIXELS, mk.choose_variant, mk.choose_lanes,
             conv_direct.LANES, conv_direct.LANES_MIN_GAIN, conv_mod._SERIAL_SMALL_MACS, conv_mod._WINOGRAD4,
             runtime.FUSE_RESIDUALS, conv_mod._DW_BLOCKED, gemm_mod.ROWS, conv_mod._SERIAL_SMALL_POINTWISE,
             mk.LANES_PREFETCH_K, conv_mod._WINOGRAD4_MIN_CHANNELS, conv_mod._WINOGRAD4_MIN_CHANNELS_POOL,
             conv_mod._WINOGRAD4_BLOCKED, conv_mod._WINOGRAD4_BLOCKED_MIN_PIXELS,
             conv_mod._BLOCKED_BIG_MAP_MAX_PANEL_BYTES,
             conv_winograd4_blocked.FUSED_MAX_U_BYTES, conv_winograd4_blocked.FUSED_POOL,
             conv_winograd4_blocked.FUSED_MIN_CHUNKS_PER_WORKER, conv_mod._MICRO_SERIAL_MACS, gemm_mod.ROWS_POOL_MIN_BYTES, conv_blocked.PHASES_POOL_FLOATS,
             conv_direct.WINDOWS)
    if name == "blas":
        conv_mod._AUTO = False
    elif name == "direct":
        conv_mod._DIRECT = True
    elif name == "pointwise-blas":
        conv_mod._POINTWISE_MICRO_MIN_PIXELS = 1 << 62
    elif name == "least-padding":
        mk.choose_variant = _least_padding
    elif name == "no-lanes":
        conv_direct.LANES = False
    elif name == "lanes-small":
        conv_direct.LANES_MIN_GAIN = 0.0
    elif name == "no-serial-small":
        conv_mod._SERIAL_SMALL_MACS = 0
    elif name == "no-winograd4":
        conv_mod._WINOGRAD4 = False
    elif name == "no-residual-fusion":
        runtime.FUSE_RESIDUALS = False
    elif name == "depthwise-per-plane":
        conv_mod._DW_BLOCKED = False
    elif name == "gemm-blas":
        gemm_mod.ROWS = False
    elif name == "pointwise-small-blas":
        conv_mod._SERIAL_SMALL_POINTWISE = False
    elif name == "no-lanes-prefetch":
        mk.LANES_PREFETCH_K = 0
    elif name == "blocked-panels-512k":
        conv_mod._BLOCKED_BIG_MAP_MAX_PANEL_BYTES = conv_mod._BLOCKED_MAX_PANEL_BYTES
    elif name.startswith("micro-serial-"):
        conv_mod._MICRO_SERIAL_MACS = int(name.split("-")[2]) * 1_000_000
    elif name == "winograd4-fused-pool":
        conv_winograd4_blocked.FUSED_POOL = "stages"
    elif name == "gemm-rows-serial":
        gemm_mod.ROWS_POOL_MIN_BYTES = 1 << 62
    elif name == "winograd4-fused-one-chunk":
        conv_winograd4_blocked.FUSED_MIN_CHUNKS_PER_WORKER = 1
    elif name == "winograd4-fused-dealt":
        conv_winograd4_blocked.FUSED_POOL = "dealt"
    elif name == "serial-phases":
        conv_blocked.PHASES_POOL_FLOATS = 1 << 62
    elif name == "gather-by-table":
        conv_direct.WINDOWS = False
    elif name == "three-lanes-tiles":
        mk.choose_lanes = _three_lanes_tiles
    elif name == "winograd4-fused-calling":
        conv_winograd4_blocked.FUSED_POOL = "calling"
    elif name == "no-winograd4-fused":
        conv_winograd4_blocked.FUSED_MAX_U_BYTES = 0
    elif name == "no-winograd4-blocked":
        conv_mod._WINOGRAD4_BLOCKED = False
    elif name.startswith("winograd4-blocked-"):
        conv_mod._WINOGRAD4_BLOCKED_MIN_PIXELS = int(name.split("-")[2])
    elif name.startswith("winograd4-"):
        conv_mod._WINOGRAD4_MIN_CHANNELS = conv_mod._WINOGRAD4_MIN_CHANNELS_POOL = int(name.split("-")[1])
    try:
        yield
    finally:
        (conv_mod._AUTO, conv_mod._DIRECT, conv_mod._POINTWISE_MICRO_MIN_PIXELS, mk.choose_variant, mk.choose_lanes,
         conv_direct.LANES, conv_direct.LANES_MIN_GAIN, conv_mod._SERIAL_SMALL_MACS, conv_mod._WINOGRAD4,
         runtime.FUSE_RESIDUALS, conv_mod._DW_BLOCKED, gemm_mod.ROWS, conv_mod._SERIAL_SMALL_POINTWISE,
         mk.LANES_PREFETCH_K, conv_mod._WINOGRAD4_MIN_CHANNELS, conv_mod._WINOGRAD4_MIN_CHANNELS_POOL,
         conv_mod._WINOGRAD4_BLOCKED, conv_mod._WINOGRAD4_BLOCKED_MIN_PIXELS,
         conv_mod._BLOCKED_BIG_MAP_MAX_PANEL_BYTES,
         conv_winograd4_blocked.FUSED_MAX_U_BYTES, conv_winograd4_blocked.FUSED_POOL,
         conv_winograd4_blocked.FUSED_MIN_CHUNKS_PER_WORKER, conv_mod._MICRO_SERIAL_MACS, gemm_mod.ROWS_POOL_MIN_BYTES, conv_blocked.PHASES_POOL_FLOATS,
         conv_direct.WINDOWS) = saved


def planned(name, against=None):
    """(model, feeds) with its plans made now, under the alternative or the default rule."""
    model, x = model_and_input(name)
    feeds = {model.input_names[0]: x}
    if against is None:
        model.run(feeds)
    else:
        with alternative(against):
            model.run(feeds)
    return model, feeds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["fashion_resnet18", "efficientnet_lite0"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--against", default="blas", choices=tuple(ALTERNATIVES))
    args = ap.parse_args()
    alt = args.against
    rows = []
    for name in args.models:
        for t in args.threads:
            haste_edge.set_threads(t)      # plans depend on the thread count: made after this
            alt_model, feeds = planned(name, alt)
            default_model, _ = planned(name)
            sess = ort_session(onnx_path(name), t)
            ort_feeds = {sess.get_inputs()[0].name: next(iter(feeds.values()))}
            fns = [("alt", lambda: alt_model.run(feeds)), ("default", lambda: default_model.run(feeds)),
                   ("ort", lambda: sess.run(None, ort_feeds))]
            ratios = []
            for k in range(args.rounds):       # each round in another order: no seat is favoured
                med = interleaved(dict(fns[k % 3:] + fns[:k % 3]), args.runs)
                ratios.append((med["alt"] / med["ort"], med["default"] / med["ort"], med["default"] / med["alt"],
                               med["ort"] * 1e3))
            r = np.median(np.array(ratios), axis=0)
            rows.append({"model": name, "threads": t, "alt_vs_ort": r[0], "default_vs_ort": r[1],
                         "default_vs_alt": r[2], "ort_ms": r[3]})
            print(rows[-1], flush=True)
    lines = [f"# Conv rule: the default against '{alt}' ({ALTERNATIVES[alt]}), interleaved with onnxruntime", "",
             header(), f"medians of {args.rounds} rounds x {args.runs} interleaved calls, batch 1", "",
             f"| model | threads | {alt} / onnxruntime | default / onnxruntime | default / {alt} | onnxruntime ms |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['threads']} | {r['alt_vs_ort']:.2f} | {r['default_vs_ort']:.2f} | "
                     f"{r['default_vs_alt']:.2f} | {r['ort_ms']:.2f} |")
    name = f"conv_rule_{platform.machine()}" if alt == "blas" else f"conv_rule_{alt}_{platform.machine()}"
    write_results(name, lines, {"against": alt, "rows": rows})

if __name__ == "__main__":
    main()
