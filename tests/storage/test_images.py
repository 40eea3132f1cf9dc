from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from storage.errors import ParameterError
from storage.images import (
    MAX_SIDE,
    ImageDecodeError,
    Preprocessing,
    decode_image,
    parse_image_size,
    read_header,
    target_size,
    to_model_array,
)
from tests.conftest import png_bytes


def test_truncated_png_is_refused() -> None:
    data = png_bytes(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))
    with pytest.raises(ImageDecodeError, match="upload: not a readable image"):
        decode_image(data[: len(data) // 2])


@pytest.mark.parametrize(("data", "expected"), [(b"", "empty"), (b"hello", "not a PNG or JPEG")])
def test_non_images_are_refused(data: bytes, expected: str) -> None:
    with pytest.raises(ImageDecodeError, match=expected):
        decode_image(data, source="upload")


def test_other_formats_are_named() -> None:
    import io

    buffer = io.BytesIO()
    Image.new("L", (4, 4)).save(buffer, format="BMP")
    with pytest.raises(ImageDecodeError, match="BMP images are not supported"):
        decode_image(buffer.getvalue())


def test_color_image_to_gray_model_input() -> None:
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[:, :8] = 255
    array = to_model_array(decode_image(png_bytes(rgb)), channels=1, height=8, width=8)
    assert array.shape == (1, 8, 8)
    assert array[0, :, :3].min() > 200
    assert array[0, :, 5:].max() < 50


def test_gray_image_to_color_model_input() -> None:
    array = to_model_array(decode_image(png_bytes(np.full((5, 7), 9, np.uint8))), channels=3, height=5, width=7)
    assert array.shape == (3, 5, 7)
    assert (array == 9).all()


def test_target_size_caps_the_longer_side() -> None:
    assert target_size(8, 8) == (8, 8)
    assert target_size(640, 480) == (MAX_SIDE, 48)


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose header declares far more pixels than Pillow's limit (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def sixteen_bit_png(values: np.ndarray) -> bytes:
    return png_bytes(values.astype(np.uint16))


def test_a_decompression_bomb_is_a_decode_error_not_a_crash() -> None:
    data = bomb_png()
    assert len(data) < 100
    with pytest.raises(ImageDecodeError, match="upload: too many pixels"):
        decode_image(data)
    with pytest.raises(ImageDecodeError, match="too many pixels"):
        read_header(data, source="bomb.png")


def test_sixteen_bit_gray_is_scaled_not_clipped() -> None:
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64)
    image = decode_image(sixteen_bit_png(ramp))
    assert image.mode.startswith("I")
    array = Preprocessing(1, 64, 64).convert(image)
    assert array.dtype == np.uint8
    assert array.min() == 0
    assert array.max() == 255
    assert 120 <= array[0, 32, 0] <= 135  # the middle of the ramp is mid-gray, not white
    assert (np.diff(array.reshape(-1).astype(int)) >= 0).all()  # still a ramp
    color = Preprocessing(3, 8, 8).convert(decode_image(sixteen_bit_png(np.full((8, 8), 32896))))
    assert (color == 128).all()


def test_header_reports_size_and_colour_without_decoding() -> None:
    header = read_header(png_bytes(np.zeros((30, 50, 3), np.uint8)), source="a.png")
    assert (header.width, header.height, header.gray) == (50, 30, False)
    assert read_header(png_bytes(np.zeros((4, 6), np.uint8)), source="g.png").gray


def test_a_gray_palette_image_counts_as_gray() -> None:
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).convert("P").save(buffer, format="PNG")
    palette = buffer.getvalue()
    assert read_header(palette, source="p.png").gray
    colour = io.BytesIO()
    Image.new("RGB", (4, 4), (255, 0, 0)).convert("P").save(colour, format="PNG")
    assert not read_header(colour.getvalue(), source="c.png").gray


def wide_image() -> Image.Image:
    """100x50: left half white, right half black."""
    pixels = np.zeros((50, 100), np.uint8)
    pixels[:, :50] = 255
    return Image.fromarray(pixels)


def test_stretch_crop_and_pad_fit_a_wide_photo_into_a_square() -> None:
    stretched = Preprocessing(1, 20, 20, "stretch").convert(wide_image())
    cropped = Preprocessing(1, 20, 20, "crop").convert(wide_image())
    padded = Preprocessing(1, 20, 20, "pad").convert(wide_image())
    for array in (stretched, cropped, padded):
        assert array.shape == (1, 20, 20)
    assert stretched[0, 10, 2] == 255
    assert stretched[0, 10, 17] == 0
    assert (cropped[0, :, 2] == 255).all()
    assert (cropped[0, :, 17] == 0).all()
    assert (padded[0, :4] == 0).all()
    assert (padded[0, -4:] == 0).all()
    assert padded[0, 10, 2] == 255


def test_jpeg_draft_decodes_a_large_photo_at_a_reduced_size_first() -> None:
    photo = png_bytes(np.random.default_rng(1).integers(0, 256, (400, 600, 3), dtype=np.uint8), format="JPEG")
    assert decode_image(photo, draft=(64, 64)).size[0] < 600
    assert decode_image(photo).size == (600, 400)
    array = Preprocessing(3, 64, 64, "crop", jpeg_draft=True).decode(photo)
    assert array.shape == (3, 64, 64)


@pytest.mark.parametrize(("text", "expected"), [("64", (64, 64)), ("96x128", (96, 128)), (" 7 X 9 ", (7, 9))])
def test_image_sizes_parse(text: str, expected: tuple[int, int]) -> None:
    assert parse_image_size(text) == expected


@pytest.mark.parametrize(("text", "expected"), [("0", "out of range"), ("64x", "not N or HxW"), ("big", "N or HxW"),
                                                ("5000", "out of range")])  # fmt: skip
def test_bad_image_sizes_are_refused(text: str, expected: str) -> None:
    with pytest.raises(ParameterError, match=expected):
        parse_image_size(text)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"channels": 2}, "channels must be 1"),
        ({"resize": "zoom"}, "resize policy 'zoom'"),
        ({"height": 0}, "out of range"),
    ],
)
def test_impossible_preprocessing_is_refused(fields: dict[str, object], expected: str) -> None:
    raw: dict[str, object] = {"channels": 3, "height": 8, "width": 8, **fields}
    with pytest.raises(ParameterError, match=expected):
        Preprocessing.from_dict(raw)


def test_preprocessing_round_trips_and_old_records_mean_stretch() -> None:
    chosen = Preprocessing(3, 32, 48, "pad", jpeg_draft=True)
    assert Preprocessing.from_dict(chosen.to_dict()) == chosen
    assert Preprocessing.from_dict({"channels": 1, "height": 8, "width": 8}) == Preprocessing(1, 8, 8, "stretch", False)


def test_a_run_can_resize_a_recorded_preprocessing() -> None:
    recorded = Preprocessing(3, 48, 64, "stretch", jpeg_draft=True)
    assert recorded.resized(image_size=(224, 224), resize="crop") == Preprocessing(3, 224, 224, "crop", True)
    assert recorded.resized(resize="pad") == Preprocessing(3, 48, 64, "pad", True)
    assert recorded.resized() == recorded
    with pytest.raises(ParameterError, match="out of range"):
        recorded.resized(image_size=(0, 5))


def test_an_exif_rotated_photo_is_measured_and_decoded_upright() -> None:
    import io

    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees": stored 60 wide, shown 60 tall
    Image.new("RGB", (60, 20), (200, 10, 10)).save(buffer, format="JPEG", exif=exif)
    header = read_header(buffer.getvalue(), source="phone.jpg")
    assert (header.width, header.height) == (20, 60)
    assert decode_image(buffer.getvalue()).size == (20, 60)
    # The draft size is asked in the stored orientation: reduced 4x, still upright.
    assert decode_image(buffer.getvalue(), draft=(5, 15)).size == (5, 15)
