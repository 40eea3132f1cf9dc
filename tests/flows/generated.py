"""Small generated image datasets that a CNN can learn in an epoch or two (class = where the bright square is)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from storage.datasets import DatasetVersion, import_image_folder
from storage.settings import Settings


def write_image_folder(
    root: Path, *, classes: int = 3, per_class: int = 12, side: int = 12, rgb: bool = False, seed: int = 0
) -> Path:
    """Class ``c`` has a bright square in quadrant ``c % 4`` (tinted per class in colour) over noise."""
    rng = np.random.default_rng(seed)
    half = side // 2
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (side, side, 3), dtype=np.uint8)
            top, left = (c % 4) // 2 * half, (c % 4) % 2 * half
            bright = np.array([255, 255, 255]) if not rgb else np.roll(np.array([255, 90, 40]), c)
            pixels[top : top + half, left : left + half] = bright
            Image.fromarray(pixels if rgb else pixels[..., 0]).save(folder / f"{i}.png")
    return root


def generated_dataset(
    settings: Settings, root: Path, *, name: str = "squares", **options: int | bool
) -> DatasetVersion:
    """Import a :func:`write_image_folder` dataset into ``settings``' home."""
    return import_image_folder(write_image_folder(root, **options), name=name, settings=settings)  # type: ignore[arg-type]
