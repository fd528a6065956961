"""Dense engine vs onnxruntime, side by side in one process, at 1 and 2 threads.

    python benchmarks/bench_dense.py [--runs 30] [--threads 1 2] [--models NAME ...]

Models (default: the first two): the bundled Fashion-MNIST ResNet-18 (a real test image),
EfficientNet-Lite0, and the ImageNet-size ResNet-18, VGG-11 (GlobalAveragePool + Linear head) and
MobileNetV2 with synthetic calibrated weights (converters/dense_zoo.py), each fed the same real photo.
Prints median latency per inference and the ratio haste-edge / onnxruntime (lower is better).
"""
from __future__ import annotations

import argparse
import platform

import numpy as np

from common import ROOT, header, interleaved, ort_session, write_results

import haste_edge
from haste_edge.preprocess import load_batch


DEFAULT_MODELS = ("fashion_resnet18", "efficientnet_lite0")
BUNDLED = ("fashion_resnet18", "fashion_vit_t4")          # haste_edge/assets, with models/<name>.onnx
MODELS = (*DEFAULT_MODELS, "resnet18_224", "vgg11_224", "mobilenetv2_224", "fashion_vit_t4")


def cases(names=DEFAULT_MODELS):
    """(name, model, onnx path, input) per model name; test-zoo models get the first foolbox photo,
    preprocessed as their sidecar says."""
    from model_zoo import foolbox_images, get_model
    for name in names:
        if name in BUNDLED:
            model = haste_edge.load(name)
            yield (name, model, ROOT / "models" / f"{name}.onnx",
                   load_batch(haste_edge.sample_images()[:1], model.meta["input"]))
        else:
            path = get_model(name)
            model = haste_edge.load(path)
            yield name, model, path, load_batch([foolbox_images()[0][0]], model.meta["input"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--name", default=None, help="results file name (default dense_<arch>)")
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(DEFAULT_MODELS))
    args = ap.parse_args()
    rows = []
    for name, model, onnx_path, x in cases(args.models):
        feed = {model.input_names[0]: x}
        macs = sum(model.macs().values())
        for t in args.threads:
            haste_edge.set_threads(t)
            sess = ort_session(onnx_path, t)
            ours = model.run(feed)[model.output_names[0]]
            theirs = sess.run(None, feed)[0]
            err = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
            med = interleaved({"ours": lambda: model.run(feed), "ort": lambda: sess.run(None, feed)}, args.runs)
            rows.append((name, t, macs, med["ours"] * 1e3, med["ort"] * 1e3, med["ours"] / med["ort"], err))
    lines = [header(), f"runs per cell: {args.runs} (median, interleaved), batch 1; onnxruntime with intra-op "
             "spinning off", "",
             "| model | threads | dense MMAC | haste-edge ms | onnxruntime ms | ratio | max rel. diff |",
             "|---|---|---|---|---|---|---|"]
    for name, t, macs, ours, ort, ratio, err in rows:
        lines.append(f"| {name} | {t} | {macs / 1e6:.1f} | {ours:.2f} | {ort:.2f} | {ratio:.2f}x | {err:.1e} |")
    keys = ("model", "threads", "macs", "ours_ms", "ort_ms", "ratio", "max_rel_diff")
    write_results(args.name or f"dense_{platform.machine()}", lines,
                  {"runs": args.runs, "rows": [dict(zip(keys, r)) for r in rows]})

if __name__ == "__main__":
    main()
