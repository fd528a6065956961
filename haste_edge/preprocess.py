"""Image file -> model input, following the preprocessing stored with the model (meta["input"]).

Keys of meta["input"]: mode ("L" or "RGB"), resize (short side, pixels), crop (centre crop, pixels),
scale (multiplies 0..255 values), mean and std (per channel, applied after scale), layout "NCHW".
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputError


def load_image(path, spec: dict) -> np.ndarray:
    """One image as a float32 (C, H, W) array, ready to stack into a batch."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            im = im.convert(spec.get("mode", "RGB"))
            im = _resize_crop(im, spec)
            x = np.asarray(im, dtype=np.float32)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise InputError(f"{path}: not a readable image ({e})") from None
    return normalise(x, spec)


def _resize_crop(im: Image.Image, spec: dict) -> Image.Image:
    resize = spec.get("resize")
    if resize:
        w, h = im.size
        s = resize / min(w, h)
        new = (max(1, round(w * s)), max(1, round(h * s)))
        if new != im.size:
            im = im.resize(new, Image.BILINEAR)
    crop = spec.get("crop")
    if crop:
        w, h = im.size
        left, top = (w - crop) // 2, (h - crop) // 2
        im = im.crop((left, top, left + crop, top + crop))
    return im


def normalise(x: np.ndarray, spec: dict) -> np.ndarray:
    """(H, W) or (H, W, C) pixel values 0..255 -> normalised (C, H, W) float32."""
    if x.ndim == 2:
        x = x[:, :, None]
    x = x * np.float32(spec.get("scale", 1.0))
    mean = np.asarray(spec.get("mean", [0.0]), dtype=np.float32)
    std = np.asarray(spec.get("std", [1.0]), dtype=np.float32)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def load_batch(paths, spec: dict) -> np.ndarray:
    return np.stack([load_image(p, spec) for p in paths])


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
