"""`onebox data import` under hostile and unusual files: images over the pixel limit refused from
their header (one line each, no traceback, nothing stored), and real digits saved as 16-bit or
transparent PNGs imported exactly as the 8-bit ones."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from storage.datasets import BUILTIN_DATASET, import_image_folder, list_datasets, open_images, resolve_dataset
from storage.errors import DatasetError
from storage.settings import Settings
from tests.flows.test_cli import onebox
from tests.storage.test_images import bomb_png


def huge_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, format="PNG")  # valid, a few hundred KB
    return buffer.getvalue()


def small_folder(root: Path) -> Path:
    for c in range(2):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 + 150 * c + i, np.uint8)).save(root / f"c{c}" / f"{i}.png")
    return root


def test_images_over_the_pixel_limit_are_listed_and_nothing_is_stored(tmp_path: Path, settings: Settings) -> None:
    source = small_folder(tmp_path / "src")
    (source / "c0" / "bomb.png").write_bytes(bomb_png())
    (source / "c1" / "huge.png").write_bytes(huge_png(13000))
    with pytest.raises(DatasetError) as caught:
        import_image_folder(source, name="limits", settings=settings)
    lines = str(caught.value).splitlines()
    assert "2 file(s)" in lines[0]
    assert any(line.strip().endswith("use a smaller image") and "bomb.png: too many pixels" in line for line in lines)
    assert any("huge.png: too many pixels: 13000x13000 is 169,000,000 pixels" in line for line in lines)
    assert list_datasets(settings) == []


def test_the_limit_is_a_setting(tmp_path: Path, settings: Settings) -> None:
    source = small_folder(tmp_path / "src")
    strict = settings.model_copy(update={"max_image_pixels": 63})
    with pytest.raises(DatasetError, match="8x8 is 64 pixels, the limit is 63"):
        import_image_folder(source, name="limits", settings=strict)


@pytest.mark.slow  # two CLI processes: imports take seconds each
def test_the_cli_prints_one_line_per_bad_file_and_no_traceback(tmp_path: Path, settings: Settings) -> None:
    source = small_folder(tmp_path / "src")
    (source / "c0" / "bomb.png").write_bytes(bomb_png())
    (source / "c1" / "huge.png").write_bytes(huge_png(13000))
    refused = onebox(settings, "data", "import", str(source), "--name", "limits", columns=400)
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr + refused.stdout
    assert sum("too many pixels" in line for line in refused.stderr.splitlines()) == 2
    skipped = onebox(settings, "data", "import", str(source), "--name", "limits", "--skip-bad", columns=400)
    assert skipped.returncode == 0, skipped.stderr
    assert "Traceback" not in skipped.stderr + skipped.stdout
    assert "skipped 2 unreadable file(s)" in skipped.stderr
    assert sum("too many pixels" in line for line in skipped.stderr.splitlines()) == 2
    assert "6 images" in skipped.stdout


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray]:
    """60 of the bundled digits (8x8 gray), spread over every class, and their labels."""
    settings = Settings(home=tmp_path_factory.mktemp("digits-home"))
    images = open_images(resolve_dataset(BUILTIN_DATASET, None, settings))
    positions = np.linspace(0, len(images.labels) - 1, 60).astype(int)
    return np.stack([images.read(int(p)) for p in positions]), images.labels[positions]


def save_digits(root: Path, pixels: np.ndarray, labels: np.ndarray, encode) -> Path:
    for position, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        encode(image[0]).save(root / str(label) / f"{position}.png")
    return root


def test_sixteen_bit_and_transparent_digits_import_as_the_eight_bit_ones(tmp_path: Path, settings, digits) -> None:
    pixels, labels = digits

    def transparent(gray: np.ndarray) -> Image.Image:  # black strokes on a transparent background
        alpha = 255 - gray  # the digit's ink as opacity
        return Image.fromarray(np.stack([np.zeros_like(gray), alpha], axis=-1), mode="LA")

    encodings = {
        "eight": lambda gray: Image.fromarray(gray),
        "sixteen": lambda gray: Image.fromarray(gray.astype(np.uint16) * 257),
        "transparent": transparent,
    }
    imported = {}
    for name, encode in encodings.items():
        folder = save_digits(tmp_path / name, pixels, labels, encode)
        version = import_image_folder(folder, name=name, settings=settings)
        stored = open_images(version)
        imported[name] = np.stack([stored.read(position) for position in range(version.num_images)])
    assert imported["eight"].shape == (60, 1, 8, 8)
    assert (imported["sixteen"] == imported["eight"]).all()  # scaled, not clipped to white
    # Over white, opacity 255 - g of black leaves g: the same picture.
    assert np.abs(imported["transparent"].astype(int) - imported["eight"]).max() <= 1
