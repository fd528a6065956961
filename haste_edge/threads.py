"""One switch for every thread pool the engine uses: Numba's parallel loops and the BLAS in NumPy."""
from __future__ import annotations

import os
from contextlib import contextmanager

import numba
from threadpoolctl import threadpool_limits

_blas_limit = None


def set_threads(n: int | None) -> int:
    """Use `n` threads (None: all cores). Returns the number in effect."""
    global _blas_limit
    n = int(n) if n else (os.cpu_count() or 1)
    n = max(1, min(n, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    _blas_limit = threadpool_limits(limits=n, user_api="blas")  # stays in force until changed
    return n


@contextmanager
def numba_single_thread():
    """Numba's parallel loops on the calling thread only, inside the block (the BLAS keeps its
    threads). For small layers, where waking the pool costs more than it saves. Numba's
    Python-level calls, ~2 us each: a jitted wrapper would be faster but cannot be cached."""
    prev = numba.get_num_threads()
    if prev == 1:
        yield
        return
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(prev)


def get_threads() -> int:
    return numba.get_num_threads()


def threading_layer() -> str:
    """Numba's threading layer; only known after a parallel kernel has run."""
    try:
        return numba.threading_layer()
    except ValueError:
        return "not yet initialised"
