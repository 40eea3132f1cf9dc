"""Datasets: immutable, content-hashed versions of image folders, listed in a SQLite catalog.

A version's folder holds a copy of the original files (``files/``) and its images converted to
the recorded training resolution in an on-disk store read one image at a time
(storage/image_store.py), so training never depends on the folder it was imported from and
never needs the whole dataset in memory. The import itself is storage/dataset_import.py.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage.errors import DatasetError
from storage.image_store import SKIPPED_FILE, DatasetImages
from storage.settings import Settings

if TYPE_CHECKING:
    # Imported where images are read or written: listing and resolving versions (`onebox data
    # list`, a mistyped `onebox train --dataset`) reads only the catalog and must answer at once.
    import numpy as np

    from storage.images import Preprocessing, Resize

__all__ = [
    "BUILTIN_DATASET",
    "DatasetImages",
    "DatasetVersion",
    "LoadedDataset",
    "import_image_folder",
    "list_datasets",
    "load_dataset",
    "open_images",
    "resolve_dataset",
]

BUILTIN_DATASET = "digits"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
CATALOG_TABLE = "dataset_versions"
ImportProgress = Callable[[str, int, int], None]  # phase ("scan" or "convert"), done, total


@dataclass(frozen=True)
class DatasetVersion:
    """One immutable version of a dataset, as the catalog records it."""

    name: str
    version: str
    classes: tuple[str, ...]
    counts: dict[str, int]
    image_shape: tuple[int, int, int]  # channels, height, width
    created: str
    path: Path
    resize: str = "stretch"  # how images of another size were fitted: see storage.images.Preprocessing
    jpeg_draft: bool = False
    skipped: int = 0  # unreadable files left out with --skip-bad (listed in the version's skipped.txt)
    # Where a version made from another came from (an inbox merge, storage/inbox_merge.py): at least
    # parent (its version), model, inbox_batch, by, at. None for an import.
    lineage: dict[str, Any] | None = None

    @property
    def num_images(self) -> int:
        return sum(self.counts.values())

    @property
    def preprocessing(self) -> Preprocessing:
        """How this version's stored images were made from its files (and how to serve its models)."""
        from storage.images import Preprocessing

        channels, height, width = self.image_shape
        return Preprocessing.from_dict(
            {
                "channels": channels,
                "height": height,
                "width": width,
                "resize": self.resize,
                "jpeg_draft": self.jpeg_draft,
            }
        )

    def skipped_files(self) -> list[str]:
        """Each file left out at import, with the reason (empty when none was)."""
        listing = self.path / SKIPPED_FILE
        return listing.read_text().splitlines() if listing.is_file() else []


@dataclass(frozen=True)
class LoadedDataset:
    version: DatasetVersion
    images: np.ndarray  # uint8, (N, C, H, W)
    labels: np.ndarray  # int64, (N,), indexes into version.classes


def row_to_version(row: dict[str, Any], settings: Settings) -> DatasetVersion:
    return DatasetVersion(
        name=row["name"],
        version=row["version"],
        classes=tuple(json.loads(row["classes"])),
        counts=json.loads(row["counts"]),
        image_shape=(row["channels"], row["height"], row["width"]),
        created=row["created"],
        path=settings.datasets_dir / row["name"] / row["version"],
        resize=row.get("resize") or "stretch",  # rows written before resize policies existed
        jpeg_draft=bool(row.get("jpeg_draft") or False),
        skipped=int(row.get("skipped") or 0),
        lineage=json.loads(row["lineage"]) if row.get("lineage") else None,  # none before lineage existed
    )


def list_datasets(settings: Settings) -> list[DatasetVersion]:
    """Every stored version, newest first (a home with no catalog yet has none; nothing is created)."""
    if not settings.catalog_path.is_file():
        return []
    with contextlib.closing(sqlite3.connect(settings.catalog_path, timeout=30)) as db:
        db.row_factory = sqlite3.Row
        if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (CATALOG_TABLE,)).fetchone():
            rows = db.execute(f"SELECT * FROM [{CATALOG_TABLE}] ORDER BY created DESC, name").fetchall()
        else:
            rows = []
    return [row_to_version(dict(row), settings) for row in rows]


def import_image_folder(
    source: Path,
    *,
    name: str,
    settings: Settings,
    image_size: tuple[int, int] | None = None,
    resize: Resize | None = None,
    skip_bad: bool = False,
    progress: ImportProgress | None = None,
) -> DatasetVersion:
    """Import a folder of class sub-folders as a new dataset version, streaming it image by image.

    Args:
        image_size: (height, width) to store the images at; default: the most common size, at
            most storage.images.MAX_SIDE a side.
        resize: how images of another shape are fitted (``stretch``, ``crop``, ``pad``); default stretch.
        skip_bad: leave out unreadable files (listed in the version) instead of refusing the folder.
        progress: called as images are scanned and converted.

    The same content (and resolution) always gets the same version id; importing it again copies
    nothing. Either the whole version is stored and cataloged, or nothing is.

    Raises:
        DatasetError: the name, the folder or (without ``skip_bad``) any image in it is not usable.
    """
    from storage.dataset_import import import_folder

    return import_folder(
        source, name=name, settings=settings, image_size=image_size, resize=resize, skip_bad=skip_bad, progress=progress
    )


def ensure_builtin_dataset(settings: Settings) -> DatasetVersion:
    """The bundled digits dataset (scikit-learn's 8x8 digits, no download), imported on first use."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits  # its data ships inside scikit-learn

    digits = load_digits()
    pixels = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    with tempfile.TemporaryDirectory(prefix="onebox-digits-") as folder:
        root = Path(folder)
        for index, (image, label) in enumerate(zip(pixels, digits.target, strict=True)):
            class_dir = root / str(label)
            class_dir.mkdir(exist_ok=True)
            Image.fromarray(image).save(class_dir / f"{index:04d}.png")
        return import_image_folder(root, name=BUILTIN_DATASET, settings=settings)


def resolve_dataset(name: str, version: str | None, settings: Settings) -> DatasetVersion:
    """The requested version, or the newest one of ``name``.

    Raises:
        DatasetError: no such dataset or version.
    """
    known = list_datasets(settings)
    if name == BUILTIN_DATASET and not any(v.name == name for v in known):
        known = [ensure_builtin_dataset(settings), *known]
    matches = [v for v in known if v.name == name]
    if not matches:
        names = sorted({v.name for v in known} | {BUILTIN_DATASET})
        raise DatasetError(
            f"unknown dataset {name!r}; known datasets: {', '.join(names)}. "
            f"Import one with: onebox data import PATH --name {name}"
        )
    if version is None:
        return matches[0]
    for match in matches:
        if match.version == version:
            return match
    versions = ", ".join(v.version for v in matches)
    raise DatasetError(f"dataset {name!r} has no version {version!r}; its versions: {versions}")


def open_images(version: DatasetVersion, preprocessing: Preprocessing | None = None) -> DatasetImages:
    """The version's images for reading (training, evaluation, export checks).

    Args:
        preprocessing: another resolution or resize policy for this run; the images are then
            decoded from the version's original files on every read (slower than the stored
            images, which are read as they are). Default: the version's own.
    """
    return DatasetImages(version, preprocessing)


def load_dataset(version: DatasetVersion) -> LoadedDataset:
    """Every image of a version in memory at once: only for small datasets (digits, tests)."""
    import numpy as np

    images = open_images(version)
    try:
        return LoadedDataset(version=version, images=images.read_many(np.arange(len(images))), labels=images.labels)
    finally:
        images.close()
