from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from storage.images import MAX_SIDE, ImageDecodeError, decode_image, target_size, to_model_array
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
