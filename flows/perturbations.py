"""Kinds of drift a model can meet in production, applied to held-out images.

``onebox simulate`` sends traffic made with these, and the drift check's tests measure that each
kind is flagged; one definition serves both. Images are uint8 arrays shaped (N, C, H, W).
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
from PIL import Image, ImageFilter

DriftKind = Literal["none", "noise", "rotate", "invert", "blur"]
DRIFT_KINDS: tuple[str, ...] = get_args(DriftKind)

NOISE_SIGMA = 48.0  # gray levels: a poor sensor in low light
ROTATION_DEGREES = 35.0  # a camera mounted askew
BLUR_RADIUS_FRACTION = 0.06  # of the image's shorter side: out of focus


def _per_image(images: np.ndarray, change: object) -> np.ndarray:
    changed = np.empty_like(images)
    for index, image in enumerate(images):
        channels_last = np.moveaxis(image, 0, -1)
        picture = Image.fromarray(channels_last[..., 0] if channels_last.shape[-1] == 1 else channels_last)
        result = np.asarray(change(picture))  # type: ignore[operator]
        changed[index] = np.moveaxis(result.reshape(channels_last.shape), -1, 0)
    return changed


def perturb(images: np.ndarray, kind: DriftKind, rng: np.random.Generator) -> np.ndarray:
    """``images`` as production would see them under drift ``kind`` ("none": unchanged).

    Raises:
        ValueError: an unknown kind, or images that are not uint8 (N, C, H, W).
    """
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, C, H, W), not {images.dtype} {images.shape}")
    if kind == "none":
        return images.copy()
    if kind == "noise":
        noisy = images.astype(np.float32) + rng.normal(0.0, NOISE_SIGMA, images.shape)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    if kind == "invert":
        return 255 - images
    if kind == "rotate":
        # Each image turned by about ROTATION_DEGREES, either way, with a little spread.
        angles = rng.choice([-1.0, 1.0], len(images)) * rng.normal(ROTATION_DEGREES, 5.0, len(images))
        turns = iter(angles)
        bilinear = Image.Resampling.BILINEAR
        return _per_image(images, lambda picture: picture.rotate(float(next(turns)), resample=bilinear))
    if kind == "blur":
        radius = max(1.0, BLUR_RADIUS_FRACTION * min(images.shape[2:]))
        return _per_image(images, lambda picture: picture.filter(ImageFilter.GaussianBlur(radius)))
    raise ValueError(f"unknown drift kind {kind!r}; choose one of {', '.join(DRIFT_KINDS)}")
