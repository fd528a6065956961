"""PROM on the bundled MobileNetV2-style Fashion-MNIST model: accuracy, storage, estimated energy and
latency of fp32, int8 and PROM side by side, with onnxruntime fp32 and int8 (its own QDQ quantiser).

    python benchmarks/prom_report.py [--runs 40] [--threads 1 2] [--limit 0]

Models: haste_edge/assets/fashion_mobilenetv2.haste (fp32) and fashion_mobilenetv2_prom.haste (PROM
after the fine-tune, converters/train_fashion_mobilenetv2.py); int8 and PROM post-training are
converted here from models/fashion_mobilenetv2.onnx (haste-edge convert --int8 / --prom), all
calibrated on the first 512 Fashion-MNIST training images, as the fine-tune was. Accuracy on all
10,000 test images. Energy: haste_edge/prom/energy.py (an estimate, labelled so). Latency: batch 1,
one test image, interleaved in one process. Writes benchmarks/results/prom_<arch>.md and .json.
"""
from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import numpy as np

from common import ROOT, header, interleaved, ort_session, write_results

import haste_edge
from haste_edge import modelfile
from haste_edge.datasets import load_fashion_mnist
from haste_edge.preprocess import normalise
from haste_edge.prom.energy import LABEL, PJ, float_picojoules, prom_picojoules
from haste_edge.prom.method import totals

ASSETS = ROOT / "haste_edge" / "assets"
ONNX = ROOT / "models" / "fashion_mobilenetv2.onnx"
CALIB = 512


def images(split, limit=0):
    x, y = load_fashion_mnist(split)
    if limit:
        x, y = x[:limit], y[:limit]
    spec = haste_edge.load(ASSETS / "fashion_mobilenetv2.haste").meta["input"]
    return np.stack([normalise(im.astype(np.float32), spec) for im in x]), y.astype(np.int64)


def accuracy(model, x, y, batch=500) -> float:
    name = model.input_names[0]
    hits = sum(int((model.run({name: x[i:i + batch]})[model.output_names[0]].argmax(1) == y[i:i + batch]).sum())
               for i in range(0, len(x), batch))
    return hits / len(x)


def ort_int8(calib: np.ndarray, folder: Path) -> Path:
    """onnxruntime's static QDQ quantisation (per-channel weights, its MinMax calibration)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    pre, out = folder / "pre.onnx", folder / "int8_qdq.onnx"
    quant_pre_process(str(ONNX), str(pre))
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--limit", type=int, default=0, help="test images for accuracy (0: all 10,000)")
    ap.add_argument("--name", default=f"prom_{platform.machine()}")
    args = ap.parse_args()

    from converters.onnx_import import import_onnx
    from converters.prom import quantize_graph

    tmp = Path(tempfile.mkdtemp(prefix="prom_report."))
    calib, _ = images("train", CALIB)
    x_test, y_test = images("test", args.limit)
    fp32_graph = import_onnx(ONNX)
    paths = {"fp32": ASSETS / "fashion_mobilenetv2.haste",
             "fp16 file": modelfile.save(fp32_graph, tmp / "fp16.haste", fp16=True),
             "int8 (post-training)": modelfile.save(quantize_graph(fp32_graph, calib, "int8"), tmp / "int8.haste"),
             "PROM (post-training)": modelfile.save(quantize_graph(fp32_graph, calib, "prom"), tmp / "ptq.haste"),
             "PROM (fine-tuned)": ASSETS / "fashion_mobilenetv2_prom.haste"}
    models = {k: haste_edge.load(p) for k, p in paths.items() if k != "fp16 file"}
    lines = [f"# PROM on the bundled MobileNetV2-style Fashion-MNIST model", "", header(), ""]

    # accuracy and storage
    lines += [f"## Accuracy ({len(x_test)} test images) and storage", "",
              "| model | top-1 | file bytes | vs fp16 file |", "|---|---|---|---|"]
    fp16_bytes = paths["fp16 file"].stat().st_size
    doc = {"header": header(), "accuracy": {}, "bytes": {}, "energy_pj": {}, "latency_ms": {}}
    for k, p in paths.items():
        size = p.stat().st_size
        doc["bytes"][k] = size
        acc = accuracy(models[k], x_test, y_test) if k in models else None
        doc["accuracy"][k] = acc
        acc_s = f"{acc * 100:.2f} %" if acc is not None else "(as fp32)"
        lines.append(f"| {k} | {acc_s} | {size:,} | {fp16_bytes / size:.2f}x smaller |")
        print(lines[-1], flush=True)

    # energy estimate per image, from one counted run
    name = models["fp32"].input_names[0]
    x1 = x_test[:1]
    dense = sum(models["fp32"].macs().values())
    w32 = sum(w.nbytes for w in models["fp32"].graph.weights.values())
    rows = {"fp32": float_picojoules(dense, w32, 32), "fp16": float_picojoules(dense, w32 / 2, 16)}
    for k in ("int8 (post-training)", "PROM (fine-tuned)"):
        models[k].run({name: x1})
        stats = models[k].last_stats()
        rows[k] = prom_picojoules(stats)
        if k.startswith("PROM"):
            rows["PROM, accumulations priced as int8 adds"] = prom_picojoules(stats, int8_accumulate=True)
            doc["prom_counts"] = {f: int(v) for f, v in totals(stats).items()}
    lines += ["", f"## Energy per image: {LABEL}", "",
              f"Per-op pJ: {PJ}. Dense MACs {dense:,}. PROM counts per image: {doc.get('prom_counts')}", "",
              "| model | arithmetic uJ | fp16 / this | + weights from DRAM uJ | fp16 / this |", "|---|---|---|---|---|"]
    f16 = rows["fp16"]
    for k, r in rows.items():
        a, d = r["arithmetic"], r["arithmetic"] + r["weights_dram"]
        doc["energy_pj"][k] = r
        lines.append(f"| {k} | {a / 1e6:.2f} | {f16['arithmetic'] / a:.1f}x | {d / 1e6:.2f} | "
                     f"{(f16['arithmetic'] + f16['weights_dram']) / d:.1f}x |")
    lines.append("")
    lines.append("Paper (MobileNetV2, ImageNet): 23.9x less energy than fp16, 2.7x smaller storage.")

    # latency
    q_path = ort_int8(calib[:128], tmp)
    lines += ["", "## Latency, batch 1 (median of interleaved runs)", "",
              "| threads | ours fp32 ms | ours int8 ms | ours PROM ms | onnxruntime fp32 ms | onnxruntime int8 ms "
              "| PROM / ours fp32 | PROM / onnxruntime fp32 |", "|---|---|---|---|---|---|---|---|"]
    feed = {name: x1}
    for t in args.threads:
        haste_edge.set_threads(t)
        ort32, ort8 = ort_session(ONNX, t), ort_session(q_path, t)
        fns = {"fp32": lambda: models["fp32"].run(feed), "int8": lambda: models["int8 (post-training)"].run(feed),
               "prom": lambda: models["PROM (fine-tuned)"].run(feed),
               "ort fp32": lambda: ort32.run(None, feed), "ort int8": lambda: ort8.run(None, feed)}
        med = {k: v * 1e3 for k, v in interleaved(fns, args.runs).items()}
        doc["latency_ms"][t] = med
        lines.append(f"| {t} | {med['fp32']:.3f} | {med['int8']:.3f} | {med['prom']:.3f} | {med['ort fp32']:.3f} | "
                     f"{med['ort int8']:.3f} | {med['prom'] / med['fp32']:.2f}x | {med['prom'] / med['ort fp32']:.2f}x |")
        print(lines[-1], flush=True)
    write_results(args.name, lines, doc)


if __name__ == "__main__":
    main()
