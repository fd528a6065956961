"""One switch for every thread pool the engine uses: Numba's parallel loops and the BLAS in NumPy.

The engine's parallel kernels run on Numba's pool, whose idle workers sleep (OMP_WAIT_POLICY=
PASSIVE): a worker woken for a parallel loop gets a busy core back at once. The BLAS (OpenBLAS in
NumPy) runs on one thread unless asked for more: its workers spin and yield while they wait, and
every matrix product waits for all of them, so with another busy process on the board each product
waits for a core the other process holds. Measured on the bundled model (batch 1, 2 cores, one
competing busy process): a p99 of 130-340 ms with BLAS on 2 threads against 7-14 ms with BLAS on
one and Numba on 2 (benchmarks/bench_under_load.py, README "Threads").
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager, nullcontext

import numba
from threadpoolctl import threadpool_limits

_blas_limit = None
_wanted: int | None = None             # set_threads' choice; Numba's count is per Python thread
_launch_lock = threading.Lock()
_serialise: bool | None = None         # decided once Numba's threading layer is known


def set_threads(n: int | None = None, blas: int = 1) -> int:
    """Use `n` threads for the engine's parallel kernels (None: all cores) and `blas` threads for
    the BLAS's matrix products (default 1: module docstring). Applies to every Python thread's
    runs; the BLAS setting is process-wide. Returns the number of engine threads in effect."""
    global _blas_limit, _wanted
    n = int(n) if n else (os.cpu_count() or 1)
    n = max(1, min(n, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    _wanted = n
    _blas_limit = threadpool_limits(limits=max(1, int(blas)), user_api="blas")  # in force until changed
    return n


def parallel_launch_guard():
    """Context for one model run. Gives the calling thread the thread count set_threads chose
    (Numba keeps one per Python thread), and serialises runs when Numba's threading layer is
    workqueue: that layer aborts the process (exit 134) if two threads launch parallel kernels at
    once. The omp and tbb layers take concurrent launches."""
    global _serialise
    if _wanted is None:
        set_threads(None)              # the defaults, also for users who never call set_threads
    elif numba.get_num_threads() != _wanted:
        numba.set_num_threads(_wanted)
    if _serialise is None:
        _serialise = _layer_after_start() == "workqueue"
    return _launch_lock if _serialise else nullcontext()


def _layer_after_start() -> str:
    """Numba's threading layer, starting its thread pool if no parallel kernel has yet."""
    try:
        from numba.np.ufunc.parallel import _launch_threads
        _launch_threads()
        return numba.threading_layer()
    except Exception:                  # unknown Numba internals: assume the unsafe layer
        return "workqueue"


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
