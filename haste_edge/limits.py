"""One memory limit for everything sized by a model file or an input, each checked on its own before
it is allocated: a file entry, all weights together, one tensor, a plan's buffers together, a kernel's
scratch buffer. A hostile or broken file is refused instead of exhausting memory.

Default: half the physical memory (2 GiB where it cannot be read). A model needing more than that
would leave too little for the OS and would swap or be killed on the small boards the engine targets.
Override with the environment variable HASTE_EDGE_MAX_BYTES (bytes) or set_max_bytes().
"""
from __future__ import annotations

import functools
import os

from .errors import HasteEdgeError

ENV = "HASTE_EDGE_MAX_BYTES"
_FALLBACK = 2 << 30
_override: int | None = None


@functools.cache             # physical memory does not change while we run; asked every run
def _physical_half() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return _FALLBACK


def max_bytes() -> int:
    """The limit now: set_max_bytes() value, else HASTE_EDGE_MAX_BYTES, else the default."""
    if _override is not None:
        return _override
    env = os.environ.get(ENV)
    if env:
        try:
            value = int(env)
        except ValueError:
            value = 0
        if value <= 0:
            raise HasteEdgeError(f"{ENV}={env!r}: expected a positive number of bytes")
        return value
    return _physical_half()


def set_max_bytes(n: int | None) -> None:
    """Set the limit in bytes for this process; None returns to the environment/default."""
    global _override
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n <= 0):
        raise ValueError(f"set_max_bytes: expected a positive int or None, got {n!r}")
    _override = n


def check(nbytes: int, what: str, error: type[Exception]) -> None:
    """Raise `error` naming `what` when nbytes is over the limit."""
    limit = max_bytes()
    if nbytes > limit:
        raise error(f"{what} needs {_human(nbytes)}, over the memory limit of {_human(limit)} "
                    f"(set {ENV} to change it)")


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
