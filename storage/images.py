"""Decoding images and converting them to a model's input: one definition, :class:`Preprocessing`.

Dataset import, a training run that asks for another resolution, and the model server all turn
image bytes into uint8 (C, H, W) with :meth:`Preprocessing.decode`, so a served model sees an
upload prepared exactly as its training data was. No torch here: the serving image imports this.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, cast, get_args

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from storage.errors import OneboxError, ParameterError
from storage.limits import DEFAULT_MAX_IMAGE_PIXELS

GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F", "P;L"})
SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})  # PNG's 16-bit gray opens as one
ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
# Every mode a PNG or JPEG opens in (16-bit colour PNGs open as RGB/RGBA, Adobe JPEGs as CMYK);
# each is converted by Preprocessing.convert. Anything else is refused by name.
KNOWN_MODES = GRAY_MODES | ALPHA_MODES | {"P", "RGB", "CMYK", "YCbCr"}
# Images larger than this are scaled down so a CNN trains in minutes on a CPU (the default only).
MAX_SIDE = 64
LARGEST_SIDE = 4096  # a training resolution above this is a typo, not a plan
SUPPORTED_FORMATS = frozenset({"PNG", "JPEG"})
EXIF_ORIENTATION = 0x0112
Resize = Literal["stretch", "crop", "pad"]
RESIZE_POLICIES: tuple[str, ...] = get_args(Resize)
_SIZE_PATTERN = re.compile(r"^\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?$")
# Pillow warns (two lines in a server's log) from 89 megapixels; onebox's own limit
# (ONEBOX_MAX_IMAGE_PIXELS, checked in _open) refuses such an image with a one-line error instead.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageDecodeError(OneboxError):
    """Bytes that are not a complete PNG or JPEG image."""


class ImageTooLargeError(ImageDecodeError):
    """An image whose header declares more pixels than the limit (a server answers 413)."""


def _too_large(source: str, width: int, height: int, max_pixels: int) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"{source}: too many pixels: {width}x{height} is {width * height:,} pixels, the limit is "
        f"{max_pixels:,} (ONEBOX_MAX_IMAGE_PIXELS); use a smaller image"
    )


def _open(data: bytes, source: str, max_pixels: int) -> Image.Image:
    """Open (header only) and check the format and the declared size; every way Pillow refuses
    bytes becomes one error. Nothing is decoded yet, so a decompression bomb costs nothing."""
    if not data:
        raise ImageDecodeError(f"{source}: the file is empty")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:  # not an OSError: it must be caught by name
        raise ImageTooLargeError(f"{source}: too many pixels for an image ({error}); use a smaller image") from error
    except UnidentifiedImageError as error:
        raise ImageDecodeError(f"{source}: not a PNG or JPEG image") from error
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageDecodeError(f"{source}: not a readable image ({error})") from error
    if image.format not in SUPPORTED_FORMATS:
        raise ImageDecodeError(f"{source}: {image.format} images are not supported; use PNG or JPEG")
    width, height = image.size
    if width * height > max_pixels:
        raise _too_large(source, width, height, max_pixels)
    if image.mode not in KNOWN_MODES:
        raise ImageDecodeError(f"{source}: images of mode {image.mode} are not supported; save it as RGB or gray")
    return image


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says, read without decoding its pixels (import's first pass)."""

    width: int  # after the EXIF orientation is applied
    height: int
    gray: bool


def read_header(data: bytes, *, source: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> ImageHeader:
    """Size and colour of an image from its header only.

    Raises:
        ImageTooLargeError: the header declares more than ``max_pixels`` pixels.
        ImageDecodeError: not a PNG or JPEG.
    """
    image = _open(data, source, max_pixels)
    width, height = image.size
    try:
        if image.getexif().get(EXIF_ORIENTATION) in {5, 6, 7, 8}:  # rotated by 90 degrees on decode
            width, height = height, width
    except (OSError, ValueError, SyntaxError):  # a broken EXIF block: decoding will judge the file
        pass
    return ImageHeader(width=width, height=height, gray=is_gray(image))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def declared_pixels(data: bytes) -> int:
    """The pixel count an image's header declares (0 when it has no readable header): cheap.

    A PNG's size is read from its first chunk, IHDR, where the format puts it; other formats'
    headers are read by Pillow (opening an image with Pillow cost about as much as decoding a
    small one, and the server asks this of every upload).
    """
    if data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big") * int.from_bytes(data[20:24], "big")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError):
        return 0
    return width * height


def decode_image(
    data: bytes,
    *,
    source: str = "upload",
    draft: tuple[int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> Image.Image:
    """Fully decode image bytes, so truncated files fail here and not later.

    Args:
        draft: (width, height) the image will be reduced to; a JPEG is then decoded at the
            smallest power-of-two reduction still at least that large (much faster for photos).
        max_pixels: the most pixels the header may declare; checked before any pixel is decoded.

    Raises:
        ImageTooLargeError: the header declares more than ``max_pixels`` pixels.
        ImageDecodeError: naming ``source`` when the bytes are not a readable image.
    """
    image = _open(data, source, max_pixels)
    try:
        if draft is not None and image.format == "JPEG":
            width, height = draft
            if image.getexif().get(EXIF_ORIENTATION) in {5, 6, 7, 8}:
                width, height = height, width
            image.draft(image.mode, (width, height))
        image.load()
        return ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"{source}: too many pixels for an image ({error}); use a smaller image") from error
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageDecodeError(f"{source}: not a readable image ({error})") from error


def is_gray(image: Image.Image) -> bool:
    """Whether an image has one channel of information (a gray palette counts), header only."""
    if image.mode == "P":
        palette = image.palette
        if palette is not None and palette.mode == "RGB" and palette.palette:
            rgb = np.frombuffer(bytes(palette.palette), dtype=np.uint8)
            rgb = rgb[: len(rgb) // 3 * 3].reshape(-1, 3)
            return bool((rgb.max(axis=1) == rgb.min(axis=1)).all())
        return bool(np.ptp(np.asarray(image.convert("RGB"), dtype=np.int16), axis=2).max() == 0)
    return image.mode in GRAY_MODES


def to_eight_bit(image: Image.Image) -> Image.Image:
    """16-bit and float gray as 8-bit gray, scaled (Pillow's own convert("L") clips them to white)."""
    if image.mode in SIXTEEN_BIT_MODES:
        wide = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), mode="L")
    if image.mode == "F":
        return Image.fromarray(np.clip(np.rint(np.asarray(image)), 0, 255).astype(np.uint8), mode="L")
    return image


def flatten_transparency(image: Image.Image) -> Image.Image:
    """An image with transparency (an alpha channel, or a palette or colour key marked
    transparent) laid over white, as a browser or an image viewer shows it. Pillow's own
    convert("L"/"RGB") drops the alpha instead, which turns a transparent background into
    whatever colour the hidden pixels happen to hold (often black, hiding black strokes)."""
    if image.mode not in ALPHA_MODES and "transparency" not in image.info:
        return image
    gray = image.mode in ("LA", "La") or (image.mode in ("L", "P") and is_gray(image))
    over_white = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image.convert("RGBA"))
    return over_white.convert("L" if gray else "RGB")


def target_size(width: int, height: int) -> tuple[int, int]:
    """The (width, height) an image of this size is trained at by default: at most MAX_SIDE a side."""
    scale = min(1.0, MAX_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def parse_image_size(text: str) -> tuple[int, int]:
    """``"64"`` or ``"96x128"`` (height x width) as (height, width).

    Raises:
        ParameterError: not one or two whole numbers from 1 to LARGEST_SIDE.
    """
    match = _SIZE_PATTERN.match(text)
    if not match:
        raise ParameterError(f"image size {text!r} is not N or HxW (e.g. 64 or 96x128)")
    height = int(match.group(1))
    width = int(match.group(2) or height)
    if not (1 <= height <= LARGEST_SIDE and 1 <= width <= LARGEST_SIDE):
        raise ParameterError(f"image size {text!r} is out of range: each side 1 to {LARGEST_SIDE} pixels")
    return height, width


@dataclass(frozen=True)
class Preprocessing:
    """How image bytes become a model input: channels, resolution and the resize policy.

    ``stretch`` resizes to height x width, ignoring the aspect ratio; ``crop`` resizes the short
    side to fit and cuts the centre; ``pad`` fits the long side and letterboxes with black.
    ``jpeg_draft`` lets JPEG decoding skip to a reduced size first (recorded, because it changes
    pixels slightly: datasets imported before it existed were decoded in full).
    """

    channels: int
    height: int
    width: int
    resize: Resize = "stretch"
    jpeg_draft: bool = False

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ParameterError(f"channels must be 1 (gray) or 3 (colour), not {self.channels}")
        if not (1 <= self.height <= LARGEST_SIDE and 1 <= self.width <= LARGEST_SIDE):
            raise ParameterError(f"image size {self.height}x{self.width} is out of range: 1 to {LARGEST_SIDE} a side")
        if self.resize not in RESIZE_POLICIES:
            raise ParameterError(f"resize policy {self.resize!r} is unknown; use one of {', '.join(RESIZE_POLICIES)}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.channels, self.height, self.width

    def convert(self, image: Image.Image) -> np.ndarray:
        """A decoded image as uint8 (channels, height, width)."""
        converted = flatten_transparency(to_eight_bit(image)).convert("L" if self.channels == 1 else "RGB")
        size = (self.width, self.height)
        if converted.size != size:
            if self.resize == "crop":
                converted = ImageOps.fit(converted, size, Image.Resampling.BILINEAR)
            elif self.resize == "pad":
                converted = ImageOps.pad(converted, size, Image.Resampling.BILINEAR, color=0)
            else:
                converted = converted.resize(size, Image.Resampling.BILINEAR)
        array = np.asarray(converted, dtype=np.uint8)
        if self.channels == 1:
            return array[np.newaxis, :, :]
        return np.ascontiguousarray(array.transpose(2, 0, 1))

    def decode(self, data: bytes, *, source: str = "upload", max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
        """Image bytes as uint8 (channels, height, width).

        Raises:
            ImageTooLargeError: the header declares more than ``max_pixels`` pixels.
            ImageDecodeError: the bytes are not a readable PNG or JPEG.
        """
        draft = (self.width, self.height) if self.jpeg_draft else None
        return self.convert(decode_image(data, source=source, draft=draft, max_pixels=max_pixels))

    def resized(self, *, image_size: tuple[int, int] | None = None, resize: Resize | None = None) -> Preprocessing:
        """The same conversion at another (height, width) and/or resize policy: a run's own choice."""
        height, width = image_size or (self.height, self.width)
        return replace(self, height=height, width=width, resize=resize or self.resize)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Preprocessing:
        return cls(
            channels=int(raw["channels"]),
            height=int(raw["height"]),
            width=int(raw["width"]),
            resize=cast(Resize, raw.get("resize", "stretch")),
            jpeg_draft=bool(raw.get("jpeg_draft", False)),
        )


def to_model_array(image: Image.Image, *, channels: int, height: int, width: int) -> np.ndarray:
    """Convert an image to uint8 (channels, height, width) by stretching, as older bundles expect."""
    return Preprocessing(channels=channels, height=height, width=width).convert(image)


def normalize(batch: np.ndarray) -> np.ndarray:
    """uint8 (N, C, H, W) to the float32 in [0, 1] that models take."""
    return batch.astype(np.float32) / np.float32(255.0)
