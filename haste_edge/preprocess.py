"""Image file -> model input, following the preprocessing stored with the model (meta["input"]).

Keys of meta["input"]: mode ("L" or "RGB"), resize (short side, pixels), crop (centre crop, pixels),
size ([H, W]: the image is stretched to it if still another size), scale (multiplies 0..255 values),
mean and std (per channel, applied after scale), layout "NCHW", and for a model that reads several
frames of one item (a multi-frame transformer) frames: {"count": T, "shift": s, "noise": sigma,
"seed": n}: frame 0 is the image, frame t > 0 a copy shifted by up to s pixels each way (the border
black) with Gaussian noise of std sigma in normalised units (frame_views; the same batch always
gets the same views).

Pixel values reach `scale` on the 0..255 range of an 8-bit image, whatever the file stores:
- 8-bit modes (L, P, RGB, CMYK, YCbCr, ...) go through Pillow's conversion; an alpha channel
  (RGBA, LA, PA) is dropped, keeping the colours stored under it, as Pillow's convert does;
- 16-bit greyscale (I;16 and its byte orders) is scaled from 0..65535;
- I (32-bit integers) is read as 16-bit data, so its values must lie in 0..65535;
- F (floating point) is read as 0..1 if its maximum is at most 1, else as 0..255 (other values
  are refused).
High-depth images are resized in floating point, then given as many channels as the mode asks.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputError


_HIGH_DEPTH = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def load_image(path, spec: dict) -> np.ndarray:
    """One image as a float32 (C, H, W) array, ready to stack into a batch."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an image file")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            x = pixels(im, spec)
    except Image.DecompressionBombError as e:
        raise InputError(f"{path}: image too large to decode safely ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise InputError(f"{path}: not a readable image ({e})") from None
    except ValueError as e:
        raise InputError(f"{path}: {e}") from None
    return normalise(x, spec)


def pixels(im: Image.Image, spec: dict) -> np.ndarray:
    """A Pillow image, resized and cropped, as float32 (H, W) or (H, W, C) on the 0..255 scale."""
    mode = spec.get("mode", "RGB")
    if im.mode not in _HIGH_DEPTH:
        return np.asarray(_resize_crop(im.convert(mode), spec), dtype=np.float32)
    x = np.asarray(im, dtype=np.float64)
    if im.mode == "F":
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 255 or not np.isfinite(hi):
            raise ValueError(f"floating-point pixels range {lo:g}..{hi:g}; expected 0..1 or 0..255")
        x = x * 255 if hi <= 1 else x
    else:
        if im.mode == "I" and (x.min() < 0 or x.max() > 65535):
            raise ValueError(f"32-bit pixels range {x.min():g}..{x.max():g}; expected 16-bit data (0..65535)")
        x = x * (255 / 65535)
    x = np.asarray(_resize_crop(Image.fromarray(x.astype(np.float32)), spec), dtype=np.float32)
    return np.repeat(x[:, :, None], 3, axis=2) if mode == "RGB" else x


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
    size = spec.get("size")
    if size and tuple(im.size) != (size[1], size[0]):
        im = im.resize((size[1], size[0]), Image.BILINEAR)
    return im


def assumed_spec(input_shape) -> dict:
    """Preprocessing for a model that stores none, from its (N, C, H, W) input: greyscale for one
    channel, RGB for three, stretched to H x W, pixels scaled to [0,1] (how most models are fed)."""
    if len(input_shape) != 4 or input_shape[1] not in (1, 3):
        raise InputError(f"model input shape {tuple(input_shape)}: images can feed only (N, 1, H, W) or "
                         f"(N, 3, H, W) inputs; give the model a <model>.json (see README)")
    _, c, h, w = input_shape
    return {"mode": "L" if c == 1 else "RGB", "size": [h, w], "scale": 1 / 255, "mean": [0.0], "std": [1.0]}


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
    return frame_views(np.stack([load_image(p, spec) for p in paths]), spec)


def frame_views(x: np.ndarray, spec: dict) -> np.ndarray:
    """(N, 1, H, W) normalised images -> (N, T, H, W) with spec["frames"] (module docstring);
    x itself when the spec has no frames."""
    frames = spec.get("frames") or {}
    count = int(frames.get("count", 1))
    if count <= 1:
        return x
    if x.ndim != 4 or x.shape[1] != 1:
        raise InputError(f"frames: views are made of one-channel images, got a batch of shape {x.shape}")
    shift, noise = int(frames.get("shift", 2)), np.float32(frames.get("noise", 0.1))
    rng = np.random.default_rng(int(frames.get("seed", 0)))
    black = np.float32((0.0 - np.float32(spec.get("mean", [0.0])[0])) / np.float32(spec.get("std", [1.0])[0]))
    n, _, h, w = x.shape
    padded = np.full((n, h + 2 * shift, w + 2 * shift), black, np.float32)
    padded[:, shift:shift + h, shift:shift + w] = x[:, 0]
    out = np.empty((n, count, h, w), np.float32)
    out[:, 0] = x[:, 0]
    for t in range(1, count):
        dy, dx = rng.integers(0, 2 * shift + 1, n), rng.integers(0, 2 * shift + 1, n)
        for i in range(n):
            out[i, t] = padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out[:, t] += noise * rng.standard_normal((n, h, w)).astype(np.float32)
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
