"""The graph ops a PROM model holds (the converter writes them: converters/prom.py).

    PromConv(X, codes, w_scale[, B])   attrs: Conv's, plus x_scale (X's int8 scale) and weights
                                       ("ternary": codes in {-1, 0, 1}, or "int8")
    PromGemm(X, codes, w_scale[, B])   X (N, K), codes (M, K): Y = X W^T + B; attr x_scale

Each step prepares once (kept on the step, registry.StepAttrs): the per-channel output scales, the
ternary weights' index lists, the activation buffer.
"""
from __future__ import annotations

import numpy as np

from haste_edge.ops.conv import CONV_ATTRS, _clip_bounds, _geometry, conv_infer, conv_macs
from haste_edge.ops.registry import register, step_state
from haste_edge.prom import dot, kernels
from haste_edge.prom.quantize import inv_scale
from haste_edge.prom.reference import out_scale, prom_conv_reference, prom_gemm_reference
from haste_edge.threads import kernel_threads

PROM_CONV_ATTRS = CONV_ATTRS + ("x_scale", "weights")


def _check_codes(codes, kind, what):
    if codes.dtype != np.int8:
        raise ValueError(f"{what}: weight codes must be int8, got {codes.dtype}")
    if kind == "ternary" and codes.size and (codes.min() < -1 or codes.max() > 1):
        raise ValueError(f"{what}: ternary weight codes must be -1, 0 or 1")


def prom_conv_infer(in_shapes, attrs):
    x, w, s = in_shapes[0], in_shapes[1], in_shapes[2]
    b = in_shapes[3] if len(in_shapes) > 3 else None
    (n, c_out, ho, wo), = conv_infer([x, w, b], attrs)
    if s is None or tuple(s) != (c_out,):
        raise ValueError(f"PromConv: w_scale shape {s} should be ({c_out},)")
    return [(n, c_out, ho, wo)]


def prom_conv_macs(in_shapes, out_shapes, attrs):
    return conv_macs(in_shapes, out_shapes, attrs)


# layers with at least this many MACs run parallel over output channels when there are threads;
# smaller ones on the calling thread (as the float convs: ops/conv.py _MICRO_SERIAL_MACS)
PARALLEL_MACS = 1_000_000


def pointwise(attrs) -> bool:
    """A 1x1, stride-1, unpadded, group-1 conv: a product of the codes' rows."""
    kh, kw, sh, sw, _, _, pt, pl, pb, pr = _geometry(attrs)
    return kh == kw == 1 and sh == sw == 1 and pt == pl == pb == pr == 0 and int(attrs["group"]) == 1


def ternary_kernel(attrs) -> bool:
    """Whether a PromConv runs on the multiplication-free kernel: ternary weights in a pointwise
    conv (others take the int8 taps kernel, ternary codes and all). Where the CPU has int8 dot
    products, pointwise convs run on dot.py instead: the same sums."""
    return attrs["weights"] == "ternary" and pointwise(attrs)


def _ragged(parts, dtype):
    """(ptr, values): the parts concatenated, part i at values[ptr[i]:ptr[i+1]]."""
    ptr = np.concatenate([[0], np.cumsum([len(p) for p in parts], dtype=np.int64)]).astype(np.int64)
    return ptr, np.concatenate([np.asarray(p, dtype) for p in parts] + [np.zeros(0, dtype)])


def offset_dtype(end: int):
    """The narrowest unsigned type for offsets below end: the kernels read one per weight that is
    not zero, so these lists are most of what a layer reads from memory."""
    return np.uint16 if end <= 1 << 16 else np.uint32 if end <= 1 << 32 else np.int64


class PreparedPromConv:
    """What a PromConv derives from its weights once: scales, clamp, the ternary weights' row
    lists or the int8 weights' nonzero taps, the activation codes' buffer."""

    def __init__(self, attrs, codes, w_scale, bias, x_shape):
        self.source = (codes, w_scale, bias)
        _check_codes(codes, attrs["weights"], "PromConv")
        c_out = codes.shape[0]
        self.scale = out_scale(attrs["x_scale"], w_scale)
        self.bias = np.zeros(c_out, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32)
        _, lo, hi = _clip_bounds(attrs)
        self.lo, self.hi = np.float32(lo), np.float32(hi)
        self.inv = inv_scale(attrs["x_scale"])
        self.geo = kh, kw, sh, sw, dh, dw, pt, pl, pb, pr = _geometry(attrs)
        self.group = int(attrs["group"])
        self.x_shape = tuple(x_shape)
        n, c, h, w = x_shape
        self.ternary = ternary_kernel(attrs)
        (_, _, ho, wo), = conv_infer([x_shape, codes.shape], attrs)
        self.parallel = conv_macs([x_shape, codes.shape], [(n, c_out, ho, wo)], attrs) >= PARALLEL_MACS
        flat = codes.reshape(c_out, -1)
        self.dot = pointwise(attrs) and dot.runs_on_dot(self.ternary)
        if self.dot:
            self.w4, self.corr, self.kq = dot.pack_weights(flat)
            self.panel = np.zeros(dot.panel_size(c, h * w), np.uint8)
        elif self.ternary:
            # per output channel the rows of its +1 input channels, then of its -1 ones
            self.row_ptr, rows = _ragged([np.concatenate([np.flatnonzero(r > 0), np.flatnonzero(r < 0)])
                                          for r in flat], np.int64)
            self.row_offs = (rows * (h * w)).astype(offset_dtype(c * h * w))
            self.row_mid = self.row_ptr[:-1] + (flat > 0).sum(axis=1)
            self.xq = np.zeros(c * h * w + kernels.SLACK, np.int16)   # int16 codes: tiles.py
        else:
            hp, wp = h + pt + pb, w + pl + pr
            self.plane, self.wp = hp * wp, wp
            self.wide_len = ((ho - 1) * sh + 1) * wp
            # tap t of input channel ci (within the group), row i, column j reads at this offset
            ci, i, j = np.meshgrid(np.arange(c // self.group), np.arange(kh), np.arange(kw), indexing="ij")
            offs = (ci * self.plane + i * dh * wp + j * dw).ravel().astype(np.int64)
            keep = [np.flatnonzero(r) for r in flat]
            self.tap_ptr, tap_offs = _ragged([offs[k] for k in keep], np.int64)
            self.tap_offs = tap_offs.astype(offset_dtype(c // self.group * self.plane))
            _, self.tap_w = _ragged([r[k] for r, k in zip(flat, keep)], np.int8)
            # a tile reads up to a vector past the wide rows' end and (kw - 1) * dw past the plane
            self.xq = np.zeros(n * c * self.plane + kernels.SLACK + (kw - 1) * dw, np.int8)

    def calls(self, x, y) -> list:
        """The compiled calls (function, arguments) that compute y from x (float32, C-contiguous)."""
        kh, kw, sh, sw, dh, dw, pt, pl, pb, pr = self.geo
        n, c_out = y.shape[0], y.shape[1]
        parallel = self.parallel and kernel_threads() > 1
        if self.dot:
            run = dot.dot_pointwise_parallel if parallel else dot.dot_pointwise
            return [(run, (x.reshape(n, x.shape[1], -1), self.inv, self.panel, self.w4, self.kq, self.corr, self.scale,
                           self.bias, self.lo, self.hi, kernel_threads() if parallel else 1, y.reshape(n, c_out, -1)))]
        if self.ternary:
            run = kernels.ternary_pointwise_parallel if parallel else kernels.ternary_pointwise
            return [(run, (x.reshape(n, x.shape[1], -1), self.inv, self.xq, self.row_ptr, self.row_mid, self.row_offs,
                           self.scale, self.bias, self.lo, self.hi, y.reshape(n, c_out, -1)))]
        padded = self.xq[:n * x.shape[1] * self.plane].reshape(n, x.shape[1], -1, self.wp)
        run = kernels.int8_conv_parallel if parallel else kernels.int8_conv
        return [(kernels.quantize_pad, (x, self.inv, pt, pl, padded)),
                (run, (self.xq, self.plane, self.tap_ptr, self.tap_offs, self.tap_w, self.wide_len, self.wp, sh, sw,
                       x.shape[1] // self.group, c_out // self.group, self.scale, self.bias, self.lo, self.hi,
                       kernel_threads() if parallel else 1, y))]

    def run(self, x, y):
        for f, args in self.calls(x, y):
            f(*args)
        return y


def prepared_conv(inputs, attrs) -> PreparedPromConv:
    """The step's prepared conv (made again if its weights or input shape changed)."""
    x, codes, w_scale = inputs[0], inputs[1], inputs[2]
    bias = inputs[3] if len(inputs) > 3 else None
    state = step_state(attrs)
    prep = state.get("prom") if state is not None else None
    if prep is None or prep.source[0] is not codes or prep.source[1] is not w_scale \
            or prep.source[2] is not bias or prep.x_shape != x.shape:
        prep = PreparedPromConv(attrs, codes, w_scale, bias, x.shape)
        if state is not None:
            state["prom"] = prep
    return prep


def prom_conv_calls(inputs, attrs, outs) -> list | None:
    """The step's compiled calls for the replay (runtime.py), None unless its input is already
    float32 and C-contiguous (then every run's conversion would be redone)."""
    x = inputs[0]
    if x.dtype != np.float32 or not x.flags.c_contiguous:
        return None
    return prepared_conv(inputs, attrs).calls(x, outs[0])


@register("PromConv", infer=prom_conv_infer, reference=prom_conv_reference, macs=prom_conv_macs,
          attrs=PROM_CONV_ATTRS, calls=prom_conv_calls)
def prom_conv(inputs, attrs, outs=None):
    x = np.ascontiguousarray(inputs[0], np.float32)
    prep = prepared_conv([x, *inputs[1:]], attrs)
    y = outs[0] if outs is not None else np.empty(prom_conv_infer(
        [x.shape, inputs[1].shape, inputs[2].shape], attrs)[0], np.float32)
    return [prep.run(x, y)]


def prom_gemm_infer(in_shapes, attrs):
    x, w, s = in_shapes[0], in_shapes[1], in_shapes[2]
    b = in_shapes[3] if len(in_shapes) > 3 else None
    if x is None or w is None or len(x) != 2 or len(w) != 2 or x[1] != w[1]:
        raise ValueError(f"PromGemm: expects X (N, K) and codes (M, K), got X {x}, codes {w}")
    if s is None or tuple(s) != (w[0],) or (b is not None and tuple(b) != (w[0],)):
        raise ValueError(f"PromGemm: w_scale {s} and bias {b} should be ({w[0]},)")
    return [(x[0], w[0])]


def prom_gemm_macs(in_shapes, out_shapes, attrs):
    return int(in_shapes[0][0]) * int(in_shapes[1][0]) * int(in_shapes[1][1])


def prom_gemm_calls(inputs, attrs, outs) -> list | None:
    """PromGemm's one compiled call (scales and bias derived now), None for an input to convert."""
    x, codes, w_scale = inputs[0], inputs[1], inputs[2]
    if x.dtype != np.float32 or not x.flags.c_contiguous:
        return None
    _check_codes(codes, "int8", "PromGemm")
    bias = inputs[3] if len(inputs) > 3 and inputs[3] is not None else np.zeros(len(codes), np.float32)
    return [(kernels.int8_gemm, (x, inv_scale(attrs["x_scale"]), codes, out_scale(attrs["x_scale"], w_scale),
                                 np.ascontiguousarray(bias, np.float32), outs[0]))]


@register("PromGemm", infer=prom_gemm_infer, reference=prom_gemm_reference, macs=prom_gemm_macs,
          attrs=("x_scale",), calls=prom_gemm_calls)
def prom_gemm(inputs, attrs, outs=None):
    x = np.ascontiguousarray(inputs[0], np.float32)
    y = outs[0] if outs is not None else np.empty((x.shape[0], inputs[1].shape[0]), np.float32)
    for f, args in prom_gemm_calls([x, *inputs[1:]], attrs, [y]):
        f(*args)
    return [y]
