"""The microkernel against its NumPy reference (every tile shape, the scalar fallback, the fused
epilogue), and the conv path built on it against the conv reference on every conv case."""
from __future__ import annotations

import numpy as np
import pytest

from haste_edge import microkernel as mk
from haste_edge.jit import njit
from haste_edge.ops import conv as conv_mod, conv_direct
from conv_cases import CASES, make, poison_scratch, run_fast

RNG = np.random.default_rng(1)


def _product(variant, m, k, length, parallel, lo=-np.inf, hi=np.inf, tile=None):
    a = RNG.standard_normal((m, k)).astype(np.float32)
    offs = np.sort(RNG.choice(4 * k, size=k, replace=False)).astype(np.int64)  # any offsets
    b = RNG.standard_normal(4 * k + length + 64).astype(np.float32)
    bias = RNG.standard_normal(m).astype(np.float32)
    mr = mk.mr_of(variant)
    panels = mk.pack_panels(a, mr)
    c = np.full((panels.shape[0] * mr, mk.padded_columns(length, variant)), np.nan, np.float32)
    padded_bias = mk.pad_rows(bias, c.shape[0])
    run = mk.gemm_tiles if parallel else mk.gemm_tiles_serial
    run(variant, panels, b, offs, c, padded_bias, lo, hi)
    want = mk.gemm_reference(a, b, offs, length, bias, lo, hi)
    return c, want


@pytest.mark.parametrize("variant", range(len(mk.SHAPES)))
@pytest.mark.parametrize("m,k,length", [(1, 1, 1), (7, 9, 13), (33, 288, 70), (64, 40, 200)])
@pytest.mark.parametrize("parallel", [False, True])
def test_product_matches_reference(variant, m, k, length, parallel):
    c, want = _product(variant, m, k, length, parallel)
    got = c[:m, :length]
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-5 * max(scale, 1.0) * np.sqrt(k)
    assert np.isfinite(c).all()                       # padding rows and columns are written too


@njit
def _dwb_tile_call(src, s_pos, s_step, toffs, w, w_off, dst, d_pos, bias, b_off, lo, hi):
    mk.dwb_tile(src, s_pos, s_step, toffs, w, w_off, dst, d_pos, bias, b_off, lo, hi)


@njit
def _transpose_call(src, s_offs, s_pos, dst, d_offs, d_start, d_pos):
    mk.transpose(src, s_offs, s_pos, dst, d_offs, d_start, d_pos)


def _dwb_tile_case(n_taps, s_step):
    """The blocked depthwise tile at arbitrary offsets, against its reference; NaN around the
    written span catches a write outside it."""
    vl, mr = mk.DWB_VL, mk.DWB_MR
    toffs = (np.sort(RNG.choice(40, size=n_taps, replace=False)) * vl).astype(np.int64)
    src = RNG.standard_normal(45 * vl + mr * s_step + 3).astype(np.float32)
    w = RNG.standard_normal((n_taps + 2) * vl).astype(np.float32)
    bias = RNG.standard_normal(3 * vl).astype(np.float32)
    dst = np.full(mr * vl + 7, np.nan, np.float32)
    _dwb_tile_call(src, 3, s_step, toffs, w, vl, dst, 5, bias, vl + 1, np.float32(-1.0), np.float32(1.5))
    want = mk.dwb_reference(src, 3, s_step, toffs, w, vl, bias, vl + 1, -1.0, 1.5)
    return dst, want


@pytest.mark.parametrize("n_taps", [0, 1, 9, 25])
@pytest.mark.parametrize("stride", [1, 2])
def test_blocked_depthwise_tile_matches_reference(n_taps, stride):
    dst, want = _dwb_tile_case(n_taps, stride * mk.DWB_VL)
    got = dst[5:5 + mk.DWB_MR * mk.DWB_VL].reshape(mk.DWB_MR, mk.DWB_VL)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.sqrt(max(n_taps, 1)))
    assert np.isnan(dst[:5]).all() and np.isnan(dst[5 + mk.DWB_MR * mk.DWB_VL:]).all()


def test_transpose_matches_reference():
    """VL rows read at scattered offsets, VL columns written at scattered offsets: exact."""
    vl = mk.DWB_VL
    src = RNG.standard_normal(60 * vl).astype(np.float32)
    s_offs = np.sort(RNG.choice(50 * vl, size=vl, replace=False)).astype(np.int64)
    d_offs = (RNG.permutation(vl + 4) * (vl + 3)).astype(np.int64)      # non-overlapping columns
    got = np.full((vl + 4) * (vl + 3) + vl, np.nan, np.float32)
    want = got.copy()
    _transpose_call(src, s_offs, 2, got, d_offs, 3, 1)
    mk.transpose_reference(src, s_offs, 2, want, d_offs, 3, 1)
    np.testing.assert_array_equal(got, want)


def _lanes_product(variant, m, k, n_blocks, parallel, lo=-np.inf, hi=np.inf, a_step=1, blocked=False, pf=0):
    """gemm_lanes on random blocks anywhere in A (overlapping too), against its reference; C
    pixel-major (rows of ldc) or, blocked, (panels*NV, pixels, VW) as the blocked layout stores it.
    Returns C as (pixels + 1 spare row, channels), the reference and m."""
    mr, nr = mk.lanes_dims_py(variant)
    vw = mk.LANES[variant][2]
    a = RNG.standard_normal(5 * k + 200 + mr * a_step).astype(np.float32)
    aoffs = np.sort(RNG.choice(4 * k, size=k, replace=False)).astype(np.int64)
    a_starts = RNG.integers(0, 150, n_blocks).astype(np.int64)
    w = RNG.standard_normal((m, k)).astype(np.float32)
    panels = mk.pack_lanes(w, nr)
    n_pan = panels.shape[0]
    ldc = n_pan * nr
    bias = mk.pad_rows(RNG.standard_normal(m).astype(np.float32), ldc)
    pixels = n_blocks * mr
    starts = np.arange(n_pan, dtype=np.int64) * nr
    if blocked:
        c = np.full(ldc * (pixels + 1), np.nan, np.float32)
        mk.gemm_lanes(variant + mk.N_LANES * (a_step == vw), a, aoffs, a_starts, panels, c, np.arange(n_blocks) * mr * vw, vw,
                      (pixels + 1) * vw, starts // vw * (pixels + 1) * vw, starts, bias, lo, hi, parallel, pf)
        c = c.reshape(ldc // vw, pixels + 1, vw).transpose(1, 0, 2).reshape(pixels + 1, ldc)
    else:
        c = np.full((pixels + 1) * ldc, np.nan, np.float32)
        mk.gemm_lanes(variant + mk.N_LANES * (a_step == vw), a, aoffs, a_starts, panels, c, np.arange(n_blocks) * mr * ldc, ldc, vw,
                      starts, starts, bias, lo, hi, parallel, pf)
        c = c.reshape(-1, ldc)
    want = mk.gemm_lanes_reference(a, aoffs, a_starts, mr, w.T, bias[:m], lo, hi, a_step=a_step)
    return c, want, m


@pytest.mark.parametrize("variant", range(len(mk.LANES)))
@pytest.mark.parametrize("m,k,n_blocks", [(1, 1, 1), (5, 9, 3), (70, 288, 7), (128, 40, 2)])
@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("a_step,blocked", [(1, False), (mk.DWB_VL, True), (mk.DWB_VL, False)])
def test_lanes_product_matches_reference(variant, m, k, n_blocks, parallel, a_step, blocked):
    # prefetching B (past its end too, on the last k steps) changes nothing: half of the cases
    pf = mk.LANES_PREFETCH_K if (variant + n_blocks) % 2 else 0
    c, want, m = _lanes_product(variant, m, k, n_blocks, parallel, lo=-2.0, hi=3.0, a_step=a_step,
                                blocked=blocked, pf=pf)
    got = c[:len(want), :m]
    assert np.abs(got - want).max() <= 1e-5 * max(np.abs(want).max(), 1.0) * np.sqrt(k)
    assert np.isfinite(c[:len(want)]).all()            # padding channels are written too
    assert np.isnan(c[len(want):]).all()               # nothing past the blocks' rows


@pytest.mark.parametrize("shape", [(1, 128, 7, 7, 128, "3x3"), (2, 96, 7, 7, 40, "3x3"), (1, 64, 7, 7, 96, "1x1"),
                                   (1, 16, 6, 6, 24, "3x3"), (1, 8, 5, 9, 20, "3x3"), (1, 24, 4, 4, 64, "1x1")])
def test_lanes_layout_matches_reference(direct, shape, monkeypatch):
    """The lanes layout on any small map (forced: the rule takes it where it pads least, which
    depends on the target's tiles), rows that are not a multiple of MR included."""
    monkeypatch.setattr(conv_direct, "LANES_MIN_GAIN", 0.0)
    n, ci, h, w, co, k = shape
    spec = (n, ci, h, w, co, (3, 3), (1, 1), (1, 1), [1, 1, 1, 1], 1, "Relu") if k == "3x3" else \
        (n, ci, h, w, co, (1, 1), (1, 1), (1, 1), [0, 0, 0, 0], 1, None)
    inputs, attrs = make(spec)
    got = run_fast(inputs, attrs)
    want = conv_mod.conv_reference(inputs, attrs)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert conv_mod._get_plan(attrs, inputs[0].shape, inputs[1].shape).micro.lanes


def test_epilogue_clamps_and_keeps_nan():
    c, want = _product(0, 10, 20, 30, False, lo=-0.5, hi=0.75)
    np.testing.assert_allclose(c[:10, :30], want, rtol=1e-5, atol=1e-5)
    assert c[:10, :30].min() >= -0.5 and c[:10, :30].max() <= 0.75
    a = np.ones((1, 1), np.float32)
    b = np.full(mk.nr_of(0) + 64, np.nan, np.float32)
    panels = mk.pack_panels(a, mk.mr_of(0))
    c = np.zeros((mk.mr_of(0), mk.nr_of(0)), np.float32)
    mk.gemm_tiles_serial(0, panels, b, np.zeros(1, np.int64), c, np.zeros(mk.mr_of(0), np.float32), 0.0, 6.0)
    assert np.isnan(c[0]).all()                       # Relu6 of NaN is NaN, not 0 or 6


def _gather_case(variant, k_len, seed=0):
    """A gathered tile call on random offsets into C filled with NaN around the tile (only the
    tile's rows of NR channels may be written): (C, its tile rows, the float64 sums)."""
    mr, nv = mk.GATHER_SHAPES[variant]
    nr = nv * mk.GATHER_VW
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(300).astype(np.float32)
    b = rng.standard_normal(40 * nr).astype(np.float32)
    aoffs = np.concatenate([rng.integers(0, 290, k_len), [10 ** 9]]).astype(np.int64)   # past k_len: unread
    boffs = np.concatenate([rng.integers(0, 39, k_len) * nr, [10 ** 9]]).astype(np.int64)
    ldc, c_off = 3 * nr, nr
    c = np.full(mr * ldc + nr, np.nan, np.float32)
    mk.gather_tile(variant, a, aoffs, 3, b, boffs, k_len, c, c_off, ldc, False)
    first = np.stack([c[c_off + i * ldc:c_off + i * ldc + nr] for i in range(mr)])
    mk.gather_tile(variant, a, aoffs, 3, b, boffs, k_len, c, c_off, ldc, True)
    second = np.stack([c[c_off + i * ldc:c_off + i * ldc + nr] for i in range(mr)])
    rest = np.ones(c.shape, bool)
    for i in range(mr):
        rest[c_off + i * ldc:c_off + i * ldc + nr] = False
    return first, second, c[rest], mk.gather_reference(a, aoffs, 3, mr, b, boffs, k_len, nr)


@pytest.mark.parametrize("variant", range(mk.N_GATHER))
@pytest.mark.parametrize("k_len", [1, 9, 100])
def test_gathered_tile_matches_reference(variant, k_len):
    """Sums over gathered rows of A and B, then the same added to what C holds (accumulate)."""
    first, second, untouched, want = _gather_case(variant, k_len)
    assert np.abs(first - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
    assert np.abs(second - 2 * want).max() <= 2e-5 * max(1.0, np.abs(want).max())
    assert np.isnan(untouched).all()                 # nothing outside the tile written


def test_gathered_tile_choice():
    """MR the largest of 4, 2 dividing the run; NR padding the channels least."""
    for pixels, channels in [(4, 32), (2, 64), (8, 256), (6, 20), (4, 3)]:
        v = mk.choose_gather(pixels, channels)
        mr, nv = mk.GATHER_SHAPES[v]
        assert pixels % mr == 0 and (mr == 4 or pixels % 4)
        pad = -(-channels // (nv * mk.GATHER_VW)) * nv * mk.GATHER_VW
        assert pad == min(-(-channels // (n * mk.GATHER_VW)) * n * mk.GATHER_VW
                          for m, n in mk.GATHER_SHAPES if m == mr)
    assert mk.choose_gather(3, 32) is None and mk.choose_gather(5, 32) is None


def test_scalar_fallback_gives_the_same_results(tmp_path):
    """HASTE_EDGE_MICROKERNEL=scalar: the plain loop nest, in a fresh process."""
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    code = f"""
import sys; sys.path.insert(0, {str(repo)!r}); sys.path.insert(0, {str(repo / 'tests')!r})
import numpy as np
from haste_edge import microkernel as mk
assert mk.TARGET["kind"] == "scalar"
import test_microkernel as t
for v in range(len(mk.SHAPES)):
    c, want = t._product(v, 20, 50, 40, False, lo=-1.0, hi=1.0)
    assert np.abs(c[:20, :40] - want).max() < 1e-4, v
for v in range(len(mk.LANES)):
    c, want, m = t._lanes_product(v, 20, 50, 3, False, lo=-1.0, hi=1.0)
    assert np.abs(c[:len(want), :m] - want).max() < 1e-4, v
from conv_cases import CASES, make, poison_scratch, run_fast
from haste_edge.ops import conv
dst, want = t._dwb_tile_case(9, 2 * mk.DWB_VL)
assert np.abs(dst[5:5 + mk.DWB_MR * mk.DWB_VL].reshape(want.shape) - want).max() < 1e-4
t.test_transpose_matches_reference()
for v in range(mk.N_GATHER):
    t.test_gathered_tile_matches_reference(v, 20)
for name in ("dw-plane", "dw-tiles-s2-ragged", "dw-cl-mult2"):
    inputs, attrs = make(CASES[name])
    assert np.abs(run_fast(inputs, attrs) - conv.conv_reference(inputs, attrs)[0]).max() < 1e-4, name
print("ok")
"""
    env = {**__import__("os").environ, "HASTE_EDGE_MICROKERNEL": "scalar"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_variant_choice():
    """Wide products take the widest tile; smaller ones the least padded work, the narrow tile's
    counted _NARROW_COST times."""
    assert mk.choose_variant(16, mk.WIDE_MIN_COLS) == 0
    for rows, cols in [(32, 700), (256, 16), (128, 49), (7, 3), (80, 196)]:
        v = mk.choose_variant(rows, cols)
        pad = lambda u: -(-rows // mk.mr_of(u)) * mk.mr_of(u) * -(-cols // mk.nr_of(u)) * mk.nr_of(u)
        cost = lambda u: pad(u) * (mk._NARROW_COST if u == 2 else 1.0)
        assert all(cost(v) <= cost(u) for u in range(len(mk.SHAPES)))


@pytest.fixture
def direct(monkeypatch):
    monkeypatch.setattr(conv_mod, "_DIRECT", True)


@pytest.mark.parametrize("name", [n for n in CASES if not n.startswith("dw")])
@pytest.mark.parametrize("bias", [True, False])
def test_direct_conv_matches_reference(direct, name, bias):
    inputs, attrs = make(CASES[name], bias=bias)
    attrs = dict(attrs)                                 # a new node: a new plan on the direct path
    got = run_fast(inputs, attrs)
    assert conv_mod._get_plan(attrs, inputs[0].shape, inputs[1].shape).path == "direct"
    want = conv_mod.conv_reference(inputs, attrs)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", [n for n in CASES if n.startswith("dw")])
def test_depthwise_convs_match_reference(name):
    """Every depthwise case through conv() (channel-blocked) against the float64 reference, on
    scratch buffers full of NaN (the padding is the kernel's to write)."""
    inputs, attrs = make(CASES[name])
    poison_scratch()
    got = run_fast(inputs, dict(attrs))
    want = conv_mod.conv_reference(inputs, attrs)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(1, 32, 28, 28, 32), (1, 64, 14, 14, 128), (2, 128, 7, 7, 128),
                                   (1, 256, 4, 4, 256), (1, 24, 4, 4, 40), (2, 16, 8, 4, 24)])
def test_direct_conv_layouts(direct, shape, monkeypatch):
    """Wide (28x28, 14x14) and exact (4x4 and 8x4 by 4x4 windows; 7x7 with the lanes layout off)
    layouts, direct output and cropped."""
    n, ci, h, w, co = shape
    inputs, attrs = make((n, ci, h, w, co, (3, 3), (1, 1), (1, 1), [1, 1, 1, 1], 1, "Relu"))
    monkeypatch.setattr(conv_direct, "LANES", False)
    got = run_fast(inputs, attrs)
    want = conv_mod.conv_reference(inputs, attrs)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    d = conv_mod._get_plan(attrs, inputs[0].shape, inputs[1].shape).micro
    assert d.exact == (h <= 8)
    assert d.windows == (w == 4)


@pytest.mark.parametrize("ho", [4, 8])
def test_gather_taps_by_windows_matches_the_table(ho):
    """Exact columns gathered 4x4 window at a time equal the offset table's and plain indexing,
    bit for bit, the windows anywhere in the phases; nothing past the columns is written."""
    wq, k = 7, 50
    ph = RNG.standard_normal(ho * wq * 12 + 64).astype(np.float32)
    taps = RNG.choice(ph.size - ((ho - 1) * wq + 4), size=k, replace=False).astype(np.int64)
    want = np.stack([np.stack([ph[t + p * wq:t + p * wq + 4] for p in range(ho)]) for t in taps]).reshape(-1)
    for windows in (False, True):
        cols = np.full(k * ho * 4 + 16, np.nan, np.float32)
        conv_direct.gather_taps(ph, taps, cols, ho, 4, wq, windows)
        np.testing.assert_array_equal(cols[:want.size], want)
        assert np.isnan(cols[want.size:]).all()


def test_first_call_in_a_fresh_process_does_not_crash():
    """The product's parallel kernel is reached only from compiled code; if nothing had started
    Numba's thread pool before, the process died with SIGSEGV (conv_direct.DirectConv.run)."""
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    code = f"""
import sys; sys.path.insert(0, {str(repo)!r})
import numpy as np
from haste_edge.ops import conv
conv._DIRECT = True
for wino in (False, True):
    conv._WINOGRAD = wino
    x = np.ones((1, 32, 28, 28), np.float32)
    w = np.ones((32, 32, 3, 3), np.float32)
    attrs = dict(kernel_shape=[3, 3], strides=[1, 1], dilations=[1, 1], pads=[1, 1, 1, 1], group=1,
                 activation="", clip_min=None, clip_max=None)
    y = conv.conv([x, w, None], attrs)[0]
    assert y[0, 0, 1, 1] == 32 * 9, y[0, 0, 1, 1]
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-2000:])
