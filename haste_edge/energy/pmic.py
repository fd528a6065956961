"""Raspberry Pi 5 PMIC rails through `vcgencmd pmic_read_adc`.

The command prints one line per ADC channel, e.g.

       VDD_CORE_A current(7)=2.12345678A
       VDD_CORE_V volt(15)=0.81234567V

Currents and voltages are paired by rail name (VDD_CORE) and V * I summed over the rails. The PMIC
sees the SoC, memory and I/O rails, not the 5 V input: USB devices, the fan and conversion losses are
not in this figure.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import time

from haste_edge.energy.base import MeterUnavailable
from haste_edge.energy.sampling import SampledPowerMeter

PMIC_COMMAND = ("vcgencmd", "pmic_read_adc")

_LINE = re.compile(r"^\s*(?P<rail>\S+)_(?P<kind>[AV])\s+(?:current|volt)\(\d+\)=(?P<value>[-+0-9.eE]+)[AV]\s*$")


def parse_pmic_adc(text: str) -> dict[str, tuple[float, float]]:
    """Rail name -> (volts, amps) for the rails with both readings."""
    amps, volts = {}, {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            (amps if m["kind"] == "A" else volts)[m["rail"]] = float(m["value"])
    return {r: (volts[r], amps[r]) for r in sorted(amps.keys() & volts.keys())}


def rails_watts(rails: dict[str, tuple[float, float]]) -> float:
    return sum(v * a for v, a in rails.values())


def _reader(command, run):
    def read_rails():
        try:
            r = run(list(command), capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError) as e:
            raise MeterUnavailable(f"{' '.join(command)}: {e}") from None
        if r.returncode != 0:
            first = (r.stderr or r.stdout).strip().splitlines()[:1]
            raise MeterUnavailable(f"{' '.join(command)} failed (exit {r.returncode}): {' '.join(first)}")
        rails = parse_pmic_adc(r.stdout)
        if not rails:
            first = r.stdout.strip().splitlines()[:1]
            raise MeterUnavailable(f"{' '.join(command)}: no rail current/voltage pairs in its output "
                                   f"({' '.join(first)[:60]!r}; a Raspberry Pi 5 is needed)")
        return rails
    return read_rails


def find_pmic_meter(command=PMIC_COMMAND, interval: float = 0.25, run=subprocess.run,
                    clock=time.perf_counter) -> SampledPowerMeter:
    """A meter summing the Pi 5 PMIC rails; MeterUnavailable if the tool is missing or says nothing useful."""
    command = tuple(command)
    if shutil.which(command[0]) is None:
        raise MeterUnavailable(f"{command[0]} not found on PATH")
    read_rails = _reader(command, run)
    rails = read_rails()
    meter = SampledPowerMeter(lambda: rails_watts(read_rails()),
                              f"Raspberry Pi 5 PMIC rails, sum of V x I over {len(rails)} rails "
                              f"(`{' '.join(command)}`, sampled every {interval * 1e3:.0f} ms; "
                              f"excludes the 5 V input, USB and fan)", interval, clock)
    meter.rails = sorted(rails)
    return meter
