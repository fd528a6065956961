"""How much of a call went into Numba: time compiling, time compiling or loading compiled code from
the on-disk cache, and how many kernels were compiled or loaded.

Numba reports all of it: its compiler lock is held while a function is compiled or loaded from the
cache ("numba:compiler_lock" event), the "numba:compile" event wraps actual compilation only, and each
dispatcher counts its cache hits. A kernel compiled or loaded is one new (function, type signature)
overload of a haste_edge Numba dispatcher.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from numba.core import event
from numba.core.dispatcher import Dispatcher


def _dispatchers():
    for name, mod in list(sys.modules.items()):
        if name.startswith("haste_edge") and mod is not None:
            for obj in list(vars(mod).values()):
                if isinstance(obj, Dispatcher):
                    yield f"{name}.{obj.py_func.__name__}", obj


def _cachable(d: Dispatcher) -> bool:
    return type(getattr(d, "_cache", None)).__name__ != "NullCache"   # cache=False kernels


def _counts() -> dict[str, tuple[int, int, bool]]:
    """dispatcher -> (overloads, cache hits, cachable)."""
    return {k: (len(d.overloads), sum(d.stats.cache_hits.values()), _cachable(d)) for k, d in _dispatchers()}


@dataclass
class JitReport:
    seconds_in_numba: float = 0.0       # compiling + loading from the cache
    seconds_compiling: float = 0.0
    compiled: int = 0
    loaded_from_cache: int = 0
    uncachable_compiled: int = 0         # kernels Numba cannot cache: compiled in every process

    def as_dict(self) -> dict:
        return {"seconds_in_numba": self.seconds_in_numba, "seconds_compiling": self.seconds_compiling,
                "seconds_loading_cache": max(0.0, self.seconds_in_numba - self.seconds_compiling),
                "kernels_compiled": self.compiled,
                "kernels_loaded_from_cache": self.loaded_from_cache,
                "kernels_compiled_uncachable": self.uncachable_compiled}


class JitWatch:
    """with JitWatch() as jw: ...; jw.report tells what Numba did inside the block."""

    def __enter__(self):
        self.report = JitReport()
        self._before = _counts()
        self._timers = [event.install_timer("numba:compiler_lock", self._add_numba),
                        event.install_timer("numba:compile", self._add_compiling)]
        for t in self._timers:
            t.__enter__()
        return self

    def _add_numba(self, seconds: float):
        self.report.seconds_in_numba += seconds

    def _add_compiling(self, seconds: float):
        self.report.seconds_compiling += seconds

    def __exit__(self, *exc):
        for t in reversed(self._timers):
            t.__exit__(*exc)
        for k, (overloads, hits, cachable) in _counts().items():
            o0, h0, _ = self._before.get(k, (0, 0, True))
            loaded = hits - h0
            compiled = max(0, overloads - o0 - loaded)
            self.report.loaded_from_cache += loaded
            self.report.compiled += compiled
            self.report.uncachable_compiled += 0 if cachable else compiled
        return False


def timed(fn) -> tuple[float, JitReport]:
    with JitWatch() as jw:
        t0 = time.perf_counter()
        fn()
        seconds = time.perf_counter() - t0
    return seconds, jw.report
