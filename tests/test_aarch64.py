"""The device path gives the host's results: the bundled .haste model on the bundled images.

Runs natively and on emulated aarch64 (tools/aarch64/run.sh, a Raspberry Pi 4's Cortex-A72 by
default) against tests/data/aarch64_reference.npz, written on x86 by tools/aarch64/make_reference.py:
dense and HASTE logits equal up to float rounding, HASTE's executed MACs and per-layer bucket sums
exactly (the same channels merged on both machines). Needs only numpy, numba, pillow, threadpoolctl.
"""
from __future__ import annotations

import importlib.util
import os
import platform
import sys
from pathlib import Path

import numpy as np
import pytest

import haste_edge

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "data" / "aarch64_reference.npz"
HOST_ONLY = {"onnx", "onnxruntime", "torch"}
RTOL = 1e-4   # of the largest |logit|


def _generator():
    spec = importlib.util.spec_from_file_location("make_reference", REPO / "tools/aarch64/make_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def results():
    """(reference, this machine's results, host-only modules the device path imported)."""
    gen = _generator()
    ref = dict(np.load(REFERENCE, allow_pickle=False))
    assert tuple(ref["settings"]) == gen.HASTE_SETTINGS, "reference is stale: rerun make_reference.py"
    before = set(sys.modules)
    model = haste_edge.load()              # the deployable .haste file, NumPy only
    assert Path(model.path).suffix == ".haste"
    got = gen.compute(model)
    new = {m for m in set(sys.modules) - before if m.split(".")[0] in HOST_ONLY}
    return ref, got, new


def _close(got, ref):
    err = float(np.abs(got - ref).max())
    return err <= RTOL * float(np.abs(ref).max()), err


def test_machine_and_device_imports(results, capsys):
    ref, got, new = results
    import numba

    from threadpoolctl import threadpool_info

    from haste_edge.threads import threading_layer
    blas = [f"{i['internal_api']} {i.get('architecture')}" for i in threadpool_info() if i["user_api"] == "blas"]
    with capsys.disabled():
        print(f"\n[aarch64 check] platform.machine()={platform.machine()} numpy {np.__version__} "
              f"numba {numba.__version__} (threading layer {threading_layer()}, "
              f"{numba.get_num_threads()} threads, CPU {numba.config.CPU_NAME or 'host'}, BLAS {blas}); "
              f"reference made on {ref['generated_on']}")
    assert not new, f"the device path imported host-only modules: {sorted(new)}"
    assert list(got["images"]) == list(ref["images"])
    # tools/aarch64/run.sh sets this: there the check must run on aarch64 against a reference made
    # on another architecture, or it proves nothing.
    expected = os.environ.get("HASTE_EDGE_EXPECT_MACHINE")
    if expected:
        assert platform.machine() == expected, f"running on {platform.machine()}, expected {expected}"
        made_on = str(ref["generated_on"]).split()[0]
        assert made_on != expected, f"the reference was made on {made_on} too: not a cross-architecture check"


def test_dense_logits_match_reference(results):
    ref, got, _ = results
    ok, err = _close(got["dense_logits"], ref["dense_logits"])
    assert ok, (f"dense logits differ from the reference by {err:.3g} "
                f"(max |logit| {np.abs(ref['dense_logits']).max():.3g})")
    np.testing.assert_array_equal(got["dense_logits"].argmax(1), ref["dense_logits"].argmax(1))
    np.testing.assert_array_equal(got["dense_executed"], ref["dense_executed"])


@pytest.mark.parametrize("i", [0, 1])
def test_haste_counts_and_logits_match_reference(results, i):
    ref, got, _ = results
    spec = ref["settings"][i]
    assert list(got[f"haste{i}_layers"]) == list(ref[f"haste{i}_layers"]), spec
    # same buckets: the per-layer, per-image bucket sums and executed MACs are equal, not close
    diff = got[f"haste{i}_buckets"] != ref[f"haste{i}_buckets"]
    assert not diff.any(), (f"{spec}: bucket sums differ in layers "
                            f"{sorted(str(n) for n in ref[f'haste{i}_layers'][diff.any(axis=1)])}: "
                            f"{got[f'haste{i}_buckets'][diff]} vs {ref[f'haste{i}_buckets'][diff]}")
    np.testing.assert_array_equal(got[f"haste{i}_executed"], ref[f"haste{i}_executed"], err_msg=spec)
    ok, err = _close(got[f"haste{i}_logits"], ref[f"haste{i}_logits"])
    assert ok, f"{spec}: HASTE logits differ from the reference by {err:.3g}"
    assert (got[f"haste{i}_executed"] < got["dense_executed"]).all(), f"{spec}: HASTE saved no MACs"


@pytest.fixture(scope="module")
def vit_results():
    gen = _generator()
    ref = dict(np.load(REFERENCE.with_name("aarch64_vit_reference.npz"), allow_pickle=False))
    assert tuple(ref["settings"]) == gen.HTTM_SETTINGS, "reference is stale: rerun make_reference.py"
    return ref, gen.compute_vit()


def test_vit_dense_logits_match_reference(vit_results):
    ref, got = vit_results
    ok, err = _close(got["dense_logits"], ref["dense_logits"])
    assert ok, f"ViT dense logits differ from the reference by {err:.3g}"
    np.testing.assert_array_equal(got["dense_logits"].argmax(1), ref["dense_logits"].argmax(1))


@pytest.mark.parametrize("i", [0, 1])
def test_vit_httm_counts_and_logits_match_reference(vit_results, i):
    """Tokens kept per layer and executed MACs exactly (the blocks fix the kept counts; the outliers'
    ranking adds the data); logits within 1e-3 of the largest: a source whose two best matches tie
    to the last bit may take the other on another machine's rounding, which moves its merged token
    a little (none did between AVX-512 and AVX2 x86 when this was written)."""
    ref, got = vit_results
    spec = ref["settings"][i]
    np.testing.assert_array_equal(got[f"httm{i}_kept"], ref[f"httm{i}_kept"], err_msg=spec)
    np.testing.assert_array_equal(got[f"httm{i}_executed"], ref[f"httm{i}_executed"], err_msg=spec)
    err = float(np.abs(got[f"httm{i}_logits"] - ref[f"httm{i}_logits"]).max())
    assert err <= 1e-3 * float(np.abs(ref[f"httm{i}_logits"]).max()), f"{spec}: HTTM logits differ by {err:.3g}"
