"""x86 RAPL energy counters through /sys/class/powercap (Intel, and AMD Zen under the same names).

Top-level zones intel-rapl:N are the CPU packages (name package-N); their sub-zones (core, uncore,
dram) are parts of a package and not added again. A `psys` zone (whole platform, laptops) is used only
when no package zone exists, because it contains the packages. energy_uj counts microjoules and wraps
to 0 after max_energy_range_uj; a background read every `interval` seconds keeps at most one wrap
between reads, so long runs are counted right. Recent kernels make energy_uj readable by root only.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

from haste_edge.energy.base import EnergyMeter, MeterUnavailable
from haste_edge.energy.sampling import Poller
from haste_edge.energy.sysfs import read_name, read_number, read_text, sysfs_dir

POWERCAP_ROOT = "/sys/class/powercap"
_TOP_ZONE = re.compile(r"^intel-rapl:\d+$")


def counter_delta(before: float, after: float, max_range: float) -> float:
    """Counter increase from `before` to `after`, allowing one wrap at max_range."""
    return after - before if after >= before else after + max_range - before


class RaplMeter(EnergyMeter):
    def __init__(self, zones: list[tuple[Path, str, float]], interval: float = 1.0, read=read_text,
                 clock=time.perf_counter):
        super().__init__(clock)
        self.zones = zones          # (directory, name, max_energy_range_uj)
        self.read = read
        self.interval = interval
        names = ", ".join(f"{d.name} {n}" for d, n, _ in zones)
        self.method = f"RAPL energy counters ({names}; /sys/class/powercap energy_uj)"
        self._last: list[float] = []
        self._uj = 0.0
        self._poller = Poller(self._accumulate, interval)

    def _read_all(self) -> list[float]:
        return [read_number(d / "energy_uj", self.read) for d, _, _ in self.zones]

    def _accumulate(self):
        now = self._read_all()
        self._uj += sum(counter_delta(b, a, m) for b, a, (_, _, m) in zip(self._last, now, self.zones))
        self._last = now

    def _start(self):
        self._uj = 0.0
        self._last = self._read_all()
        self._poller.start()

    def _stop(self) -> float:
        self._poller.stop()
        self._accumulate()
        return self._uj * 1e-6

    def info(self) -> dict:
        return {"zones": [f"{d.name}:{n}" for d, n, _ in self.zones], "poll_interval_s": self.interval}


def find_rapl_meter(root=POWERCAP_ROOT, interval: float = 1.0, read=read_text,
                    clock=time.perf_counter) -> RaplMeter:
    """A meter over the package zones under `root`; MeterUnavailable says why not."""
    root = sysfs_dir(root, "no powercap interface on this kernel")
    zones = []
    for d in sorted(p for p in root.iterdir() if _TOP_ZONE.match(p.name)):
        zones.append((d, read_name(d / "name", read)))
    if not zones:
        raise MeterUnavailable(f"no intel-rapl:N zone under {root}")
    chosen = [z for z in zones if z[1].startswith("package")] or [z for z in zones if z[1] == "psys"] or zones
    out = []
    for d, name in chosen:
        max_range = read_number(d / "max_energy_range_uj", read)
        try:
            read_number(d / "energy_uj", read)
        except MeterUnavailable as e:
            raise MeterUnavailable(f"{e} (RAPL is root-only on recent kernels)") from None
        out.append((d, name, max_range))
    return RaplMeter(out, interval, read, clock)
