"""One switch for every thread pool the engine uses: Numba's parallel loops and the BLAS in NumPy."""
from __future__ import annotations

import os

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


def get_threads() -> int:
    return numba.get_num_threads()


def threading_layer() -> str:
    """Numba's threading layer; only known after a parallel kernel has run."""
    try:
        return numba.threading_layer()
    except ValueError:
        return "not yet initialised"
