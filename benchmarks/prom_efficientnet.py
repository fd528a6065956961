"""PROM and int8 post-training (no fine-tune) on EfficientNet-Lite0 (ImageNet): top-1 agreement with
the fp32 model and top-1 against the labels on the 20 foolbox ImageNet photos.

    python benchmarks/prom_efficientnet.py [--calib-from photos|skimage]

Calibration inputs: the unlabeled scikit-image and scikit-learn photos when installed (not the
evaluated ones), else the 20 photos themselves (then said in the output). Writes
benchmarks/results/prom_efficientnet_lite0.md and .json.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from common import header, write_results

import haste_edge
from haste_edge import modelfile
from haste_edge.preprocess import load_batch


def unlabeled_photos(spec, folder: Path) -> list[np.ndarray]:
    """Photos not among the evaluated ones (scikit-image's and scikit-learn's samples), saved as PNG
    and preprocessed as the model's meta says."""
    from PIL import Image
    arrays = []
    try:
        from skimage import data
        arrays += [getattr(data, name)() for name in ("chelsea", "coffee", "astronaut", "rocket")]
    except ImportError:
        pass
    try:
        from sklearn.datasets import load_sample_images
        arrays += list(load_sample_images().images)
    except ImportError:
        pass
    paths = []
    for i, a in enumerate(arrays):
        paths.append(folder / f"calib_{i}.png")
        Image.fromarray(a).convert("RGB").save(paths[-1])
    return list(load_batch(paths, spec)) if paths else []


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args()
    from converters.onnx_import import import_onnx
    from converters.prom import quantize_graph
    from model_zoo import foolbox_images, get_model

    path = get_model("efficientnet_lite0")
    graph = import_onnx(path)
    spec = graph.meta["input"]
    photos = foolbox_images()
    x = load_batch([p for p, _ in photos], spec)
    labels = np.array([y for _, y in photos])
    tmp = Path(tempfile.mkdtemp(prefix="prom_effnet."))
    calib = unlabeled_photos(spec, tmp)
    source = f"{len(calib)} scikit-image / scikit-learn sample photos"
    if not calib:
        calib, source = list(x), "the 20 evaluated photos themselves (no other photos installed)"
    calib = np.stack(calib)
    fp32 = haste_edge.Model(graph)
    name = fp32.input_names[0]
    ref = fp32.run({name: x})[fp32.output_names[0]].argmax(1)
    lines = ["# EfficientNet-Lite0, post-training int8 and PROM (no fine-tune), 20 foolbox ImageNet photos", "",
             header(), "", f"calibration: {source}", "",
             "| model | file bytes | top-1 agreement with fp32 | top-1 vs labels |", "|---|---|---|---|"]
    doc = {"calibration": source, "rows": {}}
    f32_path = modelfile.save(graph, tmp / "fp32.haste")
    rows = [("fp32", f32_path)]
    for mode in ("int8", "prom"):
        rows.append((mode, modelfile.save(quantize_graph(graph, calib, mode), tmp / f"{mode}.haste")))
    for label, p in rows:
        m = haste_edge.load(p)
        top = m.run({name: x})[m.output_names[0]].argmax(1)
        agree, acc = float((top == ref).mean()), float((top == labels).mean())
        doc["rows"][label] = {"bytes": p.stat().st_size, "agreement": agree, "top1": acc}
        lines.append(f"| {label} | {p.stat().st_size:,} | {agree * 100:.0f} % | {acc * 100:.0f} % |")
        print(lines[-1], flush=True)
    write_results("prom_efficientnet_lite0", lines, doc)


if __name__ == "__main__":
    main()
