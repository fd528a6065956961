"""PROM's quantisation rules, in NumPy (converters/train_fashion_mobilenetv2.py has the same rules
in torch for the fine-tune; tests/test_prom.py holds them equal).

Weights are per output channel (axis 0): ternary codes {-1, 0, +1} with one scale a, or int8 codes
in [-127, 127] with scale max|w| / 127. Activations are int8 per tensor, symmetric (zero point 0),
scale max|x| / 127 over calibration inputs, so a code times a ternary weight is +x, -x or nothing.
"""
from __future__ import annotations

import numpy as np

TERNARY_THRESHOLD = 0.7     # threshold = 0.7 * mean|w| per output channel (the usual ternary rule)
QMAX = 127                  # symmetric int8: -127..127 (-128 unused, so negation never overflows)


def ternary(w: np.ndarray, ratio: float = TERNARY_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """(codes int8 in {-1, 0, 1} shaped like w, scale float32 per output channel): weights with
    |w| <= ratio * mean|w| of their channel become 0, the rest sign(w) * a, a = mean |w| of those."""
    flat = np.asarray(w, np.float32).reshape(len(w), -1)
    mag = np.abs(flat)
    keep = mag > ratio * mag.mean(axis=1, keepdims=True)
    count = keep.sum(axis=1)
    scale = np.where(count > 0, (mag * keep).sum(axis=1) / np.maximum(count, 1), 0).astype(np.float32)
    codes = (np.sign(flat) * keep).astype(np.int8)
    return codes.reshape(w.shape), scale


def int8_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes int8 in [-127, 127], scale float32 per output channel = max|w| / 127); rounding half
    to even. An all-zero channel gets scale 0 and codes 0."""
    flat = np.asarray(w, np.float32).reshape(len(w), -1)
    scale = (np.abs(flat).max(axis=1) / QMAX).astype(np.float32)
    safe = np.where(scale > 0, scale, 1).astype(np.float32)
    codes = np.clip(np.rint(flat / safe[:, None]), -QMAX, QMAX).astype(np.int8)
    return codes.reshape(w.shape), scale


def dequantize(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The float weights a quantised layer computes with."""
    return (codes.reshape(len(codes), -1).astype(np.float32) * scale[:, None]).reshape(codes.shape)


def act_scale(max_abs: float) -> float:
    """Per-tensor activation scale from the largest |x| seen in calibration."""
    return float(np.float32(max(float(max_abs), 1e-8) / QMAX))


def inv_scale(scale: float) -> np.float32:
    """1 / scale in float32: quantising multiplies by it (here and in the kernels, so both round alike)."""
    return np.float32(1) / np.float32(scale)


def quantize_act(x: np.ndarray, scale: float) -> np.ndarray:
    """int8 codes of x: clip(rint(x * (1 / scale)), -127, 127)."""
    return np.clip(np.rint(np.asarray(x, np.float32) * inv_scale(scale)), -QMAX, QMAX).astype(np.int8)


# ---------------------------------------------------------------- 2-bit packing for the model file

def pack_ternary(codes: np.ndarray) -> np.ndarray:
    """Four ternary codes per byte, 2 bits each (0 -> 0, +1 -> 1, -1 -> 2), first code in the low bits;
    the last byte zero-padded."""
    flat = np.asarray(codes, np.int8).ravel()
    if flat.size and (flat.min() < -1 or flat.max() > 1):
        raise ValueError("ternary codes must be -1, 0 or 1")
    bits = np.where(flat < 0, 2, flat).astype(np.uint8)
    bits = np.concatenate([bits, np.zeros(-len(bits) % 4, np.uint8)]).reshape(-1, 4)
    return (bits[:, 0] | bits[:, 1] << 2 | bits[:, 2] << 4 | bits[:, 3] << 6).astype(np.uint8)


def unpack_ternary(packed: np.ndarray, shape: tuple) -> np.ndarray:
    """Inverse of pack_ternary; ValueError if the bytes do not hold exactly prod(shape) codes or
    hold the unused 2-bit value 3."""
    count = int(np.prod(shape))
    packed = np.asarray(packed, np.uint8).ravel()
    if len(packed) != (count + 3) // 4:
        raise ValueError(f"{len(packed)} packed bytes do not hold {count} ternary codes of shape {tuple(shape)}")
    bits = np.stack([(packed >> s) & 3 for s in (0, 2, 4, 6)], axis=1).ravel()[:count]
    if (bits == 3).any():
        raise ValueError("packed ternary weights hold the unused code 3")
    return np.where(bits == 2, -1, bits).astype(np.int8).reshape(shape)
