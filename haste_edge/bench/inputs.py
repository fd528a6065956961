"""The inputs a benchmark cycles through. HASTE's executed MACs change with the input, so a benchmark
uses several real or random inputs, never one, unless the user names a single image."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from haste_edge.errors import InputError
from haste_edge.preprocess import load_batch

N_RANDOM = 8
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def _random(model, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)   # seeded: the same inputs on every machine and run
    return [rng.standard_normal(model.input_shape(1)).astype(np.float32) for _ in range(n)]


def _images(paths, model) -> list[np.ndarray]:
    spec = model.meta.get("input")
    if not spec:
        raise InputError(f"{model.path}: the model stores no image preprocessing; use --input random")
    return [load_batch([p], spec) for p in paths]        # a multi-frame model's views included


def make_inputs(model, choice: str | None) -> tuple[list[np.ndarray], str]:
    """(inputs of batch 1, description). choice: None (bundled sample images when the model has
    preprocessing, else random), "samples", "random", an image file or a folder of images."""
    from haste_edge import sample_images
    if choice is None:
        choice = "samples" if model.meta.get("input") else "random"
    if choice == "random":
        return _random(model, N_RANDOM), f"random: {N_RANDOM} seeded standard-normal inputs, cycled"
    if choice == "samples":
        paths = sample_images()
        return _images(paths, model), f"samples: the {len(paths)} bundled test images, cycled"
    path = Path(choice)
    if path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise InputError(f"{path}: no image files in this folder")
        return _images(paths, model), f"{path}: {len(paths)} images, cycled"
    return _images([path], model), f"{path}: one image"
