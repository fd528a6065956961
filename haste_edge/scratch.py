"""Grow-only float32 scratch buffers, one set per thread, shared by the kernels.

Each slot starts on a 64-byte boundary (a cache line, an AVX-512 vector), is as large as the
largest call needs (not the sum over layers), is not reallocated once warm, and thread-locality
keeps models running in different threads from sharing them. Slot names must be unique across
kernels whose results are alive at the same time. generation() changes whenever a buffer is
(re)allocated: a plan's replay (runtime.py), which keeps the buffers its calls were bound to, is
bound again then, so it never keeps an old buffer alive beside its replacement.
"""
from __future__ import annotations

import threading

import numpy as np

from . import limits
from .errors import InputError

_tls = threading.local()


def scratch(slot: str, size: int) -> np.ndarray:
    bufs = _tls.__dict__.setdefault("bufs", {})
    buf = bufs.get(slot)
    if buf is None or buf.size < size:
        limits.check(4 * size, f"scratch buffer '{slot}'", InputError)
        buf = bufs[slot] = aligned_empty(size)
        _tls.generation = getattr(_tls, "generation", 0) + 1
    return buf[:size]


def generation() -> int:
    """How many times this thread's scratch buffers were allocated so far."""
    return getattr(_tls, "generation", 0)


def aligned_empty(size: int, align: int = 64) -> np.ndarray:
    """A float32 array of `size` starting on an `align`-byte boundary (NumPy promises 16 bytes):
    vector loads from it do not straddle cache lines when their offsets are multiples of align."""
    raw = np.empty(size + align // 4, dtype=np.float32)
    skip = (-raw.ctypes.data % align) // 4
    return raw[skip:skip + size]
