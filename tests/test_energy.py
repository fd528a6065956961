"""Energy meters against recorded sysfs trees and recorded `vcgencmd` output (tests/data/energy)."""
from __future__ import annotations

import itertools
import os
import shutil
import sys
from pathlib import Path

import pytest

from haste_edge.energy import MeterUnavailable, OpCountEstimate, estimate_joules, measure_idle_watts, probe_meter
from haste_edge.energy.hwmon import find_ina_meter
from haste_edge.energy.pmic import find_pmic_meter, parse_pmic_adc, rails_watts
from haste_edge.energy.rapl import counter_delta, find_rapl_meter
from haste_edge.energy.sampling import integrate
from haste_edge.energy.sysfs import read_text

DATA = Path(__file__).parent / "data" / "energy"
PI5_WATTS = 2.8526673497221426   # sum of V*I over the 12 paired rails of pmic_read_adc_pi5.txt, by hand
NOWHERE = {"hwmon_root": DATA / "absent", "pmic_command": ("no-such-vcgencmd-here", "pmic_read_adc"),
           "powercap_root": DATA / "absent"}


def fake_clock(step=0.5):
    """A clock advancing `step` seconds per reading: energy figures become exact, not timing-bound."""
    ticks = itertools.count()
    return lambda: next(ticks) * step


def copy_tree(name, tmp_path) -> Path:
    dst = tmp_path / name
    shutil.copytree(DATA / name, dst)
    return dst


def denying(*names):
    """A sysfs reader that raises PermissionError for files with these names (root ignores chmod)."""
    def read(path):
        if Path(path).name in names:
            raise PermissionError(13, "Permission denied", str(path))
        return read_text(path)
    return read


def test_integrate_trapezoid():
    assert integrate([0.0, 1.0, 3.0], [2.0, 4.0, 4.0]) == pytest.approx(3.0 + 8.0)
    assert integrate([5.0], [9.0]) == 0.0


# --- INA2xx through hwmon -------------------------------------------------------------------------

@pytest.mark.parametrize("tree, watts, chip", [
    ("hwmon_ina226", 3.12875, "INA226"),                  # power1_input, skipping the thermal zone
    ("hwmon_ina219_no_power", 5.056 * 0.431, "INA219"),   # in1_input (mV) x curr1_input (mA)
    ("hwmon_ina260_device_dir", 4.375, "INA260"),         # attributes under device/
])
def test_ina_meter_integrates_recorded_power(tree, watts, chip):
    meter = find_ina_meter(DATA / tree, interval=0.01, clock=fake_clock())
    assert chip in meter.method
    meter.begin()
    joules = meter.end()
    info = meter.info()
    assert info["samples"] >= 2 and info["window_s"] > 0
    assert joules == pytest.approx(watts * info["window_s"])


def test_ina_absent_and_unreadable():
    with pytest.raises(MeterUnavailable, match="no ina2xx device"):
        find_ina_meter(DATA / "hwmon_none")
    with pytest.raises(MeterUnavailable, match="power1_input: permission denied"):
        find_ina_meter(DATA / "hwmon_ina226", read=denying("power1_input"))
    with pytest.raises(MeterUnavailable, match="no such directory"):
        find_ina_meter(DATA / "absent")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_ina_unreadable_file_for_real(tmp_path):
    tree = copy_tree("hwmon_ina226", tmp_path)
    (tree / "hwmon1" / "power1_input").chmod(0)
    with pytest.raises(MeterUnavailable, match="permission denied"):
        find_ina_meter(tree)


def test_ina_garbage_value(tmp_path):
    tree = copy_tree("hwmon_ina226", tmp_path)
    (tree / "hwmon1" / "power1_input").write_text("n/a\n")
    with pytest.raises(MeterUnavailable, match="not a number"):
        find_ina_meter(tree)


# --- Raspberry Pi 5 PMIC --------------------------------------------------------------------------

def test_parse_pmic_pairs_rails_by_name():
    rails = parse_pmic_adc((DATA / "pmic_read_adc_pi5.txt").read_text())
    assert len(rails) == 12 and "EXT5V" not in rails and "BATT" not in rails   # volts only
    assert rails["VDD_CORE"] == (0.81234567, 2.12345678)
    assert rails_watts(rails) == pytest.approx(PI5_WATTS)
    assert parse_pmic_adc((DATA / "pmic_read_adc_pi4.txt").read_text()) == {}


def test_pmic_meter_runs_the_injected_command():
    cmd = ("cat", str(DATA / "pmic_read_adc_pi5.txt"))
    meter = find_pmic_meter(cmd, interval=0.01, clock=fake_clock())
    assert "PMIC" in meter.method and len(meter.rails) == 12
    meter.begin()
    joules = meter.end()
    assert joules == pytest.approx(PI5_WATTS * meter.info()["window_s"])


def test_pmic_missing_tool_and_unsupported_board():
    with pytest.raises(MeterUnavailable, match="not found on PATH"):
        find_pmic_meter(("no-such-vcgencmd-here", "pmic_read_adc"))
    with pytest.raises(MeterUnavailable, match="no rail current/voltage pairs"):
        find_pmic_meter(("cat", str(DATA / "pmic_read_adc_pi4.txt")))
    failing = (sys.executable, "-c", "import sys; print('VCHI initialization failed'); sys.exit(255)")
    with pytest.raises(MeterUnavailable, match="exit 255.*VCHI initialization failed"):
        find_pmic_meter(failing)


# --- RAPL -----------------------------------------------------------------------------------------

def test_counter_delta_wraps():
    assert counter_delta(100.0, 250.0, 1000.0) == 150.0
    assert counter_delta(900.0, 50.0, 1000.0) == 150.0


def test_rapl_uses_package_zones_only():
    meter = find_rapl_meter(DATA / "powercap")
    assert meter.info()["zones"] == ["intel-rapl:0:package-0"]   # not core/uncore, psys, mmio
    assert "RAPL" in meter.method


def test_rapl_counter_wrap_between_begin_and_end(tmp_path):
    root = copy_tree("powercap", tmp_path)
    meter = find_rapl_meter(root, interval=3600)       # no background read in between
    meter.begin()
    (root / "intel-rapl:0" / "energy_uj").write_text("1700000\n")  # wrapped past 262143328850
    joules = meter.end()
    assert joules == pytest.approx((262143328850 - 262140000000 + 1700000) * 1e-6)   # 5.02885 J


def test_rapl_background_reads_count_several_wraps(tmp_path):
    root = copy_tree("powercap", tmp_path)
    meter = find_rapl_meter(root, interval=3600)
    meter.begin()
    counter = root / "intel-rapl:0" / "energy_uj"
    for value in (1000000, 262000000000, 2000000):    # wrap, climb, wrap again
        counter.write_text(f"{value}\n")
        meter._accumulate()                            # what the background thread does every interval
    joules = meter.end()
    span = 262143328850
    assert joules == pytest.approx((span - 262140000000 + 1000000 + 262000000000 - 1000000
                                    + span - 262000000000 + 2000000) * 1e-6)


def test_rapl_root_only_counter_is_unavailable():
    with pytest.raises(MeterUnavailable, match="energy_uj: permission denied.*root-only"):
        find_rapl_meter(DATA / "powercap", read=denying("energy_uj"))
    with pytest.raises(MeterUnavailable, match="no such directory"):
        find_rapl_meter(DATA / "absent")


# --- estimate and probing -------------------------------------------------------------------------

def test_estimate_prices_counted_ops():
    assert estimate_joules(1e9, 0) == pytest.approx(4.6e-3)          # 1 GMAC at 4.6 pJ
    assert estimate_joules(0, 1e9) == pytest.approx(0.9e-3)
    done = [0.0, 0.0]
    meter = OpCountEstimate(lambda: tuple(done))
    meter.begin()
    done[:] = [2e8, 5e7]
    assert meter.end() == pytest.approx(estimate_joules(2e8, 5e7))
    assert not meter.measured and "ESTIMATE" in meter.method and "Horowitz" in meter.method


def test_probe_order_ina_first():
    probe = probe_meter(None, hwmon_root=DATA / "hwmon_ina226", powercap_root=DATA / "powercap",
                        pmic_command=("cat", str(DATA / "pmic_read_adc_pi5.txt")))
    assert "INA226" in probe.meter.method and probe.tried == []


def test_probe_moves_on_past_unreadable_and_missing_sources():
    probe = probe_meter(None, hwmon_root=DATA / "hwmon_ina226", powercap_root=DATA / "powercap",
                        pmic_command=NOWHERE["pmic_command"], read=denying("power1_input"))
    assert "RAPL" in probe.meter.method
    reasons = dict(probe.tried)
    assert "permission denied" in reasons["ina2xx hwmon"]
    assert "not found on PATH" in reasons["Pi 5 PMIC"]
    probe = probe_meter(None, hwmon_root=DATA / "hwmon_none", powercap_root=DATA / "powercap",
                        pmic_command=("cat", str(DATA / "pmic_read_adc_pi5.txt")))
    assert "PMIC" in probe.meter.method and len(probe.tried) == 1


def test_probe_falls_back_to_the_estimate():
    probe = probe_meter(lambda: (0, 0), **NOWHERE)
    assert isinstance(probe.meter, OpCountEstimate) and [s for s, _ in probe.tried] == \
        ["ina2xx hwmon", "Pi 5 PMIC", "RAPL"]
    assert probe_meter(None, **NOWHERE).meter is None


def test_idle_watts_from_a_meter():
    meter = find_ina_meter(DATA / "hwmon_ina226", interval=0.01, clock=fake_clock(0.25))
    assert measure_idle_watts(meter, 0.0, sleep=lambda s: None) == pytest.approx(3.12875)
