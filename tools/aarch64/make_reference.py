"""Write tests/data/aarch64_reference.npz: what the bundled model computes on the bundled images, and
tests/data/aarch64_vit_reference.npz: the same for the four-frame ViT, dense and with HTTM.

Run natively on the host (x86):  python3 tools/aarch64/make_reference.py
tests/test_aarch64.py recomputes the same on any machine (natively, or on emulated aarch64 through
tools/aarch64/run.sh) and compares: dense and HASTE logits up to float rounding, HASTE's
executed-MAC counts and per-layer bucket sums exactly.
"""
from __future__ import annotations

import platform
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import haste_edge  # noqa: E402
from haste_edge.preprocess import load_batch  # noqa: E402

OUT = REPO / "tests" / "data" / "aarch64_reference.npz"
OUT_VIT = REPO / "tests" / "data" / "aarch64_vit_reference.npz"
# (the test imports these: keep them the single source of the settings checked)
HASTE_SETTINGS = ("L=10,P=2,seed=0", "L=8,P=4,seed=1")
VIT = "fashion_vit_t4"
HTTM_SETTINGS = ("q=0.5,kv=0.3,ns=8,nt=4,outliers=0.1", "q=0.3,kv=0.3,mode=uniform")


def compute(model=None) -> dict[str, np.ndarray]:
    """Dense and HASTE results of the bundled model on the bundled images, as arrays."""
    model = model or haste_edge.load()
    images = haste_edge.sample_images()
    x = load_batch(images, model.meta["input"])
    feeds = {model.input_names[0]: x}
    out_name = model.output_names[0]
    res = {"images": np.array([p.name for p in images]), "settings": np.array(HASTE_SETTINGS)}
    model.set_haste(None)
    res["dense_logits"] = model.run(feeds)[out_name]
    res["dense_executed"] = model.last_stats().executed().astype(np.int64)
    for i, spec in enumerate(HASTE_SETTINGS):
        model.set_haste(spec)
        res[f"haste{i}_logits"] = model.run(feeds)[out_name]
        st = model.last_stats()
        rows = [r for r in st.layers if r.method == "haste"]
        res[f"haste{i}_executed"] = st.executed().astype(np.int64)
        res[f"haste{i}_layers"] = np.array([r.name for r in rows])
        res[f"haste{i}_buckets"] = np.stack([r.counters["buckets_sum"] for r in rows]).astype(np.int64)
    model.set_haste(None)
    return res


def compute_vit(model=None) -> dict[str, np.ndarray]:
    """Dense and HTTM results of the bundled four-frame ViT on the bundled images (their views)."""
    model = model or haste_edge.load(VIT)
    x = load_batch(haste_edge.sample_images(), model.meta["input"])
    feeds = {model.input_names[0]: x}
    out_name = model.output_names[0]
    res = {"settings": np.array(HTTM_SETTINGS)}
    model.set_httm(None)
    res["dense_logits"] = model.run(feeds)[out_name]
    for i, spec in enumerate(HTTM_SETTINGS):
        model.set_httm(spec)
        res[f"httm{i}_logits"] = model.run(feeds)[out_name]
        rows = [r for r in model.last_stats().layers if r.method == "httm"]
        res[f"httm{i}_kept"] = np.stack([np.stack([r.counters["queries_kept"], r.counters["keys_kept"]])
                                         for r in rows]).astype(np.int64)
        res[f"httm{i}_executed"] = model.last_stats().executed().astype(np.int64)
    model.set_httm(None)
    return res


def main() -> None:
    import numba
    from threadpoolctl import threadpool_info
    res = compute()
    blas = ",".join(str(i.get("architecture")) for i in threadpool_info() if i["user_api"] == "blas")
    res["generated_on"] = np.array(f"{platform.machine()} numpy {np.__version__} numba {numba.__version__} "
                                   f"(BLAS kernels {blas}, Numba CPU {numba.config.CPU_NAME or 'host'})")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **res)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes) on {res['generated_on']}")
    vit = compute_vit()
    vit["generated_on"] = res["generated_on"]
    np.savez_compressed(OUT_VIT, **vit)
    print(f"wrote {OUT_VIT} ({OUT_VIT.stat().st_size} bytes)")
    for i, spec in enumerate(HASTE_SETTINGS):
        red = 1 - res[f"haste{i}_executed"] / res["dense_executed"]
        print(f"  {spec}: {len(res[f'haste{i}_layers'])} HASTE layers, MAC reduction "
              f"{red.mean():.1%} (per image {red.min():.1%}..{red.max():.1%})")


if __name__ == "__main__":
    main()
