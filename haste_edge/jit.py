"""Numba set-up shared by every kernel: one place for the cache directory and JIT flags.

Compiled kernels are cached on disk, keyed to the CPU, in the first writable one of:
``$NUMBA_CACHE_DIR``, ``$XDG_CACHE_HOME/haste-edge/numba`` (default ``~/.cache/haste-edge/numba``),
``<tmp>/haste-edge-<uid>/numba``, in its subdirectory ``src-<hash of the package's sources>``
(below). Never next to the package's source: site-packages may be read-only.
If none is writable, kernels are compiled on every start (``CACHE_DIR`` is then None).
"""
from __future__ import annotations

import hashlib
import os
import platform
import sys
import tempfile
from pathlib import Path


def _writable(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()   # the same test Numba makes
        return True
    except OSError:
        return False


def _user_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "haste-edge" / "numba")


def _candidates() -> list[str]:
    out = [os.environ["NUMBA_CACHE_DIR"]] if os.environ.get("NUMBA_CACHE_DIR") else []
    try:
        out.append(_user_cache_dir())
    except RuntimeError:                           # no home directory
        pass
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    out.append(str(Path(tempfile.gettempdir()) / f"haste-edge-{uid}" / "numba"))
    return out


def _choose_cache_dir() -> str | None:
    for path in _candidates():
        if _writable(path):
            return path
    return None


def env_choice(name: str, allowed: tuple[str, ...], default: str) -> str:
    """Environment switch `name` if set to one of `allowed`, else `default` (a wrong value gets a
    one-line notice, not an error: switches are read at import, before any command can report)."""
    value = os.environ.get(name) or default
    if value not in allowed:
        print(f"haste-edge: ignoring {name}={value!r} (expected one of {', '.join(allowed)}); using {default}",
              file=sys.stderr)
        return default
    return value


def env_int(name: str, default: int, lo: int, hi: int) -> int:
    """Environment switch `name` as an integer in [lo, hi], else `default` (as env_choice)."""
    value = os.environ.get(name)
    if not value:
        return default
    try:
        number = int(value)
        if lo <= number <= hi:
            return number
    except ValueError:
        pass
    print(f"haste-edge: ignoring {name}={value!r} (expected an integer from {lo} to {hi}); using {default}",
          file=sys.stderr)
    return default


# Numba checks a cached kernel against its own source file only, not the files of the kernels it
# calls and inlines: after an edit to, say, microkernel.py, a cached conv kernel would keep the old
# tile. So the cache lives in a subdirectory named after a hash of the package's sources, and of
# the switches read when kernels are generated (microkernel.py, prom/dot.py).
_KERNEL_SWITCHES = ("HASTE_EDGE_MICROKERNEL", "HASTE_EDGE_PREFETCH_K", "HASTE_EDGE_PROM_DOT")


def _source_tag() -> str:
    h = hashlib.sha1()
    for path in sorted(Path(__file__).resolve().parent.rglob("*.py")):
        h.update(path.read_bytes())
    for k in _KERNEL_SWITCHES:
        h.update(f"{k}={os.environ.get(k, '')};".encode())
    return "src-" + h.hexdigest()[:12]


CACHE_DIR = _choose_cache_dir()
if CACHE_DIR is not None:
    _base = Path(CACHE_DIR)
    if _base.name.startswith("src-"):         # inherited from a parent process's environment
        _base = _base.parent
    CACHE_DIR = str(_base / _source_tag())
    if not _writable(CACHE_DIR):
        CACHE_DIR = None
if CACHE_DIR is None:
    print("haste-edge: no writable Numba cache directory (tried $NUMBA_CACHE_DIR, "
          "~/.cache/haste-edge/numba, the temp dir): kernels are compiled on every start",
          file=sys.stderr)
else:
    # Must be in the environment before numba is first imported (numba reads it then, and again
    # whenever the environment changes); also replaces a NUMBA_CACHE_DIR that is not writable.
    os.environ["NUMBA_CACHE_DIR"] = CACHE_DIR
# Idle OpenMP workers spin a bounded while (libgomp: 100,000 spins; at most one 10 ms CPU tick of
# worker time in the 50 ms after a run, measured on the bundled model), then sleep: a conv's parallel loop follows the last one within microseconds, and a sleeping
# worker took 29-67 us to wake (README "Performance"), more than a small conv's whole product;
# after a run they sleep and leave the cores to other processes. OMP_WAIT_POLICY, if set, rules.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "100000")
# The OpenMP layer first, whatever else is installed: the idle policy above and the thread rules
# (ops/conv.py) were measured on it; Numba would prefer TBB if the tbb package is present (its
# workers spin after a loop, then sleep: other wake-up costs), and falls back to the next here.
os.environ.setdefault("NUMBA_THREADING_LAYER_PRIORITY", "omp tbb workqueue")



def _wide_vector_features() -> str | None:
    """CPU features for x86 CPUs with AVX-512: the host's, minus LLVM's preference for 256-bit
    vectors (a default chosen for old Xeons that clocked down on 512-bit code). The conv kernels
    are bound by multiply-adds; with 512-bit vectors the HASTE reduced convs ran 1.3-1.7x faster
    on this project's x86 test machine. None (numba's own choice) elsewhere, or when the user set
    NUMBA_CPU_NAME / NUMBA_CPU_FEATURES."""
    if os.environ.get("NUMBA_CPU_FEATURES") or os.environ.get("NUMBA_CPU_NAME"):
        return None
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        import llvmlite.binding as llvm
        features = llvm.get_host_cpu_features()
    except Exception:                              # no host feature query: keep the defaults
        return None
    if not features.get("avx512f"):
        return None
    return features.flatten() + ",-prefer-256-bit"


CPU_FEATURES = _wide_vector_features()
if CPU_FEATURES:
    os.environ["NUMBA_CPU_FEATURES"] = CPU_FEATURES

import numba  # noqa: E402

if CPU_FEATURES:
    numba.config.CPU_FEATURES = CPU_FEATURES       # numba may have been imported before haste_edge

if CACHE_DIR is not None:
    # numba may have been imported before haste_edge: its config was read without our directory.
    numba.config.CACHE_DIR = CACHE_DIR

# Fast-math without nnan/ninf: reductions vectorise, NaN and inf still propagate.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


def njit(*args, parallel: bool = False, **kw):
    """numba.njit with the project's defaults: cached to disk, GIL released, fast-math as above."""
    opts = dict(cache=CACHE_DIR is not None, nogil=True, fastmath=FASTMATH, parallel=parallel)
    opts.update(kw)
    if args and callable(args[0]):
        return numba.njit(**opts)(args[0])
    return numba.njit(*args, **opts)


prange = numba.prange
