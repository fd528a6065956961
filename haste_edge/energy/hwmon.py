"""INA219/INA226/INA260 power monitors through the Linux `ina2xx` hwmon driver.

Each monitor is a /sys/class/hwmon/hwmonN directory whose `name` file holds the chip (ina219, ina226,
...). power1_input is in microwatts; where it is missing, bus voltage in1_input (mV) times current
curr1_input (mA) gives microwatts too. Older kernels keep the attributes under hwmonN/device/.
"""
from __future__ import annotations

import time
from pathlib import Path

from haste_edge.energy.base import MeterUnavailable
from haste_edge.energy.sampling import SampledPowerMeter
from haste_edge.energy.sysfs import read_name, read_number, read_text, sysfs_dir

HWMON_ROOT = "/sys/class/hwmon"


def _is_ina(name: str) -> bool:
    return name.startswith("ina2")  # ina219, ina220, ina226, ina230, ina231, ina260, ina2xx


def _attr_dir(dev: Path) -> Path:
    for d in (dev, dev / "device"):
        if (d / "power1_input").exists() or (d / "curr1_input").exists():
            return d
    return dev


def _power_reader(d: Path, read):
    """A function returning watts from this monitor's files, checked once now."""
    if (d / "power1_input").exists():
        def watts():
            return read_number(d / "power1_input", read) * 1e-6
        how = "power1_input"
    elif (d / "in1_input").exists() and (d / "curr1_input").exists():
        def watts():
            return read_number(d / "in1_input", read) * read_number(d / "curr1_input", read) * 1e-6
        how = "in1_input x curr1_input"
    else:
        raise MeterUnavailable(f"{d}: neither power1_input nor in1_input + curr1_input")
    watts()  # raises MeterUnavailable (permissions, garbage) before the meter is offered
    return watts, how


def find_ina_meter(root=HWMON_ROOT, interval: float = 0.05, read=read_text,
                   clock=time.perf_counter) -> SampledPowerMeter:
    """The first readable INA2xx monitor under `root`, as a meter; MeterUnavailable says why not."""
    root = sysfs_dir(root)
    reasons = []
    for dev in sorted(root.glob("hwmon*"), key=lambda p: (len(p.name), p.name)):
        try:
            name = read_name(dev / "name", read)
        except MeterUnavailable as e:
            reasons.append(str(e))
            continue
        if not _is_ina(name):
            continue
        try:
            watts, how = _power_reader(_attr_dir(dev), read)
        except MeterUnavailable as e:
            reasons.append(str(e))
            continue
        return SampledPowerMeter(watts, f"{name.upper()} power monitor ({dev.name}, {how}, "
                                        f"sampled every {interval * 1e3:.0f} ms)", interval, clock)
    if reasons:
        raise MeterUnavailable("; ".join(reasons))
    raise MeterUnavailable(f"no ina2xx device under {root}")
