"""Fuzz the loaders and the runtime with mutated model files (tools/fuzz_cases.py) and classify each case.

    python3 tools/fuzz_models.py --cases 5000 --seed 1

Cases run one at a time in a worker process with an address-space limit (RLIMIT_AS) and a per-case
timeout; the worker is restarted after a crash or a hang. Each case is loaded with haste_edge.load,
run on a random batch of 1, and, where the engine runs an ONNX file, also given to onnxruntime.
Outcome classes: ok, refused (the project's own error, one line), bug (any other exception, or an
error message over several lines), crash (killed by a signal), hang (timeout), memory (MemoryError),
nan (a NaN output). Where the engine runs an ONNX file onnxruntime refuses, the case is counted in
"ort refuses, we run" too, and a NaN there is its own class (nan_ort_refuses).
The worker is also restarted every --restart-every cases, so that whatever one case leaves behind
cannot show up in unrelated later ones (kernel state lives with each model, so a worker that loads
thousands of models does not grow: tests/test_model_lifetime.py; a large --restart-every shows it).
Prints and writes the table to benchmarks/results/fuzz_summary.md.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.fuzz_cases import Case, make_case  # noqa: E402

CASE_LIMIT = 256 << 20      # haste_edge's memory limit during fuzzing: a blow-up is refused early
CLASSES = ["ok", "refused", "bug", "crash", "hang", "memory", "nan", "nan_ort_refuses"]


def write_case(case: Case, directory: Path) -> Path:
    for name, blob in case.files.items():
        p = directory / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(blob)
    return directory / case.main


def run_ours(path: Path, seed: int) -> tuple[dict, dict | None]:
    """Load and run one file. Returns (result, feeds); feeds is None unless the engine ran."""
    import haste_edge
    try:
        model = haste_edge.load(path)
        rng = np.random.default_rng(seed)
        feeds = {k: rng.standard_normal(model.input_shape(1, k)).astype(np.float32) for k in model.input_names}
        outs = model.run(feeds)
    except haste_edge.HasteEdgeError as e:
        if "\n" in str(e):
            return {"outcome": "bug", "detail": f"multi-line {type(e).__name__}: {str(e)[:300]}"}, None
        return {"outcome": "refused", "detail": f"{type(e).__name__}: {str(e)[:300]}"}, None
    except MemoryError as e:
        return {"outcome": "memory", "detail": f"MemoryError: {str(e)[:300]}"}, None
    except BaseException as e:  # noqa: BLE001  everything else is a finding
        if isinstance(e, KeyboardInterrupt):
            raise
        return {"outcome": "bug", "detail": f"{type(e).__name__}: {str(e)[:300]}"}, None
    nan = any(np.isnan(v).any() for v in outs.values())
    return {"outcome": "nan" if nan else "ok", "detail": ""}, feeds


def run_ort(path: Path, feeds: dict) -> dict:
    import onnxruntime as ort
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        sess.run(None, feeds)
    except Exception as e:  # noqa: BLE001  onnxruntime's refusal, whatever its type
        return {"ort": "refuses", "ort_detail": str(e).splitlines()[0][:200] if str(e) else type(e).__name__}
    return {"ort": "runs"}


def run_case_inprocess(case: Case, seed: int, with_ort: bool = True) -> dict:
    """One case in this process (the quick test): no crash or hang detection."""
    with tempfile.TemporaryDirectory() as d:
        path = write_case(case, Path(d))
        res, feeds = run_ours(path, seed)
        if feeds is not None and case.kind == "onnx" and with_ort:
            res.update(run_ort(path, feeds))
    return classify(case, res)


def classify(case: Case, res: dict) -> dict:
    res["case"] = case.name
    if res.get("ort") == "refuses" and res["outcome"] == "nan":
        res["outcome"] = "nan_ort_refuses"
    return res


# ---------------------------------------------------------------------------------------------
# worker process: reads case paths from stdin, answers on its own copy of stdout
# ---------------------------------------------------------------------------------------------

def worker(extra_as: int) -> None:
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the protocol
    import onnxruntime  # noqa: F401  (loaded before the address-space limit)

    import haste_edge
    from haste_edge import limits
    limits.set_max_bytes(CASE_LIMIT)
    haste_edge.load().run({"input": np.zeros((1, 1, 28, 28), np.float32)})  # compile kernels first
    with open("/proc/self/statm") as f:
        vsz = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (vsz + extra_as, resource.RLIM_INFINITY))
    out.write("ready\n")
    for line in sys.stdin:
        job = json.loads(line)
        path = Path(job["path"])
        res, feeds = run_ours(path, job["seed"])
        out.write(json.dumps(res) + "\n")
        if feeds is not None and job["kind"] == "onnx":
            out.write(json.dumps(run_ort(path, feeds)) + "\n")
        else:
            out.write("{}\n")


class Worker:
    def __init__(self, extra_as: int):
        self.extra_as = extra_as
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", "--extra-as", str(self.extra_as)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, cwd=ROOT)
        self.buf = b""
        if self._line(600) != "ready":
            raise RuntimeError("fuzz worker did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        if self.proc:
            self.proc.wait()
        self.proc = None

    def _line(self, timeout):
        """The worker's next line; None on timeout, "" when it has died. Reads the raw pipe: a buffered
        reader could hold the next line where select() does not see it."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return ""
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode().strip()

    def run(self, case: Case, path: Path, seed: int, timeout: float) -> dict:
        if self.proc is None:
            self.start()
        self.proc.stdin.write(json.dumps({"path": str(path), "seed": seed, "kind": case.kind}) + "\n")
        self.proc.stdin.flush()
        line = self._line(timeout)
        if not line:
            res = self._died(line)
            return classify(case, res)
        res = json.loads(line)
        second = self._line(timeout)
        if not second:  # onnxruntime itself crashed or hung on this file: not ours
            self.stop()
            res.update(ort="refuses", ort_detail="onnxruntime crashed or hung")
        else:
            res.update(json.loads(second))
        return classify(case, res)

    def _died(self, line) -> dict:
        if line is None:
            self.stop()
            return {"outcome": "hang", "detail": "timeout"}
        rc = self.proc.wait()
        self.proc = None
        if rc < 0:
            return {"outcome": "crash", "detail": f"signal {-rc}"}
        return {"outcome": "crash", "detail": f"worker exited with {rc}"}


# ---------------------------------------------------------------------------------------------

def summarise(results: list[dict], seed: int, seconds: float) -> str:
    counts = collections.Counter(r["outcome"] for r in results)
    ort_refuses_we_run = [r for r in results if r.get("ort") == "refuses" and r["outcome"] in
                          ("ok", "nan", "nan_ort_refuses")]
    lines = [f"Fuzz run: {len(results)} cases, seed {seed}, {seconds:.0f} s "
             f"(`python3 tools/fuzz_models.py {' '.join(sys.argv[1:])}`)", "",
             "| outcome | cases |", "|---|---:|"]
    lines += [f"| {c} | {counts.get(c, 0)} |" for c in CLASSES]
    lines += [f"| ort refuses, we run (all) | {len(ort_refuses_we_run)} |"]
    by_kind = collections.Counter(r["case"].split(":")[0] for r in results)
    lines += ["", "Cases per mutation family: " + ", ".join(f"{k} {v}" for k, v in sorted(by_kind.items()))]
    findings = [r for r in results if r["outcome"] in ("bug", "crash", "hang", "memory", "nan_ort_refuses")]
    if findings:
        lines += ["", "Findings (first 20):"]
        lines += [f"- case {r['index']} {r['case']}: {r['outcome']}: {r.get('detail', '')}" for r in findings[:20]]
    if ort_refuses_we_run:
        lines += ["", "onnxruntime refuses, the engine runs (first 10):"]
        lines += [f"- case {r['index']} {r['case']}: {r['outcome']}; onnxruntime: {r.get('ort_detail', '')[:150]}"
                  for r in ort_refuses_we_run[:10]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case before it counts as a hang")
    ap.add_argument("--extra-as", type=int, default=2 << 30,
                    help="address space the worker may add after start-up (bytes)")
    ap.add_argument("--restart-every", type=int, default=250, help="fresh worker after this many cases")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fuzz_summary.md"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.extra_as)
        return 0
    w = Worker(args.extra_as)
    results = []
    t0 = time.time()
    try:
        for i in range(args.cases):
            case = make_case(args.seed, i)
            if i % args.restart_every == 0:
                w.stop()
            with tempfile.TemporaryDirectory() as d:
                results.append(w.run(case, write_case(case, Path(d)), i, args.timeout))
            results[-1]["index"] = i
            if (i + 1) % 250 == 0:
                c = collections.Counter(r["outcome"] for r in results)
                print(f"{i + 1}/{args.cases} {dict(c)} {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    finally:
        w.stop()
    table = summarise(results, args.seed, time.time() - t0)
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table)
    bad = sum(r["outcome"] in ("bug", "crash", "hang", "memory", "nan_ort_refuses") for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
