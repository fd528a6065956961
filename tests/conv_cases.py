"""Conv test cases shared by the conv, microkernel and Winograd tests (NumPy only: these also
run on the emulated aarch64 board, which has no onnx)."""
from __future__ import annotations

import numpy as np

from haste_edge.ops.registry import get

RNG = np.random.default_rng(0)

# (N, C_in, H, W, C_out, kernel, strides, dilations, pads [t, l, b, r], group, activation)
CASES = {
    "3x3": (1, 3, 9, 11, 4, (3, 3), (1, 1), (1, 1), [1, 1, 1, 1], 1, ""),
    "s2-asym-pads-batch3": (3, 4, 10, 7, 6, (3, 3), (2, 2), (1, 1), [1, 0, 2, 1], 1, "Relu"),
    "ragged-kernel-strides": (1, 5, 13, 10, 7, (3, 2), (2, 3), (1, 1), [2, 1, 0, 1], 1, "Clip"),
    "dilation2": (1, 4, 12, 12, 8, (3, 3), (1, 1), (2, 2), [2, 2, 2, 2], 1, ""),
    "s2-dilation2": (2, 3, 13, 11, 5, (3, 3), (2, 2), (2, 2), [1, 2, 0, 1], 1, "Relu"),
    "1x1": (1, 8, 7, 7, 16, (1, 1), (1, 1), (1, 1), [0, 0, 0, 0], 1, "Relu"),
    "1x1-batch2-ragged": (2, 24, 13, 11, 40, (1, 1), (1, 1), (1, 1), [0, 0, 0, 0], 1, "Clip"),
    "1x1-s2": (2, 8, 7, 9, 16, (1, 1), (2, 2), (1, 1), [0, 0, 0, 0], 1, ""),
    "1x1-padded": (1, 4, 5, 6, 3, (1, 1), (1, 1), (1, 1), [1, 0, 0, 2], 1, "Clip"),
    "small-plane-exact": (1, 8, 4, 4, 8, (3, 3), (1, 1), (1, 1), [1, 1, 1, 1], 1, "Clip"),
    # im2row (group 1, >= 16 input channels, small planes): pixels as N (< 32 of them) or as M
    "row-s2-asym-pads-batch3": (3, 16, 9, 8, 20, (3, 3), (2, 2), (1, 1), [1, 0, 2, 1], 1, "Clip"),
    "row-pixel-major-batch2": (2, 16, 8, 9, 24, (3, 3), (1, 1), (1, 1), [1, 1, 0, 2], 1, "Relu"),
    "row-dilation2": (1, 16, 11, 10, 12, (3, 3), (1, 1), (2, 2), [2, 1, 2, 3], 1, ""),
    "row-ragged-kernel-strides": (1, 17, 10, 9, 8, (3, 2), (2, 1), (1, 1), [0, 1, 1, 0], 1, "Clip"),
    "1x1-s2-many-channels": (3, 32, 9, 9, 40, (1, 1), (2, 2), (1, 1), [0, 0, 0, 0], 1, "Relu"),
    "row-s2-4x4-96ch": (1, 64, 7, 7, 96, (3, 3), (2, 2), (1, 1), [1, 1, 1, 1], 1, "Relu"),
    "dw-plane": (1, 6, 20, 20, 6, (3, 3), (1, 1), (1, 1), [1, 1, 1, 1], 6, "Relu"),
    "dw-plane-5x5-s2": (2, 4, 37, 35, 4, (5, 5), (2, 2), (1, 1), [2, 1, 2, 3], 4, "Clip"),
    "dw-plane-mult2": (1, 3, 20, 18, 6, (3, 3), (1, 1), (1, 1), [1, 1, 1, 1], 3, ""),
    "dw-cl": (3, 8, 7, 7, 8, (3, 3), (1, 1), (1, 1), [1, 1, 1, 1], 8, "Relu"),
    "dw-plane-s3": (1, 3, 60, 57, 3, (3, 3), (3, 3), (1, 1), [1, 1, 1, 1], 3, "Relu"),
    "dw-tiles-dilation2-asym": (2, 4, 20, 18, 4, (3, 3), (1, 1), (2, 2), [2, 1, 2, 3], 4, "Clip"),
    "dw-tiles-s2-ragged": (1, 5, 33, 40, 10, (3, 3), (2, 2), (1, 1), [0, 0, 1, 1], 5, ""),
    "dw-cl-s2-dilation2": (1, 8, 10, 9, 8, (3, 3), (2, 2), (2, 2), [2, 1, 0, 3], 8, ""),
    "dw-cl-mult2": (1, 4, 8, 8, 8, (3, 3), (1, 1), (1, 1), [1, 1, 1, 1], 4, "Clip"),
    "grouped": (2, 6, 11, 9, 9, (3, 3), (2, 2), (1, 1), [1, 0, 1, 1], 3, "Relu"),
    "grouped-1x1": (1, 8, 5, 5, 4, (1, 1), (1, 1), (1, 1), [0, 0, 0, 0], 2, ""),
}


def make(case, bias=True):
    n, ci, h, w, co, k, s, d, pads, g, act = case
    attrs = dict(kernel_shape=list(k), strides=list(s), dilations=list(d), pads=list(pads), group=g,
                 activation=act, clip_min=-0.5, clip_max=0.75)
    x = RNG.standard_normal((n, ci, h, w)).astype(np.float32)
    wt = RNG.standard_normal((co, ci // g) + tuple(k)).astype(np.float32)
    b = RNG.standard_normal(co).astype(np.float32) if bias else None
    return [x, wt, b], attrs


def run_fast(inputs, attrs):
    """Run the fast kernel the way the engine does: into NaN-filled buffers of infer()'s shapes."""
    spec = get("Conv")
    shapes = spec.infer([None if a is None else a.shape for a in inputs], attrs)
    bufs = [np.full(s, np.nan, np.float32) for s in shapes]
    outs = spec.kernel(inputs, attrs, bufs)
    assert len(outs) == 1 and outs[0] is bufs[0], "must fill outs"
    return outs[0]


def poison_scratch(size: int = 1 << 20):
    """Fill this thread's scratch buffers with NaN (the depthwise ones made at `size` first, so the
    next call reuses them): a kernel that reads a scratch float it did not write shows as NaN."""
    from haste_edge import scratch
    for slot in ("dwb_in", "dwb_out"):
        scratch.scratch(slot, size)
    for buf in scratch._tls.bufs.values():
        buf.fill(np.nan)
