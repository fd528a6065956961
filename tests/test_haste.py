"""HASTE conv (haste_edge/haste): exactness cases against the dense conv, hand-counted costs,
reproducibility, the Numba kernel against the NumPy reference (random and real feature maps, every
geometry), configuration and spec parsing.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from haste_edge.haste import (STAT_FIELDS, HasteConfig, LayerSetting, draw_hyperplanes, haste_conv,
                              haste_conv_reference, parse_haste_spec, plan_layers, profile_haste_conv)
from haste_edge.haste.config import layer_seed
from haste_edge.ops.conv import conv_reference

REPO = Path(__file__).resolve().parents[1]
F = {name: i for i, name in enumerate(STAT_FIELDS)}


def conv_attrs(k=(3, 3), s=(1, 1), d=(1, 1), pads=(1, 1, 1, 1), act="", clip=(-0.5, 0.75)):
    return dict(kernel_shape=list(k), strides=list(s), dilations=list(d), pads=list(pads), group=1,
                activation=act, clip_min=clip[0], clip_max=clip[1])


def dense(x, W, b, attrs):
    return conv_reference([x, W, b], attrs)[0]


def both(x, W, b, attrs, setting):
    """Reference and kernel results; asserts they agree (same counters, same output)."""
    y_ref, st_ref = haste_conv_reference(x, W, b, attrs, setting)
    y, st = haste_conv(x, W, b, attrs, setting)
    np.testing.assert_array_equal(st, st_ref)
    scale = max(1.0, float(np.abs(y_ref).max()))
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5 * scale)
    return y, st


def assert_close_to_dense(y, x, W, b, attrs):
    y_dense = dense(x, W, b, attrs)
    np.testing.assert_allclose(y, y_dense, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(y_dense).max())))


# ---------------------------------------------------------------------------------------------
# (a), (b) exactness
# ---------------------------------------------------------------------------------------------

def test_identical_channels_merge_and_stay_exact():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((2, 4, 9, 10)).astype(np.float32)
    x = np.concatenate([base, base[:, ::-1]], axis=1)              # 8 channels, each one twice
    W = rng.standard_normal((6, 8, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    attrs = conv_attrs(act="Relu")
    y, st = both(x, W, b, attrs, LayerSetting(L=24, s=0.5, P=4, seed=0))
    # the duplicates share a bucket; the four distinct channels are separated at L=24
    assert (st[:, F["buckets_sum"]] == 4 * st[:, F["patches"]]).all()
    assert (st[:, F["executed_macs"]] * 2 == st[:, F["dense_macs"]]).all()
    assert_close_to_dense(y, x, W, b, attrs)


def test_three_identical_channels_in_every_bucket():
    rng = np.random.default_rng(2)
    base = np.maximum(rng.standard_normal((1, 3, 8, 8)), 0).astype(np.float32)
    x = np.repeat(base, 3, axis=1)                                 # 9 channels, triples
    W = rng.standard_normal((5, 9, 3, 3)).astype(np.float32)
    attrs = conv_attrs(s=(2, 2), pads=(1, 0, 1, 1))
    y, st = both(x, W, None, attrs, LayerSetting(L=16, s=0.5, P=2, seed=3))
    assert (st[:, F["buckets_sum"]] <= 3 * st[:, F["patches"]]).all()
    assert_close_to_dense(y, x, W, None, attrs)


def test_many_hyperplanes_give_singletons_and_the_dense_result():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 8, 11, 9)).astype(np.float32)
    W = rng.standard_normal((7, 8, 3, 3)).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)
    attrs = conv_attrs(act="Clip")
    y, st = both(x, W, b, attrs, LayerSetting(L=24, s=0.5, P=4, seed=0))
    assert (st[:, F["buckets_sum"]] == 8 * st[:, F["patches"]]).all()
    assert (st[:, F["executed_macs"]] == st[:, F["dense_macs"]]).all()
    assert (st[:, F["filter_merge_adds"]] == 0).all()
    assert_close_to_dense(y, x, W, b, attrs)


# ---------------------------------------------------------------------------------------------
# (c) counters on hand-built cases
# ---------------------------------------------------------------------------------------------

def counters(st):
    return {name: int(st[0, i]) for i, name in enumerate(STAT_FIELDS)}


def test_counts_two_identical_channels_ragged_tiles():
    # 5x5 output, P=4: tiles 4x4, 4x1, 1x4, 1x1 (25 pixels); 3x3 kernel, stride 1, so patches
    # 6x6, 6x3, 3x6, 3x3 (81 pixels). s=0: every hyperplane entry is +-1, L*81 entries applied.
    rng = np.random.default_rng(4)
    c = rng.standard_normal((1, 1, 5, 5)).astype(np.float32)
    x = np.concatenate([c, c], axis=1)
    W = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    attrs = conv_attrs()
    y, st = both(x, W, None, attrs, LayerSetting(L=4, s=0.0, P=4, seed=0))
    assert counters(st) == dict(dense_macs=3 * 2 * 9 * 25, executed_macs=3 * 1 * 9 * 25, hash_adds=4 * 81 * 2,
                                centre_ops=3 * 2 * 81, input_merge_adds=2 * 81, filter_merge_adds=3 * 1 * 9 * 4,
                                buckets_sum=4, patches=4, channels=2)
    assert_close_to_dense(y, x, W, None, attrs)


def test_counts_two_distinct_channels_never_merge():
    # two channels centre to z and -z: every hyperplane gives them opposite bits
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    W = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    _, st = both(x, W, None, conv_attrs(), LayerSetting(L=1, s=0.0, P=4, seed=0))
    got = counters(st)
    assert got["buckets_sum"] == 2 * 4 and got["executed_macs"] == got["dense_macs"] == 3 * 2 * 9 * 25
    assert got["filter_merge_adds"] == 0 and got["hash_adds"] == 1 * 81 * 2


def test_counts_strided():
    # 8x8 input, 3x3 stride 2, pads 1 -> 4x4 output; P=2: four 2x2 tiles, each reading a 5x5 patch
    rng = np.random.default_rng(6)
    c = rng.standard_normal((1, 1, 8, 8)).astype(np.float32)
    x = np.repeat(c, 3, axis=1)
    W = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    attrs = conv_attrs(s=(2, 2))
    y, st = both(x, W, None, attrs, LayerSetting(L=3, s=0.0, P=2, seed=0))
    assert counters(st) == dict(dense_macs=2 * 3 * 9 * 16, executed_macs=2 * 1 * 9 * 16, hash_adds=3 * 25 * 4 * 3,
                                centre_ops=3 * 3 * 25 * 4, input_merge_adds=3 * 25 * 4,
                                filter_merge_adds=2 * 2 * 9 * 4, buckets_sum=4, patches=4, channels=3)
    assert_close_to_dense(y, x, W, None, attrs)


def test_hash_adds_count_applied_nonzeros():
    # with s > 0 the count is the nonzeros of the (sub-)grids actually applied to each patch
    setting = LayerSetting(L=5, s=0.5, P=4, seed=7)
    R = draw_hyperplanes(5, 36, 0.5, 7).reshape(5, 6, 6)          # full patch 6x6 (3x3, stride 1)
    expected = sum(int(np.count_nonzero(R[:, :ph, :pw])) for ph, pw in [(6, 6), (6, 3), (3, 6), (3, 3)]) * 4
    x = np.random.default_rng(8).standard_normal((1, 4, 5, 5)).astype(np.float32)
    W = np.ones((2, 4, 3, 3), np.float32)
    _, st = both(x, W, None, conv_attrs(), setting)
    assert counters(st)["hash_adds"] == expected


# ---------------------------------------------------------------------------------------------
# (d) reproducibility
# ---------------------------------------------------------------------------------------------

_SNIPPET = """
import hashlib, json, numpy as np
from haste_edge.haste import LayerSetting, haste_conv
rng = np.random.default_rng(11)
x = np.maximum(rng.standard_normal((2, 16, 10, 9)), 0).astype(np.float32)
W = rng.standard_normal((8, 16, 3, 3)).astype(np.float32)
attrs = dict(kernel_shape=[3, 3], strides=[1, 1], dilations=[1, 1], pads=[1, 1, 1, 1], group=1,
             activation="Relu", clip_min=None, clip_max=None)
y, st = haste_conv(x, W, None, attrs, LayerSetting(L=3, s=2 / 3, P=4, seed=SEED))
result = [hashlib.sha256(y.tobytes()).hexdigest(), st.tolist()]
"""


def _run_snippet(seed):
    ns = {}
    exec(_SNIPPET.replace("SEED", str(seed)), ns)
    return ns["result"]


def test_same_seed_same_result_in_process_and_subprocess():
    first, second = _run_snippet(0), _run_snippet(0)
    assert first == second
    code = _SNIPPET.replace("SEED", "0") + "print(json.dumps(result))\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == first


def test_different_seed_different_buckets():
    # L=3 on 16 channels: at most 8 buckets, so which channels merge depends on the hyperplanes
    rng = np.random.default_rng(12)
    x = rng.standard_normal((1, 16, 8, 8)).astype(np.float32)
    W = rng.standard_normal((4, 16, 3, 3)).astype(np.float32)
    y0, _ = both(x, W, None, conv_attrs(), LayerSetting(L=3, s=0.5, P=4, seed=0))
    y1, _ = both(x, W, None, conv_attrs(), LayerSetting(L=3, s=0.5, P=4, seed=1))
    assert not np.allclose(y0, y1, rtol=1e-3, atol=1e-3)


def test_hyperplanes():
    R = draw_hyperplanes(40, 500, 2 / 3, 5)
    assert R.dtype == np.float32 and R.shape == (40, 500)
    assert set(np.unique(R)) <= {-1.0, 0.0, 1.0}
    assert abs((R == 0).mean() - 2 / 3) < 0.02 and abs((R == 1).mean() - (R == -1).mean()) < 0.02
    np.testing.assert_array_equal(R, draw_hyperplanes(40, 500, 2 / 3, 5))
    np.testing.assert_array_equal(R[:7], draw_hyperplanes(7, 500, 2 / 3, 5))    # L nests
    assert not np.array_equal(R, draw_hyperplanes(40, 500, 2 / 3, 6))


# ---------------------------------------------------------------------------------------------
# (e) kernel == reference
# ---------------------------------------------------------------------------------------------

# (N, C_in, H, W, C_out, kernel, strides, dilations, pads [t, l, b, r], activation, P, L)
GEOMETRIES = {
    "3x3-ragged": (1, 8, 9, 11, 5, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), "", 4, 4),
    "stride2-asym-pads-batch3": (3, 6, 10, 7, 4, (3, 3), (2, 2), (1, 1), (1, 0, 2, 1), "Relu", 4, 4),
    "dilation2": (1, 4, 12, 12, 8, (3, 3), (1, 1), (2, 2), (2, 2, 2, 2), "", 2, 3),
    "stride2-dilation2": (2, 5, 13, 11, 5, (3, 3), (2, 2), (2, 2), (1, 2, 0, 1), "Relu", 3, 5),
    "non-square": (1, 5, 13, 10, 7, (3, 2), (2, 3), (1, 1), (2, 1, 0, 1), "Clip", 3, 5),
    "1x1-strided": (2, 8, 7, 9, 16, (1, 1), (2, 2), (1, 1), (0, 0, 0, 0), "", 4, 2),
    "5x5": (1, 9, 11, 11, 6, (5, 5), (1, 1), (1, 1), (2, 2, 2, 2), "Relu", 4, 6),
    "P1": (1, 6, 5, 6, 3, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), "Relu", 1, 3),
    "tile-larger-than-output": (2, 6, 3, 3, 4, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), "", 4, 3),
    "wide-relu-batch3": (3, 32, 12, 12, 24, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), "Relu", 4, 6),
}


@pytest.mark.parametrize("name", GEOMETRIES)
@pytest.mark.parametrize("relu_input", [False, True])
def test_kernel_matches_reference(name, relu_input):
    n, ci, h, w, co, k, s, d, pads, act, P, L = GEOMETRIES[name]
    rng = np.random.default_rng(2 * list(GEOMETRIES).index(name) + relu_input)
    x = rng.standard_normal((n, ci, h, w)).astype(np.float32)
    if relu_input:                                  # post-ReLU maps: exact zeros, dead patches
        x = np.maximum(x - 0.3, 0)
    W = rng.standard_normal((co, ci) + k).astype(np.float32)
    b = rng.standard_normal(co).astype(np.float32)
    both(x, W, b, conv_attrs(k, s, d, pads, act), LayerSetting(L=L, s=0.5, P=P, seed=len(name)))


@pytest.mark.parametrize("name", ["3x3-ragged", "dilation2", "5x5", "wide-relu-batch3"])
def test_gathered_and_plain_reduced_conv_agree(name, monkeypatch):
    """The reduced conv on the gathered microkernel tiles (used here: stride 1, P even) and the
    plain loop give the reference's result, and the same counters."""
    from haste_edge.haste import kernel as K
    n, ci, h, w, co, k, s, d, pads, act, P, L = GEOMETRIES[name]
    assert K.gather_variant(P, co, *s) >= 0
    rng = np.random.default_rng(7)
    x = np.maximum(rng.standard_normal((n, ci, h, w)) - 0.3, 0).astype(np.float32)
    W = rng.standard_normal((co, ci) + k).astype(np.float32)
    b = rng.standard_normal(co).astype(np.float32)
    attrs, setting = conv_attrs(k, s, d, pads, act), LayerSetting(L=L, s=0.5, P=P, seed=3)
    y_g, st_g = K.haste_conv(x, W, b, attrs, setting)
    monkeypatch.setattr(K, "GATHERED", False)
    K._calls.clear()
    K._layers.clear()
    y_p, st_p = K.haste_conv(x, W, b, attrs, setting)
    np.testing.assert_array_equal(st_g, st_p)
    assert np.abs(y_g - y_p).max() <= 1e-5 * max(1.0, np.abs(y_p).max())


def _smooth_image(rng, n, h, w):
    """Smooth images (low-frequency sinusoids plus a little noise): neighbouring pixels correlate
    as in real images, so a conv's feature maps have correlated channels."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    imgs = []
    for _ in range(n):
        chans = [np.sin(2 * np.pi * (rng.uniform(0.5, 2) * yy + rng.uniform(0.5, 2) * xx + rng.uniform()))
                 for _ in range(3)]
        imgs.append(np.stack(chans) + 0.05 * rng.standard_normal((3, h, w)))
    return np.stack(imgs).astype(np.float32)


def test_kernel_matches_reference_on_cnn_feature_maps():
    """A small torch-free CNN: image -> conv 3->16 + ReLU -> HASTE conv 16->16, batch 3."""
    rng = np.random.default_rng(13)
    x0 = _smooth_image(rng, 3, 20, 18)
    W0 = (rng.standard_normal((16, 3, 3, 3)) * 0.4).astype(np.float32)
    feat = dense(x0, W0, np.full(16, 0.1, np.float32), conv_attrs(act="Relu"))
    W1 = (rng.standard_normal((16, 16, 3, 3)) * 0.1).astype(np.float32)
    b1 = rng.standard_normal(16).astype(np.float32)
    for attrs in (conv_attrs(act="Relu"), conv_attrs(s=(2, 2), pads=(1, 1, 0, 0))):
        y, st = both(feat, W1, b1, attrs, LayerSetting(L=6, s=2 / 3, P=4, seed=2))
        assert (st[:, F["buckets_sum"]] < 16 * st[:, F["patches"]]).all()     # merging happens


def _first_image_batch(n):
    """n bundled Fashion-MNIST test images, 28x28 padded to 32x32, as 3 equal channels in [0, 1]."""
    from PIL import Image
    import haste_edge
    paths = haste_edge.sample_images()[:n]
    if len(paths) < n:
        pytest.skip("bundled sample images not found")
    imgs = [np.pad(np.asarray(Image.open(p).convert("L"), np.float32) / 255, 2) for p in paths]
    return np.stack([np.stack([im] * 3) for im in imgs]).astype(np.float32)


def test_kernel_matches_reference_on_resnet_tiny_feature_maps():
    """Real images through resnet_tiny's first conv (+ReLU); HASTE on its second conv's weights."""
    pytest.importorskip("onnx")
    sys.path.insert(0, str(REPO / "tests"))
    import model_zoo
    import haste_edge
    try:
        model = haste_edge.load(model_zoo.get_model("resnet_tiny"))
    except Exception as e:       # building the model needs torch
        pytest.skip(f"resnet_tiny unavailable: {e}")
    convs = [n for n in model.graph.nodes if n.op == "Conv"]
    first, second = convs[0], convs[1]
    x = _first_image_batch(3)
    w0, b0 = (model.graph.weights[t] for t in first.inputs[1:3])
    feat = dense(x, w0, b0, first.attrs)
    assert second.inputs[0] == first.outputs[0]
    w1, b1 = (model.graph.weights[t] for t in second.inputs[1:3])
    _, st = both(feat, w1, b1, second.attrs, LayerSetting(L=8, s=2 / 3, P=4, seed=0))
    c_in = w1.shape[1]
    assert (st[:, F["buckets_sum"]] < c_in * st[:, F["patches"]]).all()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_small_map_any_threads_matches_reference(threads):
    """A 4x4 map (one patch at P=4) runs on the calling thread whatever the thread count, its output
    panels spread over the pool (kernel.POOL_PANELS); outputs and counters must equal the
    reference and the panels-on-one-thread run, and the thread count must be restored."""
    import numba
    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"only {numba.config.NUMBA_NUM_THREADS} Numba threads")
    rng = np.random.default_rng(21)
    x = rng.standard_normal((1, 24, 4, 4)).astype(np.float32)
    x[:, 12:] = x[:, :12] * 1.5                       # mergeable channels, so buckets really form
    W = rng.standard_normal((40, 24, 3, 3)).astype(np.float32)
    b = rng.standard_normal(40).astype(np.float32)
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        setting = LayerSetting(L=6, s=2 / 3, P=4, seed=3)
        y, st = both(x, W, b, conv_attrs(act="Relu"), setting)
        assert numba.get_num_threads() == threads
        from haste_edge.haste import kernel as K
        K.POOL_PANELS = False
        try:
            y1, st1 = haste_conv(x, W, b, conv_attrs(act="Relu"), setting)
        finally:
            K.POOL_PANELS = True
        np.testing.assert_array_equal(y, y1)
        np.testing.assert_array_equal(st, st1)
    finally:
        numba.set_num_threads(before)
    assert st[0, F["patches"]] == 1 and st[0, F["buckets_sum"]] < 24


def test_y_out_and_non_contiguous_input():
    rng = np.random.default_rng(14)
    x = rng.standard_normal((2, 9, 6, 5)).astype(np.float32)[:, ::2]       # 5 channels, a view
    W = rng.standard_normal((4, 5, 3, 3)).astype(np.float32)
    setting = LayerSetting(L=3, s=0.5, P=2, seed=0)
    y_ref, _ = haste_conv_reference(x, W, None, conv_attrs(), setting)
    out = np.full((2, 4, 6, 5), np.nan, np.float32)
    y, _ = haste_conv(x, W, None, conv_attrs(), setting, y_out=out)
    assert y is out
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="y_out"):
        haste_conv(x, W, None, conv_attrs(), setting, y_out=np.empty((2, 4, 6, 6), np.float32))
    with pytest.raises(ValueError, match="group"):
        haste_conv(x, W[:, :1], None, dict(conv_attrs(), group=5), setting)


def test_profile_phases():
    rng = np.random.default_rng(15)
    x = np.maximum(rng.standard_normal((1, 16, 8, 8)), 0).astype(np.float32)
    W = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    prof = profile_haste_conv(x, W, None, conv_attrs(), LayerSetting(L=6, s=0.5, P=4, seed=0), repeats=2)
    assert set(prof) == {"pad", "hashing", "bucketing", "input_merge", "filter_merge", "reduced_conv", "total"}
    assert prof["total"] > 0


# ---------------------------------------------------------------------------------------------
# configuration, (f) spec parsing
# ---------------------------------------------------------------------------------------------

def _node(name, c_out, c_in, k=3, stride=1, group=1):
    return (name, (c_out, c_in // group, k, k),
            dict(conv_attrs((k, k), (stride, stride)), group=group))


NET = [_node("stem", 16, 3), _node("c1", 16, 16), _node("dw", 16, 16, group=16), _node("pw", 32, 16, k=1),
       _node("down", 32, 32, stride=2), _node("c2", 32, 32), _node("one", 8, 1)]


def test_plan_layers_defaults():
    plan = plan_layers(NET, HasteConfig(L=10))
    assert sorted(plan) == ["c1", "c2", "down"]              # no stem, depthwise, 1x1, C_in=1
    assert plan["c1"] == LayerSetting(L=10, s=2 / 3, P=4, seed=layer_seed(0, 1))
    assert len({st.seed for st in plan.values()}) == 3
    assert plan == plan_layers(NET, HasteConfig(L=10))       # deterministic
    assert plan_layers(NET, HasteConfig(L=10, seed=1))["c1"].seed != plan["c1"].seed


def test_plan_layers_options_and_overrides():
    cfg = HasteConfig(L=10, start_layer=0, include_1x1=True, include_strided=False,
                      per_layer={"c2": {"L": 14, "P": 2}, "c1": {"enabled": False}})
    plan = plan_layers(NET, cfg)
    assert sorted(plan) == ["c2", "pw", "stem"]
    assert plan["c2"].L == 14 and plan["c2"].P == 2
    forced = plan_layers(NET, HasteConfig(L=10, per_layer={"stem": {"enabled": True, "seed": 5}}))
    assert forced["stem"].seed == 5
    with pytest.raises(ValueError, match="dw"):
        plan_layers(NET, HasteConfig(L=10, per_layer={"dw": {"enabled": True}}))
    with pytest.raises(ValueError, match="nope"):
        plan_layers(NET, HasteConfig(L=10, per_layer={"nope": {"L": 3}}))
    with pytest.raises(ValueError, match="Lx"):
        HasteConfig(L=10, per_layer={"c1": {"Lx": 3}})


def test_parse_haste_spec():
    cfg = parse_haste_spec("L=12,P=4,s=0.667,seed=0,start=1")
    assert (cfg.L, cfg.patch, cfg.s, cfg.seed, cfg.start_layer) == (12, 4, 0.667, 0, 1)
    cfg = parse_haste_spec(" L = 8 , s=2/3, 1x1=1, strided=false ")
    assert cfg.L == 8 and abs(cfg.s - 2 / 3) < 1e-12 and cfg.include_1x1 and not cfg.include_strided
    assert parse_haste_spec("L=5").patch == 4
    assert parse_haste_spec("L=12,Lout=32:15/256:4").L_by_cout == {32: 15, 256: 4}


def test_L_by_output_channels():
    """Lout sets L per output-channel count; per_layer's L still wins; others keep the network L."""
    net = [_node("a", 32, 16), _node("b", 64, 32), _node("c", 64, 64)]
    got = plan_layers(net, HasteConfig(L=10, start_layer=0, L_by_cout={32: 5}, per_layer={"c": {"L": 7}}))
    assert {k: v.L for k, v in got.items()} == {"a": 5, "b": 10, "c": 7}


def test_fewest_macs_is_the_measured_per_stage_setting():
    """README's fewest-macs figures were measured with per_layer_L_15_14_13_4.json (haste_sweep.py
    --P 2 --L 12 --per-layer ...): the named setting must plan the bundled model's convs alike."""
    import haste_edge
    g = haste_edge.load().graph
    convs = [(n.name, g.weights[n.inputs[1]].shape, n.attrs) for n in g.nodes if n.op == "Conv"]
    per_layer = json.loads((REPO / "benchmarks/results/per_layer_L_15_14_13_4.json").read_text())
    measured = plan_layers(convs, HasteConfig(L=12, patch=2, per_layer=per_layer))
    assert plan_layers(convs, parse_haste_spec("fewest-macs")) == measured
    assert {s.L for s in measured.values()} == {15, 14, 13, 4}


@pytest.mark.parametrize("spec, match", [
    ("L=12,Q=3", "unknown key 'Q'"),
    ("L=twelve", "bad value 'twelve' for 'L'"),
    ("L=12,s=abc", "bad value 'abc' for 's'"),
    ("L=12,P=2.5", "bad value '2.5' for 'P'"),
    ("L=12,1x1=maybe", "bad value 'maybe' for '1x1'"),
    ("P=4", "L .* is required"),
    ("L=12,P", "not key=value"),
    ("L=12,L=3", "given twice"),
    ("L=0", "L .* must be an integer in"),
    ("L=12,s=1.5", "s .* must be a number in"),
    ("L=12,P=0", "P .* must be an integer >= 1"),
    ("L=12,seed=-1", "seed must be an integer >= 0"),
    ("L=12,Lout=32", "bad value '32' for 'Lout'"),
    ("L=12,Lout=32:4/32:5", "bad value '32:4/32:5' for 'Lout'"),
    ("L=12,Lout=0:4", "output-channel counts must be integers >= 1"),
    ("L=12,Lout=32:99", "L .* must be an integer in"),
])
def test_parse_haste_spec_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_haste_spec(spec)
