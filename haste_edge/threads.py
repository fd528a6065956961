"""One switch for every thread pool the engine uses: Numba's parallel loops and the BLAS in NumPy.

The engine's parallel kernels run on Numba's pool, whose idle workers spin briefly, then sleep
(jit.py). With one pool (ONE_POOL, the default) every conv runs there and the BLAS
(OpenBLAS in NumPy) keeps one thread unless set_threads(blas=k) says otherwise: two pools fought
over the cores. Under the two-pool rule the BLAS gets all the engine's threads only while other
processes leave the cores idle (cpuload.OtherLoad, checked at most every 0.1 s at the start of a
run), and one thread otherwise: its workers spin and yield while they wait, and every product waits
for all of them, so with one busy process next to the bundled model p99 went from milliseconds to
over 100 ms with the BLAS on 2 threads (benchmarks/results/under_load.md, README "Threads").
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager

import numba
from threadpoolctl import ThreadpoolController

from .cpuload import OtherLoad

_wanted: int | None = None             # set_threads' choice; Numba's count is per Python thread
_blas_fixed: int | None = None         # set_threads(blas=k); None: chosen by load
_blas_now: int | None = None           # what the BLAS libraries are set to
_blas_libs: list = []
_load: OtherLoad | None = None
_state_lock = threading.Lock()
_known = threading.local()             # .n: Numba's thread count while this module holds it fixed;
                                       # .set: the count this module last gave Numba in this thread
# One pool (default): on every thread count each conv (ops/conv.py) takes the path it takes on one
# thread (the microkernel, but for a few small pointwise convs and the HASTE-free OpenBLAS paths
# under HASTE_EDGE_CONV=blas), parallel on Numba's pool from conv._MICRO_SERIAL_MACS up, the
# workers spinning briefly between loops (jit.py) and the BLAS on one thread: the pools no longer
# fight over the cores. False: the two-pool rule (module docstring; small convs on the calling
# thread, large ones on OpenBLAS's threads), measured with sleeping workers.
ONE_POOL = True
BUSY_CORES = 0.5                       # other processes using more than this: BLAS on one thread


def set_threads(n: int | None = None, blas: int | None = None) -> int:
    """Use `n` threads for the engine's parallel kernels (None: all cores), in every Python thread's
    runs. The BLAS's matrix products use `blas` threads if given (process-wide), else `n` while
    other processes leave the cores idle and 1 when they do not (module docstring). Returns n."""
    global _wanted, _blas_fixed, _blas_libs, _load
    n = _bounded(int(n) if n else (os.cpu_count() or 1))
    with _state_lock:
        numba.set_num_threads(n)
        _known.set = n
        _wanted = n
        _blas_fixed = None if blas is None else max(1, int(blas))
        if not _blas_libs:             # NumPy's BLAS is loaded by now (numba imports numpy)
            _blas_libs = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
        if _load is None:
            _load = OtherLoad()
        _set_blas(_blas_fixed or 1)
    return n


def _set_blas(k: int) -> None:
    global _blas_now
    if k != _blas_now:
        for lib in _blas_libs:
            lib.set_num_threads(k)
        _blas_now = k


def _blas_adapts() -> bool:
    """Whether the BLAS's threads follow the load (module docstring): not with one pool, where the
    BLAS keeps 1 thread, nor when they are fixed or the engine has one thread."""
    return _blas_fixed is None and _wanted != 1 and not ONE_POOL


def _adapt_blas() -> None:
    """BLAS threads for the next run: all of the engine's while the others are idle, else one."""
    others = _load.cores()
    _set_blas(_wanted if others is not None and others < BUSY_CORES else 1)


def blas_threads() -> int | None:
    """The BLAS's thread count now (None before the first run or set_threads)."""
    return _blas_now


# Model runs in one process go one at a time. With 2 and 4 Python threads on one model, one run at
# a time gave more inferences per second than overlapping runs and about half their p99, whether
# the overlapping runs split the engine's threads between them or not
# (benchmarks/results/concurrency.md): between kernels each run executes Python, which holds the
# GIL, and the runs queued for it. It also keeps Numba's workqueue threading layer safe, which
# aborts the process when two threads launch parallel kernels at once. False lets runs overlap
# (for measuring).
SERIALISE_RUNS = True
_run_lock = threading.Lock()


class run_context:
    """Context for one model run: one run at a time (above), with the engine's threads set in the
    calling Python thread (Numba keeps a count per thread) and the BLAS's set by the load. A class,
    not a generator: it is entered once per run, and a generator-based one cost four times as much."""
    __slots__ = ("prev", "locked")

    def __enter__(self):
        if _wanted is None:
            set_threads(None)              # the defaults, also for users who never call set_threads
        self.locked = SERIALISE_RUNS
        if self.locked:
            _run_lock.acquire()
        try:
            # what this module last set, not numba.get_num_threads(): asked after a run's kernels it
            # took tens of microseconds (cold), a few percent of the bundled model's run. Set
            # elsewhere, Numba's count only changes how the work spreads: no kernel indexes by thread
            if getattr(_known, "set", None) != _wanted:
                numba.set_num_threads(_wanted)
                _known.set = _wanted
            if _blas_adapts():
                with _state_lock:
                    _adapt_blas()
        except BaseException:
            self._release()
            raise
        self.prev = getattr(_known, "n", None)
        _known.n = _wanted                 # kernel_threads() answers this inside the block

    def __exit__(self, *exc):
        _known.n = self.prev
        self._release()

    def _release(self):
        if self.locked:
            _run_lock.release()


@contextmanager
def holding(n):
    """kernel_threads() answers n inside the block (Numba's count is n there and nothing changes
    it, or the block only plans work for n threads)."""
    prev = getattr(_known, "n", None)
    _known.n = n
    try:
        yield
    finally:
        _known.n = prev


def kernel_threads() -> int:
    """Numba's thread count in the calling thread, what the kernels split their work by. Inside a
    run it is the run's (kept, not asked: numba.get_num_threads() costs 1.5 us, and a conv asked
    twice, 40 times per bundled-model run); outside, Numba's."""
    n = getattr(_known, "n", None)
    return numba.get_num_threads() if n is None else n


@contextmanager
def numba_single_thread():
    """Numba's parallel loops on the calling thread only, inside the block (the BLAS keeps its
    threads). For small layers, where waking the pool costs more than it saves. Numba's
    Python-level calls, ~2 us each: a jitted wrapper would be faster but cannot be cached."""
    prev = kernel_threads()
    if prev == 1:
        yield
        return
    numba.set_num_threads(1)
    try:
        with holding(1):
            yield
    finally:
        numba.set_num_threads(prev)


def get_threads() -> int:
    return numba.get_num_threads()


def run_threads() -> int:
    """The thread count a run started now would use: the run's inside one, else set_threads'
    choice (all cores before it is called)."""
    n = getattr(_known, "n", None)
    if n is not None:
        return n
    return _wanted if _wanted is not None else _bounded(os.cpu_count() or 1)


def _bounded(n: int) -> int:
    """n threads, at least 1 and at most the workers Numba launched."""
    return max(1, min(n, numba.config.NUMBA_NUM_THREADS))


def threading_layer() -> str:
    """Numba's threading layer; only known after a parallel kernel has run."""
    try:
        return numba.threading_layer()
    except ValueError:
        return "not yet initialised"
