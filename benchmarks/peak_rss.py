"""Peak resident memory of a process that loads a model from its .haste file and runs it.

    python benchmarks/peak_rss.py [--runs 20] [--threads 1 2] [--baseline DIR] [--name NAME]

Each measurement is a fresh Python process (kernels from the warm Numba cache): import, load, run
--runs times on one image, then ru_maxrss. Also the resident memory after each phase, and the
bytes the kernels keep (Model.kernel_state_bytes). --baseline DIR measures another checkout of
haste-edge the same way (its haste_edge package first on the path), alternating with this one.
Writes benchmarks/results/<NAME>.md and .json (default peak_rss_<arch>).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from common import header, write_results

ROOT = Path(__file__).resolve().parent.parent

PROBE = r"""
import json, resource, sys
def mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
import numpy as np
import haste_edge
from haste_edge import threads
threads.set_threads(int(sys.argv[1]))
after_import = mib()
model = haste_edge.load()
after_load = mib()
x = np.random.default_rng(0).random(model.input_shape(1), dtype=np.float32)
for _ in range(int(sys.argv[2])):
    model.run({model.input_names[0]: x})
print(json.dumps({"import": after_import, "load": after_load, "runs": mib(),
                  "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "kernel_state": model.kernel_state_bytes() / 2**20, "package": haste_edge.__file__}))
"""


def measure(checkout: Path, threads: int, runs: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    out = subprocess.run([sys.executable, "-c", PROBE, str(threads), str(runs)], env=env, cwd=checkout,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline", type=Path, default=None, help="another checkout of haste-edge")
    ap.add_argument("--name", default=f"peak_rss_{platform.machine()}")
    args = ap.parse_args()
    sides = [("this", ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    for _, path in sides:                      # warm each side's kernel cache
        measure(path, 1, 1)
    rows = []
    for threads in args.threads:
        for side, path in sides:
            got = [measure(path, threads, args.runs) for _ in range(args.repeats)]
            rows.append({"side": side, "checkout": str(path), "threads": threads, "measurements": got})
    lines = [f"# Peak RSS of the bundled model: a process loading it and running it {args.runs} times", "",
             header(), "",
             "| side | threads | after import MiB | after load MiB | after runs MiB | peak MiB (min-max) | kernel state MiB |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["measurements"]
        peaks = [x["peak"] for x in m]
        lines.append(f"| {r['side']} | {r['threads']} | {m[0]['import']:.1f} | {m[0]['load']:.1f} | {m[0]['runs']:.1f} | "
                     f"{min(peaks):.1f}-{max(peaks):.1f} | {m[0]['kernel_state']:.2f} |")
    if args.baseline:
        lines += ["", f"baseline: {args.baseline}"]
    write_results(args.name, lines, {"runs": args.runs, "rows": rows})


if __name__ == "__main__":
    main()
