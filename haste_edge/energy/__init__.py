"""Energy per inference: meters behind one interface (begin() ... end() -> joules, plus `method`).

  base.py      EnergyMeter, MeterUnavailable
  sampling.py  background polling and power integration shared by the sampled meters
  hwmon.py     INA219/INA226/INA260 power monitors through the Linux ina2xx hwmon driver
  pmic.py      Raspberry Pi 5 PMIC rails through `vcgencmd pmic_read_adc`
  rapl.py      x86 RAPL package counters through /sys/class/powercap
  estimate.py  counted operations x per-operation energy (an estimate, not a measurement)
  probe.py     probe_meter(): the first readable source in that order; measure_idle_watts()
"""
from haste_edge.energy.base import EnergyMeter, MeterUnavailable  # noqa: F401
from haste_edge.energy.estimate import OpCountEstimate, estimate_joules  # noqa: F401
from haste_edge.energy.probe import Probe, measure_idle_watts, probe_meter  # noqa: F401
