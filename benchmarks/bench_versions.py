"""Two versions of the engine against onnxruntime: for a change that cannot be switched at run time
(a compiled loop order, say), its whole-model effect.

    python benchmarks/bench_versions.py --base REV --name NAME [--models ...] [--threads 1 2]
                                        [--rounds 2] [--runs 20]

The base revision is checked out into a temporary git worktree. Each round runs
benchmarks/bench_dense.py once in the base tree and once in the working tree, in alternating
order; every run measures its engine interleaved with onnxruntime in one process, so each
version's ratio to onnxruntime is a same-process measurement, and the table sets the two ratios
side by side (their quotient: this version / base; below 1 is faster). Writes
benchmarks/results/<NAME>.md and .json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, header, write_results


def run_dense(tree: Path, models, threads, runs) -> dict:
    with tempfile.TemporaryDirectory() as d:
        name = str(Path(d) / "dense")
        env = {**os.environ, "PYTHONPATH": str(tree)}
        subprocess.run([sys.executable, str(tree / "benchmarks" / "bench_dense.py"), "--runs", str(runs),
                        "--threads", *map(str, threads), "--models", *models, "--name", name],
                       cwd=tree, env=env, check=True, capture_output=True)
        rows = json.loads(Path(name + ".json").read_text())["rows"]
    return {(r["model"], r["threads"]): r["ratio"] for r in rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="git revision to compare against")
    ap.add_argument("--name", required=True, help="results file name")
    ap.add_argument("--models", nargs="+", default=["fashion_resnet18", "efficientnet_lite0", "mobilenetv2_224"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    base_rev = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as d:
        base = Path(d) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base), base_rev], cwd=ROOT, check=True)
        try:
            cache = ROOT / "tests" / ".cache"              # the exported test models, shared
            if cache.exists():
                (base / "tests" / ".cache").symlink_to(cache)
            ratios = {"base": [], "this": []}
            for r in range(args.rounds):
                order = [("base", base), ("this", ROOT)] if r % 2 == 0 else [("this", ROOT), ("base", base)]
                for label, tree in order:
                    ratios[label].append(run_dense(tree, args.models, args.threads, args.runs))
                    print(f"round {r + 1} {label}: " + ", ".join(f"{m} {t}t {v:.2f}" for (m, t), v in
                                                                  ratios[label][-1].items()), flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
    lines = [f"# This version against {base_rev}: whole models / onnxruntime, {args.rounds} alternating rounds "
             f"of bench_dense.py --runs {args.runs}", "", header(), "",
             "| model | threads | base / onnxruntime | this / onnxruntime | this / base |", "|---|---|---|---|---|"]
    rows = []
    for key in ratios["base"][0]:
        b = statistics.median(x[key] for x in ratios["base"])
        t = statistics.median(x[key] for x in ratios["this"])
        rows.append({"model": key[0], "threads": key[1], "base": b, "this": t,
                     "base_rounds": [x[key] for x in ratios["base"]], "this_rounds": [x[key] for x in ratios["this"]]})
        lines.append(f"| {key[0]} | {key[1]} | {b:.2f} | {t:.2f} | {t / b:.2f} |")
    write_results(args.name, lines, {"base": base_rev, "rounds": args.rounds, "runs": args.runs, "rows": rows})


if __name__ == "__main__":
    main()
