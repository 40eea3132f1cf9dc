"""Every mode a PNG or JPEG opens in becomes the model's input correctly, and an image declaring
too many pixels is refused from its header, before a pixel is decoded."""

from __future__ import annotations

import io
import time
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from storage.images import (
    PNG_SIGNATURE,
    ImageTooLargeError,
    Preprocessing,
    declared_pixels,
    decode_image,
    read_header,
)
from storage.limits import DEFAULT_MAX_IMAGE_PIXELS, InputLimits
from storage.settings import Settings, env_name
from tests.storage.test_images import bomb_png


def encoded(image: Image.Image, format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def huge_png(side: int) -> bytes:
    """A real, valid PNG of side x side black pixels: a few hundred KB that decode to side² bytes."""
    return encoded(Image.new("1", (side, side)))


def test_a_valid_13000_pixel_square_is_refused_from_its_header_in_milliseconds() -> None:
    data = huge_png(13000)
    assert len(data) < 1_000_000
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match=r"13000x13000 is 169,000,000 pixels, the limit is 50,000,000"):
        decode_image(data, source="big.png")
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 20_000_000  # decoded, it would be 169 MB (1.45 GB as the RGB a model takes)


@pytest.mark.parametrize("reader", ["decode", "header"])
def test_the_limit_is_the_callers(reader: str) -> None:
    data = encoded(Image.new("L", (300, 200)))
    read = (lambda limit: decode_image(data, max_pixels=limit)) if reader == "decode" else (
        lambda limit: read_header(data, source="upload", max_pixels=limit))  # fmt: skip
    read(60_000)
    with pytest.raises(ImageTooLargeError, match="300x200 is 60,000 pixels, the limit is 59,999"):
        read(59_999)


def test_a_bomb_is_an_image_too_large() -> None:
    with pytest.raises(ImageTooLargeError, match="too many pixels"):
        decode_image(bomb_png())
    assert declared_pixels(bomb_png()) == 30000 * 30000  # what its header says (Pillow would not say)
    assert declared_pixels(huge_png(2000)) == 4_000_000
    assert declared_pixels(encoded(Image.new("RGB", (300, 200)), "JPEG")) == 60_000  # read by Pillow
    assert declared_pixels(b"not an image") == 0
    assert declared_pixels(PNG_SIGNATURE + b"\x00\x00\x00\x0dIHDR\x00\x00") == 0  # cut short


def test_the_settings_and_the_servers_read_the_same_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert env_name("max_image_pixels") == "ONEBOX_MAX_IMAGE_PIXELS"
    assert env_name("max_body_bytes") == "ONEBOX_MAX_BODY_BYTES"
    assert Settings().input_limits == InputLimits()
    limits = InputLimits.from_environment({"ONEBOX_MAX_IMAGE_PIXELS": "1000", "ONEBOX_MAX_BODY_BYTES": "2048"})
    assert InputLimits.from_environment(limits.environment()) == limits
    monkeypatch.setenv("ONEBOX_MAX_IMAGE_PIXELS", "1000")
    assert Settings().input_limits.max_image_pixels == 1000
    assert InputLimits.from_environment({}).max_image_pixels == DEFAULT_MAX_IMAGE_PIXELS
    with pytest.raises(ValueError, match="ONEBOX_MAX_BODY_BYTES='-5' is not a whole number"):
        InputLimits.from_environment({"ONEBOX_MAX_BODY_BYTES": "-5"})


def ramp(height: int = 8, width: int = 8) -> np.ndarray:
    return np.linspace(0, 255, height * width).reshape(height, width).astype(np.uint8)


GRAY = Preprocessing(1, 8, 8)
COLOR = Preprocessing(3, 8, 8)


def test_sixteen_bit_gray_gives_the_same_input_as_eight_bit() -> None:
    wide = Image.fromarray(ramp().astype(np.uint16) * 257)
    opened = decode_image(encoded(wide))
    assert opened.mode.startswith("I")
    assert (GRAY.decode(encoded(wide)) == ramp()).all()
    assert (COLOR.decode(encoded(wide)) == ramp()).all()


def raw_png(samples: np.ndarray, *, color_type: int) -> bytes:
    """A PNG written by hand: 16-bit samples (H, W, channels), which Pillow cannot write in colour."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    height, width = samples.shape[:2]
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in samples)  # filter type 0 per row
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_sixteen_bit_colour_is_scaled_not_clipped() -> None:
    rgb = np.stack([ramp(), 255 - ramp(), np.full((8, 8), 128, np.uint8)], axis=-1)
    png = raw_png(rgb.astype(np.uint16) * 257, color_type=2)
    assert (COLOR.decode(png) == rgb.transpose(2, 0, 1)).all()
    with_alpha = np.concatenate([rgb, np.full((8, 8, 1), 255, np.uint8)], axis=-1)
    assert (COLOR.decode(raw_png(with_alpha.astype(np.uint16) * 257, color_type=6)) == rgb.transpose(2, 0, 1)).all()


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "CMYK", "I", "I;16", "F"])
def test_every_mode_without_transparency_converts_to_the_same_gray(mode: str) -> None:
    """The same picture (black and white halves) in each mode becomes the same model input."""
    pixels = np.zeros((8, 8), np.uint8)
    pixels[:, 4:] = 255
    image = Image.fromarray(pixels)
    if mode in ("I", "I;16"):
        image = Image.fromarray(pixels.astype(np.uint16) * 257)  # 16-bit, as PNG stores it
    elif mode == "F":
        image = Image.fromarray(pixels.astype(np.float32))
    else:
        image = image.convert(mode)
    converted = GRAY.convert(image)
    assert (converted == pixels).all(), (mode, converted)


@pytest.mark.parametrize(("mode", "stored_as"), [("RGBA", "PNG"), ("LA", "PNG"), ("P", "PNG")])
def test_transparent_pixels_are_laid_over_white(mode: str, stored_as: str) -> None:
    """A black stroke on a transparent background, as drawing programs save it: the hidden colour
    of a transparent pixel is black here, which Pillow's convert would have shown."""
    rgba = np.zeros((8, 8, 4), np.uint8)  # transparent black everywhere
    rgba[2:6, 3:5] = (0, 0, 0, 255)  # the stroke: opaque black
    rgba[0, 0] = (0, 0, 0, 128)  # half transparent black: mid gray
    image = Image.fromarray(rgba, mode="RGBA")
    if mode == "LA":
        image = image.convert("LA")
    elif mode == "P":  # entry 0 transparent black, entry 1 opaque black
        image = Image.fromarray((rgba[..., 3] == 255).astype(np.uint8), mode="P")
        image.putpalette([0, 0, 0, 0, 0, 0])
        image.info["transparency"] = 0
    converted = GRAY.decode(encoded(image, stored_as, **({"transparency": 0} if mode == "P" else {})))
    assert converted[0, 3, 3] == 0  # the stroke stays black
    assert converted[0, 7, 7] == 255  # the background is white, not black
    if mode != "P":
        assert 120 <= converted[0, 0, 0] <= 135
    colour = COLOR.decode(encoded(image, stored_as, **({"transparency": 0} if mode == "P" else {})))
    assert colour.shape == (3, 8, 8)
    assert (colour[:, 7, 7] == 255).all()


def test_a_cmyk_jpeg_converts_to_rgb() -> None:
    red = Image.new("RGB", (16, 16), (220, 20, 20)).convert("CMYK")
    array = Preprocessing(3, 4, 4).decode(encoded(red, "JPEG", quality=95))
    assert array[0].min() > 180
    assert array[1].max() < 70
