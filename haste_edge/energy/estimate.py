"""Energy estimated from counted operations: an arithmetic-only lower bound, not a measurement.

Per-operation energies for 45 nm CMOS (Horowitz, "Computing's energy problem", ISSCC 2014), as quoted
in docs/METHOD.md section 4: fp32 multiply 3.7 pJ, fp32 add 0.9 pJ. A multiply-accumulate is one of
each (4.6 pJ); a HASTE overhead operation (hashing, centring and merge additions) is one fp32 add.
Memory traffic (a DRAM word costs about 640 pJ), control, caches and idle power are not included, and
a present-day CPU in another process node spends a different amount: the figure compares models and
settings, it does not predict what a power meter shows.
"""
from __future__ import annotations

import time

from haste_edge.energy.base import EnergyMeter

PJ_FP32_MULT = 3.7
PJ_FP32_ADD = 0.9
PJ_PER_MAC = PJ_FP32_MULT + PJ_FP32_ADD
PJ_PER_OVERHEAD_OP = PJ_FP32_ADD

METHOD = (f"ESTIMATE, not measured: counted ops x 45 nm per-op energy (Horowitz ISSCC 2014, via "
          f"docs/METHOD.md section 4): {PJ_PER_MAC:.1f} pJ per fp32 MAC, "
          f"{PJ_PER_OVERHEAD_OP:.1f} pJ per HASTE overhead add; "
          f"arithmetic only (no memory, no idle)")


def estimate_joules(macs: float, overhead_ops: float = 0.0) -> float:
    return (macs * PJ_PER_MAC + overhead_ops * PJ_PER_OVERHEAD_OP) * 1e-12


class OpCountEstimate(EnergyMeter):
    """`counter()` returns (MACs executed, overhead ops) so far; the meter prices the difference."""
    measured = False
    method = METHOD

    def __init__(self, counter, clock=time.perf_counter):
        super().__init__(clock)
        self.counter = counter
        self._before = (0.0, 0.0)

    def _start(self):
        self._before = tuple(self.counter())

    def _stop(self) -> float:
        macs, over = self.counter()
        return estimate_joules(macs - self._before[0], over - self._before[1])
