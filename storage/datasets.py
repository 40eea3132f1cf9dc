"""Datasets: immutable, content-hashed versions of image folders, listed in a SQLite catalog.

A version's folder holds a copy of the original files and ``arrays.npz`` (uint8 images of one
shape, integer labels), so training never depends on the folder it was imported from.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sqlite3
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage.errors import DatasetError
from storage.names import name_problem
from storage.settings import Settings

if TYPE_CHECKING:
    # Imported where images are read or written: listing and resolving versions (`onebox data
    # list`, a mistyped `onebox train --dataset`) reads only the catalog and must answer at once.
    # sqlite_utils (for writing the catalog) imports pandas when it is installed: seconds.
    import numpy as np
    import sqlite_utils
    from PIL import Image

BUILTIN_DATASET = "digits"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
CATALOG_TABLE = "dataset_versions"


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

    @property
    def num_images(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class LoadedDataset:
    version: DatasetVersion
    images: np.ndarray  # uint8, (N, C, H, W)
    labels: np.ndarray  # int64, (N,), indexes into version.classes


def _catalog(settings: Settings) -> sqlite_utils.Database:
    import sqlite_utils

    settings.home.mkdir(parents=True, exist_ok=True)
    db = sqlite_utils.Database(settings.catalog_path)
    db.enable_wal()
    return db


def _row_to_version(row: dict[str, Any], settings: Settings) -> DatasetVersion:
    return DatasetVersion(
        name=row["name"],
        version=row["version"],
        classes=tuple(json.loads(row["classes"])),
        counts=json.loads(row["counts"]),
        image_shape=(row["channels"], row["height"], row["width"]),
        created=row["created"],
        path=settings.datasets_dir / row["name"] / row["version"],
    )


def list_datasets(settings: Settings) -> list[DatasetVersion]:
    """Every stored version, newest first (a home with no catalog yet has none; nothing is created)."""
    if not settings.catalog_path.is_file():
        return []
    with contextlib.closing(sqlite3.connect(settings.catalog_path)) as db:
        db.row_factory = sqlite3.Row
        if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (CATALOG_TABLE,)).fetchone():
            rows = db.execute(f"SELECT * FROM [{CATALOG_TABLE}] ORDER BY created DESC, name").fetchall()
        else:
            rows = []
    return [_row_to_version(dict(row), settings) for row in rows]


def _find_files(source: Path) -> dict[str, list[Path]]:
    if not source.exists():
        raise DatasetError(f"dataset folder {source} does not exist")
    if not source.is_dir():
        raise DatasetError(f"{source} is not a folder; give a folder with one sub-folder per class")
    class_dirs = sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise DatasetError(
            f"{source} has {len(class_dirs)} class sub-folder(s); a classifier needs at least 2 "
            "(one sub-folder of PNG or JPEG images per class)"
        )
    files: dict[str, list[Path]] = {}
    for class_dir in class_dirs:
        images = sorted(
            p
            for p in class_dir.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        if not images:
            raise DatasetError(f"class folder {class_dir} has no PNG or JPEG images")
        files[class_dir.name] = images
    return files


def _content_version(source: Path, files: dict[str, list[Path]]) -> str:
    digest = hashlib.sha256()
    for class_name, paths in files.items():
        for path in paths:
            digest.update(f"{class_name}\0{path.relative_to(source / class_name)}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:12]


def _decode_all(files: dict[str, list[Path]]) -> dict[str, list[Image.Image]]:
    from storage.images import ImageDecodeError, decode_image

    decoded: dict[str, list[Image.Image]] = {}
    bad: list[str] = []
    for class_name, paths in files.items():
        decoded[class_name] = []
        for path in paths:
            try:
                decoded[class_name].append(decode_image(path.read_bytes(), source=str(path)))
            except ImageDecodeError as error:
                bad.append(str(error))
    if bad:
        listing = "\n  ".join(bad)
        raise DatasetError(f"{len(bad)} file(s) are not readable images; nothing was imported:\n  {listing}")
    return decoded


def import_image_folder(source: Path, *, name: str, settings: Settings) -> DatasetVersion:
    """Import a folder of class sub-folders as a new dataset version.

    The same content always gets the same version id; importing it again copies nothing.
    Either the whole version is stored and cataloged, or nothing is.

    Raises:
        DatasetError: the name, the folder or any image in it is not usable.
    """
    if problem := name_problem("dataset", name):
        raise DatasetError(problem)
    source = source.expanduser().resolve()
    files = _find_files(source)
    version = _content_version(source, files)
    db = _catalog(settings)
    if CATALOG_TABLE in db.table_names():
        existing = list(db[CATALOG_TABLE].rows_where("name = ? and version = ?", [name, version]))
        if existing:
            return _row_to_version(existing[0], settings)

    import numpy as np

    from storage.images import is_gray, target_size, to_model_array

    decoded = _decode_all(files)
    all_images = [image for images in decoded.values() for image in images]
    channels = 1 if all(is_gray(image) for image in all_images) else 3
    common_width, common_height = Counter(image.size for image in all_images).most_common(1)[0][0]
    width, height = target_size(common_width, common_height)
    classes = tuple(decoded)
    arrays = np.stack([to_model_array(image, channels=channels, height=height, width=width) for image in all_images])
    labels = np.concatenate([np.full(len(decoded[c]), index, dtype=np.int64) for index, c in enumerate(classes)])

    final_dir = settings.datasets_dir / name / version
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=final_dir.parent))
    try:
        for class_name, paths in files.items():
            for path in paths:
                target = staging / "files" / class_name / path.relative_to(source / class_name)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
        np.savez_compressed(staging / "arrays.npz", images=arrays, labels=labels)
        if final_dir.exists():  # left by an interrupted import; its catalog row was never written
            shutil.rmtree(final_dir)
        staging.rename(final_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    row = {
        "name": name,
        "version": version,
        "classes": json.dumps(classes),
        "counts": json.dumps({c: len(decoded[c]) for c in classes}),
        "channels": channels,
        "height": height,
        "width": width,
        "num_images": len(labels),
        "source": str(source),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    db.table(CATALOG_TABLE).insert(row, pk=("name", "version"), replace=True)
    return _row_to_version(row, settings)


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


class DatasetImages:
    """A dataset version's images, read one by one (or a few at a time) as training needs them.

    ``labels`` (int64, one per image, indexes into ``version.classes``) is held in memory; the
    images are not: :meth:`read` returns one uint8 (C, H, W) array at the version's recorded
    resolution (``version.image_shape``). Datasets too large for memory are read from disk.
    """

    def __init__(self, version: DatasetVersion) -> None:
        import numpy as np

        self.version = version
        with np.load(version.path / "arrays.npz") as arrays:
            self._images = arrays["images"]
            self.labels: np.ndarray = arrays["labels"]

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, index: int) -> np.ndarray:
        """Image ``index``: uint8 (C, H, W)."""
        image: np.ndarray = self._images[index]
        return image

    def read_many(self, indexes: np.ndarray) -> np.ndarray:
        """Images ``indexes``: uint8 (len(indexes), C, H, W)."""
        images: np.ndarray = self._images[indexes]
        return images


def open_images(version: DatasetVersion) -> DatasetImages:
    """The version's images for reading (training, evaluation, export checks)."""
    return DatasetImages(version)


def load_dataset(version: DatasetVersion) -> LoadedDataset:
    import numpy as np

    with np.load(version.path / "arrays.npz") as arrays:
        return LoadedDataset(version=version, images=arrays["images"], labels=arrays["labels"])
