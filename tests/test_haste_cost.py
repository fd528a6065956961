"""HASTE's cost model (haste/cost.py), the named settings and the auto setting (haste/method.py)."""
from __future__ import annotations

import numpy as np
import pytest

import haste_edge
from haste_edge.haste import HasteConfig, LayerSetting, cost, parse_haste_spec
from haste_edge.haste.config import NAMED_SETTINGS
from haste_edge.haste.method import AUTO_KEPT, Haste

SHAPE = cost.ConvShape(c_in=64, c_out=64, kh=3, kw=3, sh=1, sw=1, dh=1, dw=1, h=14, w=14, ho=14, wo=14)
SETTING = LayerSetting(L=10, s=2 / 3, P=4, seed=0)
RATES = cost.Rates(pad=1e-9, hash=3e-10, input_merge=8e-10, filter_merge=1e-10, reduced_mac=3e-11,
                   reduced_mac_plain=4e-11, dense_mac=2.5e-11, dense_weight=1e-10)


def test_terms_follow_the_shapes():
    t = cost.terms(SHAPE, SETTING, kept=0.5)
    patches, D = 16, 6 * 6                                  # 14x14 in 4x4 tiles; a 3x3 conv's 6x6 patch
    assert t["reduced_mac"] == 0.5 * SHAPE.dense_macs == 0.5 * 64 * 64 * 9 * 196
    assert t["input_merge"] == patches * 64 * D
    assert t["filter_merge"] == patches * 64 * 9 * 64 * 0.5
    assert t["pad"] == 64 * 16 * 16
    assert cost.terms(SHAPE, SETTING, kept=1.0)["filter_merge"] == 0


def test_breakeven_is_where_the_prediction_crosses():
    k = cost.kept_breakeven(RATES, SHAPE, SETTING)
    h, d = cost.predict(RATES, SHAPE, SETTING, k)
    assert h == pytest.approx(0.97 * d, rel=1e-9)
    assert cost.predict(RATES, SHAPE, SETTING, k - 0.1)[0] < 0.97 * d < cost.predict(RATES, SHAPE, SETTING, k + 0.1)[0]
    heavy = cost.Rates(**{**vars(RATES), "hash": 1e-6})      # overhead alone over the dense time
    assert cost.kept_breakeven(heavy, SHAPE, SETTING) < 0


def test_fit_recovers_the_rates_it_was_measured_with():
    """Phase times made from known rates (and a kept fraction per layer) give those rates back."""
    settings, measured = [], []
    for c, hw, P, kept, stride in [(32, 28, 4, 0.7, 1), (64, 14, 2, 0.5, 1), (128, 7, 4, 0.8, 1), (64, 14, 2, 0.6, 2)]:
        co = c * stride
        ho = -(-hw // stride)
        shape = cost.ConvShape(c, co, 3, 3, stride, stride, 1, 1, hw, hw, ho, ho)
        s = LayerSetting(L=10, s=2 / 3, P=P, seed=0)
        t = cost.terms(shape, s, kept)
        mac = RATES.reduced_mac if cost.gathered(shape, s) else RATES.reduced_mac_plain
        phases = {"pad": RATES.pad * t["pad"], "hashing": 0.75 * RATES.hash * t["hash"],
                  "bucketing": 0.25 * RATES.hash * t["hash"], "input_merge": RATES.input_merge * t["input_merge"],
                  "filter_merge": RATES.filter_merge * t["filter_merge"], "reduced_conv": mac * t["reduced_mac"]}
        dense = RATES.dense_mac * shape.dense_macs + RATES.dense_weight * shape.weights
        measured.append({"phases": phases, "dense": dense, "kept": kept, "shape": shape})
        settings.append(s)
    got = cost.fit(measured, settings)
    for k, v in vars(RATES).items():
        assert getattr(got, k) == pytest.approx(v, rel=1e-6), k


def test_named_settings_parse():
    for name, spec in NAMED_SETTINGS.items():
        assert parse_haste_spec(name) == parse_haste_spec(spec)
    with pytest.raises(ValueError, match="named setting"):
        parse_haste_spec("s=0.5")


def test_auto_compresses_only_where_the_model_says_it_pays():
    model = haste_edge.load()
    x = np.random.default_rng(0).standard_normal(model.input_shape(1)).astype(np.float32)
    name, out = model.input_names[0], model.output_names[0]
    dense = model.run({name: x})[out]
    free = cost.Rates(pad=0.0, hash=0.0, input_merge=0.0, filter_merge=0.0, reduced_mac=1e-12,
                      reduced_mac_plain=1e-12, dense_mac=1e-10, dense_weight=0.0)
    auto = Haste("auto", rates=free)
    layers = model.compress(auto)
    assert set(layers) == set(model.compress(Haste("fast")))           # all of fast's convs pay
    assert all(pays for _, pays in auto.decisions.values())
    model.compress(auto)
    assert model.run({name: x})[out].shape == dense.shape
    costly = cost.Rates(**{**vars(free), "hash": 1e-6})                 # hashing alone costs more than dense
    auto = Haste("auto", rates=costly)
    assert model.compress(auto) == {}
    assert auto.decisions and not any(pays for _, pays in auto.decisions.values())
    np.testing.assert_array_equal(model.run({name: x})[out], dense)     # nothing compressed: the dense result
    assert 0 < AUTO_KEPT < 1


def test_auto_decisions_use_each_conv_shape():
    """With the measured-like rates, the break-even differs by layer shape (stride, channels), so
    the decision is per conv, not per model; every conv of fast is decided."""
    model = haste_edge.load()
    auto = Haste("auto", rates=RATES)
    model.compress(auto)
    assert set(auto.decisions) == set(model.compress(Haste("fast")))
    breakevens = {round(b, 6) for b, _ in auto.decisions.values()}
    assert len(breakevens) >= 2
    assert isinstance(auto.config, HasteConfig)


def test_auto_reads_the_machine_rates_from_the_cache(tmp_path, monkeypatch):
    """set_haste("auto") (what --haste auto does) takes this machine's rates from the cache file,
    without calibrating; a corrupt file is not trusted (checked by reading, not by calibrating)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = cost._rates_path()
    assert str(path).startswith(str(tmp_path))
    path.parent.mkdir(parents=True)
    costly = cost.Rates(**{**vars(RATES), "hash": 1e-6})
    path.write_text(costly.to_json())
    assert cost.machine_rates() == costly
    model = haste_edge.load()
    assert model.set_haste("auto") == {}                                # nothing pays with these rates
    free = cost.Rates(pad=0.0, hash=0.0, input_merge=0.0, filter_merge=0.0, reduced_mac=1e-12,
                      reduced_mac_plain=1e-12, dense_mac=1e-10, dense_weight=0.0)
    path.write_text(free.to_json())
    assert model.set_haste("auto") == model.set_haste("fast")
    path.write_text("{not json")
    with pytest.raises(ValueError):
        cost.Rates.from_json(path.read_text())


def test_threads_scale_dense_and_only_pooled_haste():
    """At 2 threads the dense conv's predicted time halves; HASTE's too on a map big enough for the
    pool, not on one small enough to run on one thread (4x4: 16 output pixels)."""
    small = cost.ConvShape(256, 256, 3, 3, 1, 1, 1, 1, 4, 4, 4, 4)
    for shape, pooled in ((SHAPE, True), (small, False)):
        h1, d1 = cost.predict(RATES, shape, SETTING, 0.5, threads=1)
        h2, d2 = cost.predict(RATES, shape, SETTING, 0.5, threads=2)
        assert d2 == pytest.approx(d1 / 2)
        assert h2 == pytest.approx(h1 / 2 if pooled else h1)
    assert cost.kept_bound(small, LayerSetting(L=4, s=0.5, P=4, seed=0)) == 16 / 256
    assert cost.kept_bound(SHAPE, SETTING) == 1.0


def test_auto_takes_a_base_setting():
    """auto:SPEC decides over SPEC's convs and settings; plain auto over fast's."""
    model = haste_edge.load()
    free = cost.Rates(pad=0.0, hash=0.0, input_merge=0.0, filter_merge=0.0, reduced_mac=1e-12,
                      reduced_mac_plain=1e-12, dense_mac=1e-10, dense_weight=0.0)
    layers = model.compress(Haste("auto:L=12,P=4", rates=free))
    assert {l.setting.L for l in layers.values()} == {12} and len(layers) == len(model.set_haste("L=12,P=4"))
    assert Haste("auto: fewest-macs", rates=free).config == parse_haste_spec("fewest-macs")
    assert Haste("auto", rates=free).config == parse_haste_spec("fast")
    with pytest.raises(ValueError, match="required"):
        Haste("auto:P=4")
