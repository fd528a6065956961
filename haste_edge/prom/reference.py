"""Plain NumPy definitions of PROM's ops (ops.py), the oracle for the Numba kernels.

PromConv(x, codes, w_scale, bias): x quantised to int8 per tensor (attrs x_scale), an integer conv
of those codes with the weight codes (exact: float64 sums of integers far below 2^53), then per
output channel y = float32(acc) * float32(x_scale * w_scale[o]) + bias[o], then the fused
activation. PromGemm the same for a (N, K) x (M, K)^T product.
"""
from __future__ import annotations

import numpy as np

from haste_edge.ops.conv import _clip_bounds, conv_sums
from haste_edge.prom.quantize import quantize_act


def out_scale(x_scale: float, w_scale: np.ndarray) -> np.ndarray:
    """The per-channel factor from int32 sums to floats, rounded to float32 once (kernels use it too)."""
    return (np.float32(x_scale) * np.asarray(w_scale, np.float32)).astype(np.float32)


def conv_accumulators(x: np.ndarray, codes: np.ndarray, attrs: dict) -> np.ndarray:
    """The int32 sums of a PromConv (N, C_out, H_out, W_out), before scaling: the conv of the
    activation codes with the weight codes, summed in float64 (exact for integers below 2^53)."""
    return conv_sums(quantize_act(x, attrs["x_scale"]), codes, attrs).astype(np.int32)


def prom_conv_reference(inputs, attrs):
    x, codes, w_scale = inputs[0], inputs[1], inputs[2]
    bias = inputs[3] if len(inputs) > 3 and inputs[3] is not None else None
    acc = conv_accumulators(np.asarray(x, np.float32), np.asarray(codes), attrs)
    scale = out_scale(attrs["x_scale"], w_scale)
    y = acc.astype(np.float32) * scale[None, :, None, None]
    if bias is not None:
        y = y + np.asarray(bias, np.float32)[None, :, None, None]
    has_act, lo, hi = _clip_bounds(attrs)
    if has_act:
        y = np.minimum(np.maximum(y, np.float32(lo)), np.float32(hi))
    return [y.astype(np.float32)]


def prom_gemm_reference(inputs, attrs):
    x, codes, w_scale = inputs[0], inputs[1], inputs[2]
    bias = inputs[3] if len(inputs) > 3 and inputs[3] is not None else None
    xq = quantize_act(x, attrs["x_scale"]).astype(np.int64)
    acc = xq @ np.asarray(codes, np.int64).T
    y = acc.astype(np.float32) * out_scale(attrs["x_scale"], w_scale)[None, :]
    if bias is not None:
        y = y + np.asarray(bias, np.float32)[None, :]
    return [y.astype(np.float32)]
