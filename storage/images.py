"""Decoding images and converting them to a model's input shape.

Training data and uploaded images go through the same two functions, so a served model sees
inputs prepared exactly as its training data was. No torch here: the serving image imports this.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from storage.errors import OneboxError

GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F", "P;L"})
# Images larger than this are scaled down so a CNN trains in minutes on a CPU.
MAX_SIDE = 64


class ImageDecodeError(OneboxError):
    """Bytes that are not a complete PNG or JPEG image."""


def decode_image(data: bytes, *, source: str = "upload") -> Image.Image:
    """Fully decode image bytes, so truncated files fail here and not later.

    Raises:
        ImageDecodeError: naming ``source`` when the bytes are not a readable image.
    """
    if not data:
        raise ImageDecodeError(f"{source}: the file is empty")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except UnidentifiedImageError as error:
        raise ImageDecodeError(f"{source}: not a PNG or JPEG image") from error
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageDecodeError(f"{source}: not a readable image ({error})") from error
    if image.format not in {"PNG", "JPEG"}:
        raise ImageDecodeError(f"{source}: {image.format} images are not supported; use PNG or JPEG")
    return ImageOps.exif_transpose(image)


def is_gray(image: Image.Image) -> bool:
    if image.mode == "P":
        palette = image.convert("RGB")
        return bool(np.ptp(np.asarray(palette, dtype=np.int16), axis=2).max() == 0)
    return image.mode in GRAY_MODES


def target_size(width: int, height: int) -> tuple[int, int]:
    """The (width, height) an image of this size is trained at: at most MAX_SIDE a side."""
    scale = min(1.0, MAX_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def to_model_array(image: Image.Image, *, channels: int, height: int, width: int) -> np.ndarray:
    """Convert an image to uint8 of shape (channels, height, width), as training data is stored."""
    converted = image.convert("L" if channels == 1 else "RGB")
    if converted.size != (width, height):
        converted = converted.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(converted, dtype=np.uint8)
    if channels == 1:
        return array[np.newaxis, :, :]
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def normalize(batch: np.ndarray) -> np.ndarray:
    """uint8 (N, C, H, W) to the float32 in [0, 1] that models take."""
    return batch.astype(np.float32) / np.float32(255.0)
