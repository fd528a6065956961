"""cpuload.OtherLoad sees another process's busy core and not this process's own work."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from haste_edge.cpuload import OtherLoad

pytestmark = pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux's /proc/stat")


def _spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: the spinner and this process share it")
def test_a_busy_process_counts():
    load = OtherLoad(interval=0.0)
    p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        load.cores()                      # start the window with the spinner running
        time.sleep(0.5)
        assert load.cores() > 0.5
    finally:
        p.kill()
        p.wait()


def test_own_work_does_not_count_as_others():
    load = OtherLoad(interval=0.0)
    time.sleep(0.5)
    idle_others = load.cores()            # the rest of the machine while this process sleeps
    _spin(0.5)
    mine = load.cores()                   # ... and while it spins
    assert mine < idle_others + 0.5, (mine, idle_others)


def test_readings_are_reused_within_the_interval():
    load = OtherLoad(interval=60.0)
    assert load.cores() is None           # no full interval yet
