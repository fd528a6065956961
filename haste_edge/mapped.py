"""Weights read in place from the model file's pages instead of copied into the heap.

A kernel that packs a weight into a layout of its own (ops/conv.py's prepared paths) keeps that
copy for the life of the plan; the original is not read again unless a plan is made anew (other
input shapes, thread count, a compression method). Mapped from the file, the original's pages can
be handed back once packed (release) and come back from the file if read again, so a model costs
its packed weights once, not twice (README "Performance": peak RSS).

The mapping is private (copy on write) so the arrays stay writable like heap ones (Numba types
read-only arrays apart and would compile every kernel again for them); loaded weights are
read-only by contract (runtime.py), and a write to one released afterwards would be lost. A model
file must be replaced (modelfile.save writes a new file and renames it), not rewritten in place,
while a process runs it: the pages read again come from the file.
"""
from __future__ import annotations

import mmap

import numpy as np

_CAN_RELEASE = hasattr(mmap, "MADV_DONTNEED")


def open_file(path) -> mmap.mmap | None:
    """A private mapping of the whole file, or None where it cannot be mapped (empty file,
    a platform without mmap): the caller then copies."""
    try:
        with open(path, "rb") as f:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    except (OSError, ValueError):
        return None


def array(mm: mmap.mmap, offset: int, dtype: np.dtype, shape: tuple) -> np.ndarray:
    """The array stored at `offset` in the mapping (checked in range by the caller)."""
    count = int(np.prod(shape))
    return np.frombuffer(mm, dtype, count, offset).reshape(shape)


def release(a: np.ndarray) -> None:
    """Hand back the resident pages lying wholly inside mapped array `a` (a no-op for any other
    array): they stop counting in the process's memory and are read from the file if needed."""
    base = a
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):       # np.frombuffer's base
        base = base.obj
    if not _CAN_RELEASE or not isinstance(base, mmap.mmap) or a.size == 0 or not a.flags.c_contiguous:
        return
    page = mmap.PAGESIZE
    start = a.ctypes.data - np.frombuffer(base, np.uint8, 1).ctypes.data
    first = -(-start // page) * page
    last = (start + a.nbytes) // page * page
    if last > first:
        base.madvise(mmap.MADV_DONTNEED, first, last - first)
