"""Readers for MNIST-style idx files (Fashion-MNIST). NumPy only, no torch."""

from __future__ import annotations

import gzip
import os

import numpy as np

# Default location of the Fashion-MNIST idx files on the host.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

# Class names, indexed by label.
FASHION_MNIST_LABELS = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

_IMAGES_MAGIC = 2051  # 0x00000803: ubyte, 3 dims
_LABELS_MAGIC = 2049  # 0x00000801: ubyte, 1 dim


def _read_bytes(path: str) -> bytes:
    # Transparently handle both .gz and raw idx files.
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read idx file ({e})") from e


def _header(data: bytes, path: str, n_ints: int) -> list[int]:
    if len(data) < 4 * n_ints:
        raise ValueError(f"{path}: file too short for idx header ({len(data)} bytes)")
    return [int(v) for v in np.frombuffer(data, dtype=">u4", count=n_ints)]


def read_idx_images(path: str) -> np.ndarray:
    """Read an idx3 image file -> uint8 array (N, rows, cols)."""
    data = _read_bytes(path)
    magic, n, rows, cols = _header(data, path, 4)
    if magic != _IMAGES_MAGIC:
        raise ValueError(f"{path}: bad idx image magic {magic} (expected {_IMAGES_MAGIC})")
    expected = 16 + n * rows * cols
    if len(data) != expected:
        raise ValueError(f"{path}: size {len(data)} bytes, expected {expected} "
                         f"for {n}x{rows}x{cols} images")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows, cols).copy()


def read_idx_labels(path: str) -> np.ndarray:
    """Read an idx1 label file -> uint8 array (N,)."""
    data = _read_bytes(path)
    magic, n = _header(data, path, 2)
    if magic != _LABELS_MAGIC:
        raise ValueError(f"{path}: bad idx label magic {magic} (expected {_LABELS_MAGIC})")
    if len(data) != 8 + n:
        raise ValueError(f"{path}: size {len(data)} bytes, expected {8 + n} for {n} labels")
    return np.frombuffer(data, dtype=np.uint8, offset=8).copy()


def load_fashion_mnist(split: str = "test", root: str | None = None):
    """Return (images uint8 (N,28,28), labels uint8 (N,)) for split 'train' or 'test'."""
    prefixes = {"train": "train", "test": "t10k"}
    if split not in prefixes:
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
    root = root or FASHION_MNIST_DIR
    p = prefixes[split]
    images = read_idx_images(os.path.join(root, f"{p}-images-idx3-ubyte.gz"))
    labels = read_idx_labels(os.path.join(root, f"{p}-labels-idx1-ubyte.gz"))
    if len(images) != len(labels):
        raise ValueError(f"{root}: {split} has {len(images)} images but {len(labels)} labels")
    return images, labels
