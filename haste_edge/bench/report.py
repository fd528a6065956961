"""Bench results as text, as a JSON file, and two result files side by side."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from haste_edge.bench.machine import header_lines
from haste_edge.bench.run import FORMAT
from haste_edge.errors import InputError


def _macs(m: float) -> str:
    return f"{m / 1e6:.2f} M"


def _spread_line(s: dict, fmt) -> str:
    if s["std"] == 0:
        return f"{fmt(s['mean'])} (same for every input)"
    return f"mean {fmt(s['mean'])}, std {fmt(s['std'])}, min {fmt(s['min'])}, max {fmt(s['max'])}"


def _joules(j: float) -> str:
    return f"{j * 1e3:.4g} mJ" if j >= 1e-4 else f"{j * 1e6:.4g} uJ"


def _startup(r: dict) -> list[str]:
    s = r["startup"]
    j1 = s["first_jit"]
    kernels = (f"{j1['kernels_compiled']} kernel(s) compiled ({j1['kernels_compiled_uncachable']} not cachable), "
               f"{j1['kernels_loaded_from_cache']} loaded from the Numba disk cache")
    cache = ("cold: kernels compiled now and saved to the cache" if j1["kernels_compiled"] >
             j1["kernels_compiled_uncachable"] else "warm: every cachable kernel came from the disk cache")
    return ["start-up",
            f"  load model:        {r['load_s']:.3f} s",
            f"  first inference:   {s['first_inference_s']:.3f} s  ({kernels})",
            f"  second inference:  {s['second_inference_s']:.3f} s",
            f"  JIT (first - second inference): {s['compile_estimate_s']:.3f} s; Numba's own timers: "
            f"{j1['seconds_compiling']:.3f} s compiling, {j1['seconds_loading_cache']:.3f} s loading cached code",
            f"  cache {s['numba_cache_dir']}: {cache}"]


def _steady(r: dict) -> list[str]:
    st = r.get("steady") or {"count": 0}
    head = f"steady state (after {r.get('warmup_runs', 0)} warm-up runs)"
    if not st["count"]:
        return [head, "  no timed runs"]
    return [head,
            f"  runs: {st['count']} in {st['wall_s']:.2f} s",
            f"  latency ms: mean {st['mean_ms']:.3f}  std {st['std_ms']:.3f}  min {st['min_ms']:.3f}  "
            f"p50 {st['p50_ms']:.3f}  p90 {st['p90_ms']:.3f}  p99 {st['p99_ms']:.3f}  max {st['max_ms']:.3f}",
            f"  throughput: {st['inferences_per_s']:.1f} inferences/s (timed runs / wall time of the loop)"]


def _macs_lines(r: dict) -> list[str]:
    m = r["macs"]
    lines = [f"MACs per inference (one untimed run of each of the {m['inputs']} inputs)",
             f"  dense:    {_spread_line(m['dense'], _macs)}",
             f"  executed: {_spread_line(m['executed'], _macs)}"]
    if m["overhead_ops"]["max"] > 0:
        pct = lambda v: f"{v:.1%}"  # noqa: E731
        method = "HTTM" if r["model"].get("httm") else "HASTE"
        lines += [f"  {method} overhead ops: {_spread_line(m['overhead_ops'], _macs)}",
                  f"  saved: {_spread_line(m['saved'], pct)}; counting overhead as MACs: "
                  f"{_spread_line(m['saved_with_overhead'], pct)}"]
    return lines


def _energy(r: dict) -> list[str]:
    e = r.get("energy")
    if not e:
        return ["energy per inference: not measured (no timed runs)"]
    if e.get("error"):
        return [f"energy per inference: meter failed: {e['error']}"]
    lines = ["energy per inference", f"  method: {e['method']}"]
    if e["measured"]:
        lines += [f"  gross: {_joules(e['gross_j_per_inference'])} (mean power {e['mean_w']:.3f} W over "
                  f"{e['window_s']:.2f} s)",
                  f"  net:   {_joules(e['net_j_per_inference'])} (idle {e['idle_w']:.3f} W, measured over "
                  f"{e['idle_window_s']:.2f} s before the timed runs, subtracted)"]
    else:
        lines += [f"  estimate: {_joules(e['gross_j_per_inference'])} (gross = net: counted arithmetic has "
                  f"no idle share)"]
    if e["tried"]:
        lines.append("  not available here: " + "; ".join(f"{t['source']}: {t['reason']}" for t in e["tried"]))
    return lines


def format_report(r: dict) -> str:
    model = Path(r["model"]["path"]).name
    mode = (f"HASTE {r['model']['haste']} on {r['model'].get('haste_convs', '?')} convs"
            if r["model"]["haste"] else "dense")
    if r["model"].get("httm"):
        mode = f"HTTM {r['model']['httm']} on {r['model'].get('httm_layers', '?')} attention layers"
    lines = [f"haste-edge bench: {model}, {mode}, batch 1"]
    if "machine" in r:
        lines += header_lines(r["machine"])
    if "input" in r["settings"]:
        lines.append(f"input: {r['settings']['input']}")
    if r["interrupted"]:
        lines.append("INTERRUPTED: figures below cover the runs completed before Ctrl-C")
    if "startup" in r:
        lines += _startup(r)
    if "macs" in r:
        lines += _steady(r) + _macs_lines(r) + _energy(r)
    mem = f"memory: peak resident {r['peak_rss_mib']:.1f} MiB (ru_maxrss)"
    if "peak_rss_after_load_mib" in r:
        mem += f"; after loading the model {r['peak_rss_after_load_mib']:.1f} MiB"
    if "arena_mib" in r:
        mem += f"; activation buffers {r['arena_mib']:.2f} MiB"
    if "kernel_state_mib" in r:
        mem += f"; kernel state (packed weights, HASTE set-up) {r['kernel_state_mib']:.2f} MiB"
    lines.append(mem)
    return "\n".join(lines)


def write_json(path, result: dict) -> None:
    """Write atomically: a reader never sees half a file, an interrupted write leaves the old one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a result file is for others to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_result(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        r = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a JSON file ({e})") from None
    if not isinstance(r, dict) or r.get("format") != FORMAT:
        raise InputError(f"{path}: not a haste-edge bench result (written by `haste-edge bench --json`)")
    return r


def _numbers(d, prefix="") -> dict[str, float]:
    """Flatten nested dicts to 'a.b.c' -> number (lists and text are left out)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_numbers(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def compare(a: dict, b: dict, name_a: str = "a", name_b: str = "b") -> str:
    """Every number of two result files side by side, with the ratio b / a."""
    na, nb = _numbers(a), _numbers(b)
    keys = list(na) + [k for k in nb if k not in na]
    w = max(len(k) for k in keys)
    lines = []
    for label, r in ((name_a, a), (name_b, b)):
        m = r.get("machine", {})
        lines.append(f"{label}: {Path(r['model']['path']).name} {r['model']['haste'] or 'dense'} on "
                     f"{m.get('machine', '?')} {m.get('cpu', '?')}, threads {m.get('threads', '?')}")
    lines.append(f"{'figure':<{w}}  {'a':>14}  {'b':>14}  {'b / a':>8}")
    for k in keys:
        x, y = na.get(k), nb.get(k)
        ratio = f"{y / x:8.3f}" if x not in (None, 0) and y is not None else f"{'':>8}"
        fx = f"{x:14.6g}" if x is not None else f"{'-':>14}"
        fy = f"{y:14.6g}" if y is not None else f"{'-':>14}"
        lines.append(f"{k:<{w}}  {fx}  {fy}  {ratio}")
    return "\n".join(lines)
