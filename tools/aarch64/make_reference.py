"""Write tests/data/aarch64_reference.npz: what the bundled model computes on the bundled images.

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
# (the test imports these: keep them the single source of the settings checked)
HASTE_SETTINGS = ("L=10,P=2,seed=0", "L=8,P=4,seed=1")


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
    for i, spec in enumerate(HASTE_SETTINGS):
        red = 1 - res[f"haste{i}_executed"] / res["dense_executed"]
        print(f"  {spec}: {len(res[f'haste{i}_layers'])} HASTE layers, MAC reduction "
              f"{red.mean():.1%} (per image {red.min():.1%}..{red.max():.1%})")


if __name__ == "__main__":
    main()
