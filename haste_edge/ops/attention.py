"""ScaledDotProductAttention: Y = softmax(Q K^T * scale) V per batch item and head.

Inputs Q (B, H, N, d), K (B, H, M, d), V (B, H, M, dv); attr scale (float). Output (B, H, N, dv).
Not ONNX's Attention (opset 23, with masks, grouped heads, caches): an engine node the converter
makes from the exported pattern MatMul(Q, Transpose(K)) -> Mul/Div by a constant -> Softmax ->
MatMul(., V) (converters/attention_fusion.py). It is the one place a vision transformer's token
mixing happens, so token merging plugs in here.

Fast kernel (`attention`, also HTTM's on its merged tokens): one batched GEMM for the scores
(OpenBLAS, into a scratch the plan step keeps), the softmax in place on them (softmax.py), a second
batched GEMM with V. The reference is plain float64 NumPy.
"""
from __future__ import annotations

import numpy as np

from ..softmax import softmax_rows
from .registry import register, step_state


def _infer(in_shapes, attrs):
    q, k, v = (None if s is None else tuple(s) for s in in_shapes[:3])
    where = f"ScaledDotProductAttention: Q {q}, K {k}, V {v}"
    if q is None or k is None or v is None or len(q) != 4 or len(k) != 4 or len(v) != 4:
        raise ValueError(f"{where}: Q, K and V must be 4-D (batch, heads, tokens, head dim)")
    if q[:2] != k[:2] or k[:2] != v[:2]:
        raise ValueError(f"{where}: batch and head dims differ")
    if q[3] != k[3]:
        raise ValueError(f"{where}: Q and K head dims differ")
    if k[2] != v[2]:
        raise ValueError(f"{where}: K and V token counts differ")
    return [(q[0], q[1], q[2], v[3])]


def _macs(in_shapes, out_shapes, attrs):
    b, h, n, d = in_shapes[0]
    m, dv = in_shapes[2][2], in_shapes[2][3]
    return int(b) * int(h) * int(n) * int(m) * (int(d) + int(dv))


def _reference(inputs, attrs):
    q, k, v = (np.asarray(x, dtype=np.float64) for x in inputs[:3])
    b, h, n, _ = q.shape
    y = np.empty((b, h, n, v.shape[3]))
    for i in range(b):
        for j in range(h):
            s = q[i, j] @ k[i, j].T * attrs["scale"]
            p = np.exp(s - s.max(axis=1, keepdims=True))
            y[i, j] = (p / p.sum(axis=1, keepdims=True)) @ v[i, j]
    return [y.astype(np.float32)]


def _scratch(attrs, shape) -> np.ndarray:
    """The (B*H, N, M) scores buffer: kept by the plan step, else made for this call."""
    state = step_state(attrs)
    if state is None:
        return np.empty(shape, np.float32)
    buf = state.get("scores")
    if buf is None or buf.shape != shape:
        buf = state["scores"] = np.empty(shape, np.float32)
    return buf


@register("ScaledDotProductAttention", infer=_infer, reference=_reference, macs=_macs, attrs=("scale",))
def scaled_dot_product_attention(inputs, attrs, outs):
    q, k, v = inputs[:3]
    y = outs[0]
    if y.size == 0:
        return outs
    b, h, n, d = q.shape
    m = k.shape[2]
    s = _scratch(attrs, (b * h, n, m))
    bias = _zero_bias(attrs, (b * h, m))
    attention(q.reshape(b * h, n, d), k.reshape(b * h, m, d), v.reshape(b * h, m, v.shape[3]), bias,
              attrs["scale"], y.reshape(b * h, n, v.shape[3]), s)
    return outs


def _zero_bias(attrs, shape) -> np.ndarray:
    state = step_state(attrs)
    bias = None if state is None else state.get("bias")
    if bias is None or bias.shape != shape:
        bias = np.zeros(shape, np.float32)
        if state is not None:
            state["bias"] = bias
    return bias


def attention(q, k, v, bias, scale, out, scores=None):
    """out (H, N, dv) = softmax(q k^T * scale + bias) v for q (H, N, d), k (H, M, d), v (H, M, dv),
    bias (H, M) added to every row of its head (HTTM's log group sizes; zeros here): the two
    products batched over H on the BLAS, the softmax in softmax.py's vectorised loops."""
    s = np.matmul(q, k.swapaxes(-1, -2), out=scores)       # K^T as a view: BLAS reads it transposed
    softmax_rows(s, bias, np.float32(scale))
    return np.matmul(s, v, out=out)
