"""HASTE's cost model: a conv's time with HASTE against its dense time, predicted from shapes, the
setting and one bucket statistic (the kept fraction: buckets / C_in, averaged over patches).

Each phase of the kernel (kernel.PHASES) does work proportional to one count, fixed by the shapes:
    pad           C_in * Hp * Wp                                  (the channels-last padded copy)
    hash          patches * C_in * D * (L * (1 - s) + 4)          (projections, max |x|, centring;
                                                                    bucketing folded in)
    input_merge   patches * C_in * D
    filter_merge  patches * C_out * k^2 * C_in * (1 - kept)
    reduced_mac   kept * dense MACs       (gathered tiles and the plain loop each their own rate)
and the dense conv costs a * MACs + b * weights (arithmetic, and streaming its weights once).
D is a full patch's pixel count. The rates (seconds per count) are machine constants, measured
once by `calibrate` on synthetic layers (random post-ReLU maps, no data set), one ratio of sums
per phase and a least-squares fit for the dense conv. Nothing else: no per-model fitting, so the
predictions can be checked against a real model's measured layers
(benchmarks/haste_cost.py, README "HASTE and time").

Break-even: HASTE pays on a layer only if kept < kept_breakeven; its overhead alone (every term
but reduced_mac) costs time whatever the buckets, so kept_breakeven can be <= 0: no setting pays.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from haste_edge import __version__, microkernel
from haste_edge.bench.machine import cpu_model
from haste_edge.haste.config import LayerSetting
from haste_edge.haste.kernel import _SERIAL_MAX_PIXELS, gather_variant, haste_conv, profile_haste_conv
from haste_edge.haste.reference import STAT_FIELDS
from haste_edge.ops.conv import conv
from haste_edge.threads import get_threads, set_threads

PHASE_TERMS = {"pad": "pad", "hashing": "hash", "bucketing": "hash", "input_merge": "input_merge",
               "filter_merge": "filter_merge", "reduced_conv": "reduced_mac"}


@dataclass
class Rates:
    """Seconds per count of each term (module docstring); reduced_mac_plain for the plain loop."""
    pad: float
    hash: float
    input_merge: float
    filter_merge: float
    reduced_mac: float
    reduced_mac_plain: float
    dense_mac: float
    dense_weight: float

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Rates":
        return cls(**json.loads(text))


@dataclass(frozen=True)
class ConvShape:
    """What the model needs of one conv: channels, kernel, stride, dilation, input and output maps."""
    c_in: int
    c_out: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    h: int
    w: int
    ho: int
    wo: int

    @property
    def dense_macs(self) -> int:
        return self.c_out * self.c_in * self.kh * self.kw * self.ho * self.wo

    @property
    def weights(self) -> int:
        return self.c_out * self.c_in * self.kh * self.kw


def conv_shape(x_shape, w_shape, attrs, y_shape) -> ConvShape:
    kh, kw = (int(v) for v in attrs["kernel_shape"])
    (sh, sw), (dh, dw) = attrs["strides"], attrs["dilations"]
    return ConvShape(int(x_shape[1]), int(w_shape[0]), kh, kw, int(sh), int(sw), int(dh), int(dw),
                     int(x_shape[2]), int(x_shape[3]), int(y_shape[2]), int(y_shape[3]))


def terms(shape: ConvShape, setting, kept: float) -> dict:
    """The counts of each term for one image (module docstring)."""
    s, P = shape, setting.P
    patches = -(-s.ho // P) * -(-s.wo // P)
    D = ((P - 1) * s.sh + (s.kh - 1) * s.dh + 1) * ((P - 1) * s.sw + (s.kw - 1) * s.dw + 1)
    return {"pad": s.c_in * (s.h + s.kh - 1) * (s.w + s.kw - 1),
            "hash": patches * s.c_in * D * (setting.L * (1.0 - setting.s) + 4.0),
            "input_merge": patches * s.c_in * D,
            "filter_merge": patches * s.c_out * s.kh * s.kw * s.c_in * (1.0 - kept),
            "reduced_mac": kept * s.dense_macs}


def gathered(shape: ConvShape, setting) -> bool:
    return gather_variant(setting.P, shape.c_out, shape.sh, shape.sw) >= 0


def predict(rates: Rates, shape: ConvShape, setting, kept: float, threads: int = 1) -> tuple[float, float]:
    """(HASTE seconds, dense seconds) for one image on `threads` threads. The rates are one
    thread's; with more, the dense conv is taken to divide its time by the thread count (an upper
    bound on its scaling, so HASTE is never favoured by it) and HASTE too, unless its output is
    small enough that it runs on the calling thread (kernel._SERIAL_MAX_PIXELS): then taken as not
    scaling at all, though its output panels do spread over the pool (kernel.POOL_PANELS), which
    errs on dense's side."""
    t = terms(shape, setting, kept)
    mac_rate = rates.reduced_mac if gathered(shape, setting) else rates.reduced_mac_plain
    haste = (rates.pad * t["pad"] + rates.hash * t["hash"] + rates.input_merge * t["input_merge"]
             + rates.filter_merge * t["filter_merge"] + mac_rate * t["reduced_mac"])
    dense = (rates.dense_mac * shape.dense_macs + rates.dense_weight * shape.weights) / threads
    if shape.ho * shape.wo > _SERIAL_MAX_PIXELS:
        haste /= threads
    return haste, dense


def kept_bound(shape: ConvShape, setting) -> float:
    """The most a setting can keep: L hyperplanes make at most 2^L buckets of C_in channels."""
    return min(1.0, 2.0 ** setting.L / shape.c_in)


def kept_breakeven(rates: Rates, shape: ConvShape, setting, margin: float = 0.97, threads: int = 1) -> float:
    """The kept fraction below which HASTE's predicted time is under margin * dense time (the
    prediction is linear in kept: solved exactly). <= 0: no bucket statistics make it pay."""
    h0, dense = predict(rates, shape, setting, 0.0, threads)
    h1, _ = predict(rates, shape, setting, 1.0, threads)
    if h1 <= h0:                        # cannot happen with positive rates; guard the division
        return 1.0 if h1 < margin * dense else 0.0
    return (margin * dense - h0) / (h1 - h0)


# ---------------------------------------------------------------------------------------------
# calibration: the rates of this machine, on synthetic layers
# ---------------------------------------------------------------------------------------------

# (C, map, P, L, stride): the usual stages of small ResNets, both tile sizes, one strided conv
CALIBRATION_LAYERS = ((32, 28, 4, 10, 1), (64, 14, 2, 10, 1), (128, 7, 4, 12, 1), (256, 4, 2, 8, 1),
                      (64, 14, 2, 10, 2), (128, 8, 4, 10, 2))


def synthetic_input(rng, c, h, w, latent=6):
    """Post-ReLU maps whose channels mix a few smooth latent maps plus noise: channels correlate
    as a CNN's do, so buckets merge some of them (a range of kept fractions to fit on)."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    z = np.stack([np.sin(2 * np.pi * (rng.uniform(0.3, 2) * yy + rng.uniform(0.3, 2) * xx + rng.uniform()))
                  for _ in range(latent)])
    mix = rng.standard_normal((c, latent))
    x = np.einsum("cl,lhw->chw", mix, z) + 0.3 * rng.standard_normal((c, h, w))
    return np.maximum(x, 0).astype(np.float32)[None]


def _best_time(fn, repeats, clock):
    fn()
    best = np.inf
    for _ in range(repeats):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def measure_layer(x, W, b, attrs, setting, repeats=7, clock=time.perf_counter) -> dict:
    """Measured phase times, dense time and kept fraction of one conv (one image)."""
    phases = profile_haste_conv(x, W, b, attrs, setting, repeats=repeats, clock=clock)
    y, st = haste_conv(x, W, b, attrs, setting)
    f = {name: i for i, name in enumerate(STAT_FIELDS)}
    kept = float(st[:, f["buckets_sum"]].sum() / max(1, st[:, f["patches"]].sum() * x.shape[1]))
    outs = [np.empty_like(y)]
    dense = _best_time(lambda: conv([x, W, b], attrs, outs), repeats, clock)
    return {"phases": phases, "dense": dense, "kept": kept, "shape": conv_shape(x.shape, W.shape, attrs, y.shape)}


def fit(measured: list[dict], settings: list) -> Rates:
    """Rates from measured layers (measure_layer) and their settings: one ratio of sums per
    phase term, the reduced MACs split by path, a least-squares (non-negative) dense fit."""
    time_sum, count_sum = {}, {}
    for m, setting in zip(measured, settings):
        counts = terms(m["shape"], setting, m["kept"])
        mac_key = "reduced_mac" if gathered(m["shape"], setting) else "reduced_mac_plain"
        for phase, term in PHASE_TERMS.items():
            key = mac_key if term == "reduced_mac" else term
            time_sum[key] = time_sum.get(key, 0.0) + max(0.0, m["phases"][phase])
            count_sum[key] = count_sum.get(key, 0.0) + (counts[term] if phase != "bucketing" else 0.0)
    rate = {k: time_sum.get(k, 0.0) / count_sum[k] if count_sum.get(k) else 0.0
            for k in ("pad", "hash", "input_merge", "filter_merge", "reduced_mac", "reduced_mac_plain")}
    if rate["reduced_mac_plain"] == 0.0:
        rate["reduced_mac_plain"] = rate["reduced_mac"]
    a = np.array([[m["shape"].dense_macs, m["shape"].weights] for m in measured], dtype=np.float64)
    t = np.array([m["dense"] for m in measured])
    coef = np.linalg.lstsq(a / t[:, None], np.ones(len(t)), rcond=None)[0]   # relative errors
    if (coef < 0).any():                # one term alone, the one that fits better
        coef = np.zeros(2)
        coef[0] = (t / a[:, 0]).mean()
    return Rates(dense_mac=float(coef[0]), dense_weight=float(coef[1]), **rate)


def calibrate(seed: int = 0, repeats: int = 7, clock=time.perf_counter) -> tuple[Rates, list[dict]]:
    """This machine's rates from CALIBRATION_LAYERS (tens of seconds), and the measurements."""
    rng = np.random.default_rng(seed)
    measured, settings = [], []
    for c, hw, P, L, stride in CALIBRATION_LAYERS:
        x = synthetic_input(rng, c, hw, hw)
        c_out = c * stride
        W = (rng.standard_normal((c_out, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
        b = (0.1 * rng.standard_normal(c_out)).astype(np.float32)
        attrs = dict(kernel_shape=[3, 3], strides=[stride, stride], dilations=[1, 1], pads=[1, 1, 1, 1], group=1,
                     activation="Relu", clip_min=0.0, clip_max=float("inf"))
        setting = LayerSetting(L=L, s=2.0 / 3.0, P=P, seed=seed)
        measured.append(measure_layer(x, W, b, attrs, setting, repeats=repeats, clock=clock))
        settings.append(setting)
    return fit(measured, settings), measured


def _rates_path():
    """Where this machine's rates are kept: beside the kernel cache, keyed by CPU and microkernel."""
    key = hashlib.sha1(f"{platform.machine()} {cpu_model()} {microkernel.describe()} {__version__}".encode()).hexdigest()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "haste-edge" / f"haste_rates_{key[:12]}.json"


def machine_rates() -> Rates:
    """This machine's rates at 1 thread: read from the cache, else calibrated (a few seconds to a
    minute) and written there if the cache is writable (a read-only device calibrates each time)."""
    path = _rates_path()
    try:
        return Rates.from_json(path.read_text())
    except (OSError, ValueError, TypeError):
        pass
    prev = get_threads()
    set_threads(1)
    try:
        rates, _ = calibrate(repeats=3)
    finally:
        set_threads(prev)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(rates.to_json())
        tmp.replace(path)                   # never a half-written file
    except OSError:
        pass
    return rates
