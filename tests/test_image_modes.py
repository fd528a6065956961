"""Every Pillow mode an image file may come in reaches the model on the same scale as 8-bit greyscale."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import haste_edge
from haste_edge.errors import InputError
from haste_edge.preprocess import load_batch, softmax


def _as_mode(a: np.ndarray, mode: str) -> Image.Image:
    """The 8-bit greyscale image `a` stored in `mode`, holding the same picture."""
    grey = Image.fromarray(a)
    if mode == "I;16":
        return Image.fromarray(a.astype(np.uint16) * 257)
    if mode == "I":
        return Image.fromarray(a.astype(np.int32) * 257)
    if mode == "F":
        return Image.fromarray(a.astype(np.float32) / 255)
    if mode == "F255":
        return Image.fromarray(a.astype(np.float32))
    if mode == "RGBA":
        im = grey.convert("RGBA")
        im.putalpha(128)  # half transparent: alpha is dropped, the stored colours stay
        return im
    if mode == "P":
        return grey.convert("P")
    return grey.convert(mode)  # LA, CMYK, RGB, 1...


@pytest.fixture(scope="module")
def model_and_reference():
    model = haste_edge.load()
    paths = haste_edge.sample_images()
    spec = model.meta["input"]
    x = load_batch(paths, spec)
    probs = softmax(model.run({model.input_names[0]: x})[model.output_names[0]])
    return model, paths, probs


@pytest.mark.parametrize("mode, fmt", [("I;16", "png"), ("I", "tiff"), ("F", "tiff"), ("F255", "tiff"),
                                       ("RGBA", "png"), ("P", "png"), ("LA", "png"), ("CMYK", "jpeg"),
                                       ("RGB", "png")])
def test_each_mode_classifies_like_8_bit(tmp_path, model_and_reference, mode, fmt):
    model, paths, ref = model_and_reference
    files = []
    for p in paths:
        im = _as_mode(np.asarray(Image.open(p)), mode)
        f = tmp_path / f"{p.stem}.{fmt}"
        im.save(f, **({"quality": 100, "subsampling": 0} if fmt == "jpeg" else {}))
        assert Image.open(f).mode == im.mode  # the file really holds that mode
        files.append(f)
    x = load_batch(files, model.meta["input"])
    probs = softmax(model.run({model.input_names[0]: x})[model.output_names[0]])
    assert (probs.argmax(1) == ref.argmax(1)).all()
    tol = 0.05 if fmt == "jpeg" else 1e-3  # JPEG is lossy
    assert np.abs(probs - ref).max() < tol


def test_rgb_model_gets_three_equal_channels_from_16_bit(tmp_path):
    a = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    Image.fromarray(a).save(tmp_path / "g.png")
    x = load_batch([tmp_path / "g.png"], {"mode": "RGB"})
    assert x.shape == (1, 3, 8, 8)
    assert np.allclose(x[0, 0], a.astype(np.float64) * 255 / 65535, atol=1e-3) and (x[0, 0] == x[0, 2]).all()


@pytest.mark.parametrize("values, expect", [(np.full((4, 4), 2.0, np.float32) * [[1], [1], [1], [-1]], "range"),
                                            (np.full((4, 4), 300.0, np.float32), "range")])
def test_float_pixels_out_of_range_refused(tmp_path, values, expect):
    Image.fromarray(values.astype(np.float32)).save(tmp_path / "f.tiff")
    with pytest.raises(InputError, match=expect):
        load_batch([tmp_path / "f.tiff"], {"mode": "L"})


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG announcing w x h pixels: Pillow checks the size when it opens the file."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_decompression_bomb_is_an_input_error(tmp_path):
    f = tmp_path / "huge.png"
    f.write_bytes(_png_header_only(30000, 30000))
    with pytest.raises(InputError, match="huge.png: image too large"):
        load_batch([f], {"mode": "L"})


def test_directory_is_named_as_such(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        load_batch([tmp_path], {"mode": "L"})
