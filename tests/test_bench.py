"""`haste-edge bench` and `haste-edge warmup`: every figure printed and stored, Ctrl-C, JSON, compare."""
from __future__ import annotations

import io
import itertools
import json
import re
import subprocess
import sys

import pytest

import haste_edge
from haste_edge import cli
from haste_edge.bench import warmup as warmup_mod
from haste_edge.bench.report import compare, format_report, write_json
from haste_edge.bench.run import BenchOptions, run_bench
from haste_edge.bench.timing import latency_stats, run_loop
from haste_edge.energy import estimate_joules

NO_METERS = {"hwmon_root": "/nonexistent/hwmon", "pmic_command": ("no-such-vcgencmd-here", "x"),
             "powercap_root": "/nonexistent/powercap"}


@pytest.fixture(scope="module")
def dense_macs():
    return sum(haste_edge.load().macs().values())


def test_bench_cli_prints_every_figure_and_json_holds_them(tmp_path, dense_macs):
    out_json = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "haste_edge.cli", "bench", "--runs", "4", "--warmup", "1",
                        "--idle-seconds", "0", "--json", str(out_json)], capture_output=True, text=True,
                       timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    r = json.loads(out_json.read_text())
    for label in ("machine: ", "threading layer", "threads ", "load model:", "first inference:",
                  "second inference:", "JIT (first - second inference)", "warm-up runs", "latency ms:",
                  "inferences/s", "peak resident", "dense:", "executed:", "energy per inference", "method:"):
        assert label in out, label
    st = r["steady"]
    assert st["count"] == 4 and r["warmup_runs"] == 1
    assert st["min_ms"] <= st["p50_ms"] <= st["p90_ms"] <= st["p99_ms"] <= st["max_ms"]
    assert f"mean {st['mean_ms']:.3f}" in out and f"p99 {st['p99_ms']:.3f}" in out
    assert f"{r['load_s']:.3f} s" in out and f"{r['peak_rss_mib']:.1f} MiB" in out
    assert r["macs"]["dense"]["mean"] == dense_macs == r["macs"]["executed"]["mean"]
    assert r["macs"]["inputs"] == len(haste_edge.sample_images())
    assert r["machine"]["cores"] >= 1 and r["machine"]["numba"] and r["peak_rss_mib"] > 0
    jit = r["startup"]["first_jit"]     # a fresh process: its first inference compiles or loads kernels
    assert jit["kernels_compiled"] + jit["kernels_loaded_from_cache"] >= 1
    assert r["startup"]["second_jit"]["kernels_compiled"] == 0
    assert f"{jit['kernels_loaded_from_cache']} loaded from the Numba disk cache" in out
    assert r["energy"]["gross_j_per_inference"] > 0 and r["energy"]["method"] in out


def test_bench_haste_random_inputs_spread_and_estimate():
    r = run_bench(haste="L=12,P=2", opts=BenchOptions(runs=8, warmup=0, input="random", probe=NO_METERS),
                  stream=io.StringIO())
    m = r["macs"]
    assert m["inputs"] == 8 and m["executed"]["std"] > 0 and m["executed"]["max"] < m["dense"]["mean"]
    assert m["overhead_ops"]["min"] > 0 and 0 < m["saved"]["mean"] < 1
    e = r["energy"]
    assert not e["measured"] and e["method"].startswith("ESTIMATE")
    assert [t["source"] for t in e["tried"]] == ["ina2xx hwmon", "Pi 5 PMIC", "RAPL"]
    # 8 timed runs cycle once through the 8 inputs: the estimate prices exactly their mean counts
    assert e["gross_j_per_inference"] == pytest.approx(
        estimate_joules(m["executed"]["mean"], m["overhead_ops"]["mean"]))
    assert e["net_j_per_inference"] == e["gross_j_per_inference"]
    assert "HASTE overhead ops" in format_report(r) and "ESTIMATE" in format_report(r)


def test_bench_with_a_power_meter_subtracts_idle():
    """The recorded INA226 reads a constant 3.12875 W: idle and loaded power are equal, net energy ~ 0."""
    from pathlib import Path
    probe = dict(NO_METERS, hwmon_root=Path(__file__).parent / "data" / "energy" / "hwmon_ina226")
    r = run_bench(opts=BenchOptions(runs=3, warmup=0, input="random", idle_seconds=0.05, probe=probe),
                  stream=io.StringIO())
    e = r["energy"]
    assert e["measured"] and "INA226" in e["method"] and e["tried"] == []
    assert e["idle_w"] == pytest.approx(3.12875) and e["mean_w"] == pytest.approx(3.12875)
    assert e["gross_j_per_inference"] == pytest.approx(3.12875 * e["window_s"] / 3)
    assert abs(e["net_j_per_inference"]) < 1e-9
    text = format_report(r)
    assert "net:" in text and "idle 3.129 W" in text


def test_threads_option_after_the_command(capsys):
    assert cli.main(["bench", "--threads", "1", "--runs", "1", "--warmup", "0", "--idle-seconds", "0"]) == 0
    assert "threads 1" in capsys.readouterr().out


def test_ctrl_c_prints_figures_so_far_writes_json_and_exits_130(tmp_path, capsys, monkeypatch):
    real_run = haste_edge.runtime.Model.run
    calls = itertools.count(1)
    before_loop = 2 + 8 + 1       # first and second inference, one per random input, one warm-up

    def run(self, *a, **k):
        if next(calls) == before_loop + 4:
            raise KeyboardInterrupt
        return real_run(self, *a, **k)
    monkeypatch.setattr(haste_edge.runtime.Model, "run", run)
    out_json = tmp_path / "r.json"
    rc = cli.main(["bench", "--runs", "50", "--warmup", "1", "--input", "random", "--idle-seconds", "0",
                   "--json", str(out_json)])
    assert rc == 130
    out = capsys.readouterr().out
    r = json.loads(out_json.read_text())
    assert r["interrupted"] and r["steady"]["count"] == 3 and len(r["times_ms"]) == 3
    assert "INTERRUPTED" in out and "runs: 3 in" in out


def test_latency_stats_and_timed_loop_with_a_fake_clock():
    st = latency_stats([i / 1e3 for i in range(1, 101)], wall_s=5.05)
    assert st["count"] == 100 and st["p50_ms"] == pytest.approx(50.5) and st["p90_ms"] == pytest.approx(90.1)
    assert st["min_ms"] == pytest.approx(1) and st["inferences_per_s"] == pytest.approx(100 / 5.05)
    assert latency_stats([], 0.0) == {"count": 0}
    ticks = itertools.count()
    clock = lambda: next(ticks) * 0.25   # noqa: E731
    log = io.StringIO()
    done = []
    res = run_loop(lambda i: done.append(i), seconds=3.0, stream=log, clock=clock)
    assert res.times and all(t == pytest.approx(0.25) for t in res.times) and not res.interrupted
    assert done == list(range(len(done))) and res.wall_s >= 3.0
    assert re.search(r"bench: \d+ \(3 s\) runs, \d+ s, mean 250\.00 ms", log.getvalue())


def test_write_json_is_atomic(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})      # fails half-way through serialising
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def _result(mean_ms, executed):
    return {"format": "haste-edge bench", "model": {"path": "m.haste", "haste": None},
            "machine": {"machine": "x86_64", "cpu": "cpu", "threads": 1},
            "steady": {"mean_ms": mean_ms}, "macs": {"executed": {"mean": executed}}, "times_ms": [1.0]}


def test_compare_side_by_side(tmp_path, capsys):
    text = compare(_result(4.0, 100.0), _result(6.0, 50.0))
    row = next(line for line in text.splitlines() if line.startswith("steady.mean_ms"))
    assert row.split()[1:] == ["4", "6", "1.500"]
    row = next(line for line in text.splitlines() if line.startswith("macs.executed.mean"))
    assert row.split()[-1] == "0.500" and "times_ms" not in text
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_json(a, _result(4.0, 100.0))
    write_json(b, _result(2.0, 100.0))
    assert cli.main(["bench", "--compare", str(a), str(b)]) == 0
    assert "0.500" in capsys.readouterr().out
    b.write_text("{\"format\": \"other\"}")
    assert cli.main(["bench", "--compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a haste-edge bench result" in err and err.count("\n") == 0


def test_bench_bad_input_is_one_line(capsys):
    assert cli.main(["bench", "--input", "/nonexistent/x.png", "--runs", "1"]) == 2
    assert cli.main(["bench", "--runs", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no such file" in err[0] and "--runs" in err[1]


def test_warmup_cli_reports_start_before_and_after(capsys):
    assert cli.main(["warmup"]) == 0
    out = capsys.readouterr().out
    assert "before warm-up" in out and "after warm-up" in out and "cold (empty cache)" not in out
    after = next(line for line in out.splitlines() if "after warm-up" in line)
    compiled, uncachable = map(int, re.search(r"(\d+) compiled \((\d+) not cachable\)", after).groups())
    assert compiled == uncachable          # everything cachable came from the cache
    assert "cache filled" in out


def test_warmup_warns_when_the_cache_does_not_take(monkeypatch):
    run = {"numba_cache_dir": "/ro", "process_s": 1.0, "runs": [
        {"haste": None, "first_inference_s": 1.0, "kernels_compiled": 3, "kernels_loaded_from_cache": 0,
         "kernels_compiled_uncachable": 1}]}
    monkeypatch.setattr(warmup_mod, "start_in_subprocess", lambda *a, **k: run)
    text = warmup_mod.format_warmup(warmup_mod.run_warmup(cold=True))
    assert "cold (empty cache)" in text and "2 cachable kernel(s) were still compiled" in text
    assert warmup_mod.warm_specs("L=10") == ["L=10", warmup_mod.ALL_CONVS_HASTE]
