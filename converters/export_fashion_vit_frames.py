"""The trained one-frame Fashion-MNIST ViT as a T-frame model: the same weights reading T views of one
item as one token sequence (converters/vit.py), for token merging across frames (HTTM).

    python converters/export_fashion_vit_frames.py --from artifacts/vit/fashion_vit --frames 4

Reads FROM.pt (state dict) and FROM.json (sidecar) as converters/train_fashion_vit.py writes them,
writes FROM_t<T>.onnx and FROM_t<T>.json beside them. The frames' embeddings the one-frame training
never used stay at their initial zeros, so every frame's tokens carry the same position embedding:
a view repeated exactly gives the one-frame model's answer. The sidecar's input.frames tells
haste-edge how to make the views of each image (haste_edge/preprocess.py frame_views: shifted by up
to 2 pixels, noise std 0.1 in normalised units, seeded). Checks onnxruntime against torch.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from converters.vit import MAX_FRAMES, FashionViT, export  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="src", default="artifacts/vit/fashion_vit", help="path stem of the .pt and .json")
    ap.add_argument("--frames", type=int, default=4, help=f"frames per item (2-{MAX_FRAMES})")
    ap.add_argument("--shift", type=int, default=2)
    ap.add_argument("--noise", type=float, default=0.1)
    args = ap.parse_args(argv)
    if not 2 <= args.frames <= MAX_FRAMES:
        ap.error(f"--frames must be 2 to {MAX_FRAMES}")
    src = Path(args.src)
    meta = json.loads(src.with_suffix(".json").read_text())
    arch = meta["architecture"]
    model = FashionViT(frames=args.frames, dim=arch["dim"], depth=arch["depth"], heads=arch["heads"],
                       mlp_ratio=arch["mlp_ratio"])
    state = torch.load(src.with_suffix(".pt"), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    stem = src.with_name(f"{src.name}_t{args.frames}")
    export(model, stem.with_suffix(".onnx"))
    meta["name"] = stem.name
    meta["input"]["frames"] = {"count": args.frames, "shift": args.shift, "noise": args.noise, "seed": 0}
    meta.pop("test_accuracy_torch", None)        # measured on one frame; haste-edge eval measures this one
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")

    import onnxruntime as ort
    x = np.random.default_rng(0).standard_normal((4, args.frames, 28, 28)).astype(np.float32)
    with torch.no_grad():
        want = model.eval()(torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(str(stem.with_suffix(".onnx")), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    print(f"wrote {stem.with_suffix('.onnx')} and .json; onnxruntime vs torch max abs diff {np.abs(got - want).max():.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
