"""The interface every energy source implements."""
from __future__ import annotations

import time


class MeterUnavailable(Exception):
    """This source cannot be read on this machine; the message says why (probing then moves on)."""


class EnergyMeter:
    """begin() ... end() -> joules consumed in between; `method` names how they were obtained.

    Subclasses implement _start() and _stop() -> joules. `elapsed` is the last window in seconds."""
    method: str = "unnamed"
    measured: bool = True      # False for estimates

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.elapsed = 0.0
        self._t0 = None

    def begin(self) -> None:
        self._t0 = self.clock()
        self._start()

    def end(self) -> float:
        if self._t0 is None:
            raise RuntimeError("end() without begin()")
        joules = self._stop()
        self.elapsed = self.clock() - self._t0
        self._t0 = None
        return float(joules)

    def _start(self) -> None:
        raise NotImplementedError

    def _stop(self) -> float:
        raise NotImplementedError

    def info(self) -> dict:
        """Details for reports (zones, device, sample counts)."""
        return {}
