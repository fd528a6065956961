"""Pick the energy source: the first readable meter, else the operation-count estimate."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from haste_edge.energy.base import EnergyMeter, MeterUnavailable
from haste_edge.energy.estimate import OpCountEstimate
from haste_edge.energy.hwmon import HWMON_ROOT, find_ina_meter
from haste_edge.energy.pmic import PMIC_COMMAND, find_pmic_meter
from haste_edge.energy.rapl import POWERCAP_ROOT, find_rapl_meter
from haste_edge.energy.sysfs import read_text


@dataclass
class Probe:
    meter: EnergyMeter | None
    tried: list[tuple[str, str]] = field(default_factory=list)   # (source, why it was not used)


def probe_meter(op_counter=None, *, hwmon_root=HWMON_ROOT, pmic_command=PMIC_COMMAND,
                powercap_root=POWERCAP_ROOT, read=read_text, run=None) -> Probe:
    """INA2xx hwmon, then Pi 5 PMIC, then RAPL; then the estimate if `op_counter` is given."""
    import subprocess
    candidates = [("ina2xx hwmon", lambda: find_ina_meter(hwmon_root, read=read)),
                  ("Pi 5 PMIC", lambda: find_pmic_meter(pmic_command, run=run or subprocess.run)),
                  ("RAPL", lambda: find_rapl_meter(powercap_root, read=read))]
    tried = []
    for source, make in candidates:
        try:
            return Probe(make(), tried)
        except MeterUnavailable as e:
            tried.append((source, str(e)))
    return Probe(OpCountEstimate(op_counter) if op_counter is not None else None, tried)


def measure_idle_watts(meter: EnergyMeter, seconds: float, sleep=time.sleep) -> float:
    """Mean power over an idle window: what the machine draws when not running the model."""
    meter.begin()
    sleep(seconds)
    joules = meter.end()
    return joules / max(meter.elapsed, 1e-9)
