"""What a benchmark ran on: printed in every header and stored in every result file."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's marketing name (x86 'model name'; ARM boards name the SoC or the board instead)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    for key in ("model name", "hardware", "cpu model"):
        for line in lines:
            if line.lower().startswith(key):
                return line.split(":", 1)[1].strip()
    try:  # Raspberry Pi and other device-tree boards
        return Path("/proc/device-tree/model").read_text().strip("\x00\n ")
    except OSError:
        return platform.processor() or platform.machine()


def machine_info() -> dict:
    import numba
    import numpy as np

    from haste_edge import __version__, microkernel
    from haste_edge.prom import dot
    from haste_edge.threads import blas_threads, get_threads, threading_layer
    return {"machine": platform.machine(), "cpu": cpu_model(), "cores": os.cpu_count(),
            "system": f"{platform.system()} {platform.release()}", "hostname": platform.node(),
            "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
            "threading_layer": threading_layer(), "threads": get_threads(), "blas_threads": blas_threads(),
            "microkernel": microkernel.describe(), "prom_dot": dot.KIND or "none", "haste_edge": __version__}


def header_lines(m: dict) -> list[str]:
    return [f"machine: {m['machine']}, {m['cpu']}, {m['cores']} cores, {m['system']}",
            f"python {m['python']}, numpy {m['numpy']}, numba {m['numba']} (threading layer "
            f"{m['threading_layer']}), haste-edge {m['haste_edge']}, threads {m['threads']} "
            f"(BLAS {m.get('blas_threads')}), {m.get('microkernel')}, PROM int8 dot products "
            f"{m.get('prom_dot', 'none')}"]
