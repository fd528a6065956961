"""How many cores other processes kept busy lately: Linux's /proc/stat minus this process's own CPU time.

Used to give the BLAS its threads only while nothing else competes for the cores (threads.py).
Reading costs ~20 us, so a reading is reused for `interval` seconds.
"""
from __future__ import annotations

import os
import time

_STAT = "/proc/stat"


def _read() -> tuple[float, float, float] | None:
    """(wall s, busy CPU s of the whole machine, CPU s of this process), or None without /proc."""
    try:
        with open(_STAT, "rb") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return None
    ticks = [int(v) for v in fields[:8]]         # user nice system idle iowait irq softirq steal
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = (sum(ticks) - ticks[3] - ticks[4]) / hz
    t = os.times()
    return time.monotonic(), busy, t.user + t.system


class OtherLoad:
    """cores() -> cores other processes used since the previous reading (None: unknown)."""

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self._last = _read()
        self._value = None

    def cores(self) -> float | None:
        if self._last is None:
            return None
        now = time.monotonic()
        if now - self._last[0] < self.interval:
            return self._value
        cur = _read()
        if cur is None:
            return None
        wall = cur[0] - self._last[0]
        others = (cur[1] - self._last[1]) - (cur[2] - self._last[2])
        self._last, self._value = cur, max(0.0, others / wall)
        return self._value
