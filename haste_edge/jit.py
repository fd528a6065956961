"""Numba set-up shared by every kernel: one place for the cache directory and JIT flags."""
from __future__ import annotations

import os
from pathlib import Path


def _default_cache_dir() -> str:
    # site-packages may be read-only on a device: keep compiled kernels in the user's cache.
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "haste-edge" / "numba")


# Must be set before numba is first imported.
os.environ.setdefault("NUMBA_CACHE_DIR", _default_cache_dir())
CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]
# Idle OpenMP workers sleep instead of spinning: they would otherwise steal the cores that
# BLAS (called between parallel loops) and other processes on a small board need.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402

# Fast-math without nnan/ninf: reductions vectorise, NaN and inf still propagate.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


def njit(*args, parallel: bool = False, **kw):
    """numba.njit with the project's defaults: cached to disk, GIL released, fast-math as above."""
    opts = dict(cache=True, nogil=True, fastmath=FASTMATH, parallel=parallel)
    opts.update(kw)
    if args and callable(args[0]):
        return numba.njit(**opts)(args[0])
    return numba.njit(*args, **opts)


prange = numba.prange
