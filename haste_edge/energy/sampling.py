"""Background polling, shared by the meters that read instantaneous power or a wrapping counter.

A sample is taken at begin(), every `interval` seconds in a daemon thread, and at end(), so the
integral covers exactly the measured window. Sampling costs a little CPU; the idle window is sampled
the same way, so the idle-subtracted figure removes that cost too.
"""
from __future__ import annotations

import threading
import time

from haste_edge.energy.base import EnergyMeter, MeterUnavailable


def integrate(times: list[float], watts: list[float]) -> float:
    """Joules from power samples by the trapezoidal rule."""
    return float(sum((t1 - t0) * (p0 + p1) / 2
                     for t0, t1, p0, p1 in zip(times, times[1:], watts, watts[1:])))


class Poller:
    """Calls `fn()` every `interval` seconds in a daemon thread; keeps the first error it raises."""

    def __init__(self, fn, interval: float):
        self.fn = fn
        self.interval = interval
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        self._stop.clear()
        self.error = None
        self._thread = threading.Thread(target=self._loop, name="energy-poller", daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.wait(self.interval):
            try:
                self.fn()
            except Exception as e:  # reported by the meter's end(), not lost in the thread
                self.error = e
                return

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.error is not None:
            raise MeterUnavailable(f"reading failed during the run: {self.error}")


class SampledPowerMeter(EnergyMeter):
    """Integrates a power reading (watts) sampled in the background."""

    def __init__(self, read_watts, method: str, interval: float = 0.05, clock=time.perf_counter):
        super().__init__(clock)
        self.read_watts = read_watts
        self.method = method
        self.interval = interval
        self._times: list[float] = []
        self._watts: list[float] = []
        self._lock = threading.Lock()
        self._poller = Poller(self._sample, interval)

    def _sample(self):
        w = self.read_watts()
        with self._lock:
            self._times.append(self.clock())
            self._watts.append(w)

    def _start(self):
        self._times, self._watts = [], []
        self._sample()
        self._poller.start()

    def _stop(self) -> float:
        self._poller.stop()
        self._sample()
        return integrate(self._times, self._watts)

    def end(self) -> float:
        joules = super().end()
        self.elapsed = self.info()["window_s"]   # the span the integral covers, first to last sample
        return joules

    def info(self) -> dict:
        window = self._times[-1] - self._times[0] if self._times else 0.0
        return {"samples": len(self._times), "interval_s": self.interval, "window_s": window}
