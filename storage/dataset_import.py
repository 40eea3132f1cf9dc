"""`onebox data import`: a folder of class sub-folders streamed into a new dataset version.

Two passes, neither holding more than one decoded image: (1) every file is read once, hashed and
its header opened (size, colour) without decoding pixels; the training resolution is decided
from what was seen (or given); (2) every file is decoded and converted by the one
:class:`~storage.images.Preprocessing`, appended to the version's image store, and copied, all in
a staging folder that is renamed into place and cataloged under a lock. Concurrent imports of the
same content wait for the first and then find its version; a killed import leaves a staging
folder under ``datasets/.importing`` and no catalog row; nothing reads it, and the next import
of that content removes it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from storage.datasets import (
    CATALOG_TABLE,
    IMAGE_SUFFIXES,
    DatasetVersion,
    ImportProgress,
    row_to_version,
)
from storage.errors import DatasetError
from storage.image_store import SKIPPED_FILE, ImageStoreWriter
from storage.images import ImageDecodeError, ImageHeader, Preprocessing, Resize, read_header, target_size
from storage.locks import exclusive_lock
from storage.names import name_problem
from storage.settings import Settings


@dataclass(frozen=True)
class _File:
    label: int
    path: Path
    relative: str  # class/sub/path under the version's files/
    digest: bytes
    header: ImageHeader


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
        # Other files (README.txt, .DS_Store, thumbnails) are not images of the class: ignored.
        images = sorted(
            p
            for p in class_dir.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        if not images:
            raise DatasetError(f"class folder {class_dir} has no PNG or JPEG images")
        files[class_dir.name] = images
    return files


def _scan(source: Path, files: dict[str, list[Path]], bad: list[str], progress: ImportProgress | None) -> list[_File]:
    """Pass 1: hash every file and read its header; unreadable ones go to ``bad`` with the reason."""
    total, done, scanned = sum(map(len, files.values())), 0, []
    for label, (class_name, paths) in enumerate(files.items()):
        for path in paths:
            try:
                data = path.read_bytes()
                header = read_header(data, source=str(path))
            except ImageDecodeError as error:
                bad.append(str(error))
            except OSError as error:
                bad.append(f"{path}: cannot be read ({error.strerror or error})")
            else:
                relative = f"{class_name}/{path.relative_to(source / class_name).as_posix()}"
                scanned.append(_File(label, path, relative, hashlib.sha256(data).digest(), header))
            done += 1
            if progress:
                progress("scan", done, total)
    return scanned


def choose_preprocessing(
    headers: list[ImageHeader], *, image_size: tuple[int, int] | None, resize: Resize | None, any_jpeg: bool
) -> Preprocessing:
    """The training resolution: the one asked for, else the most common size capped at MAX_SIDE."""
    channels = 1 if all(h.gray for h in headers) else 3
    if image_size is None:
        common_width, common_height = Counter((h.width, h.height) for h in headers).most_common(1)[0][0]
        width, height = target_size(common_width, common_height)
    else:
        height, width = image_size
    return Preprocessing(channels, height, width, resize or "stretch", jpeg_draft=any_jpeg)


def _content_version(scanned: list[_File], preprocessing: Preprocessing) -> str:
    digest = hashlib.sha256()
    for file in scanned:
        class_name, relative = file.relative.split("/", 1)
        digest.update(f"{class_name}\0{relative}\0".encode())
        digest.update(file.digest)
    # Versions at the default (stretched, no JPEG draft) resolution keep the ids they always had.
    if preprocessing != Preprocessing(*preprocessing.shape):
        digest.update(json.dumps(preprocessing.to_dict(), sort_keys=True).encode())
    return digest.hexdigest()[:12]


def _existing(settings: Settings, name: str, version: str) -> DatasetVersion | None:
    from storage.datasets import list_datasets

    return next((v for v in list_datasets(settings) if v.name == name and v.version == version), None)


def _convert(
    scanned: list[_File],
    staging: Path,
    preprocessing: Preprocessing,
    bad: list[str],
    progress: ImportProgress | None,
    *,
    store: bool,
) -> list[_File]:
    """Pass 2: decode, convert and store each image, and copy its file; returns the files kept.

    With ``store`` false (the folder will be refused anyway) images are only decoded, so that
    every bad file is found and listed at once, and nothing is written.
    """
    writer = ImageStoreWriter(staging, preprocessing)
    kept: list[_File] = []
    try:
        for done, file in enumerate(scanned, start=1):
            try:
                data = file.path.read_bytes()
                if hashlib.sha256(data).digest() != file.digest:
                    raise ImageDecodeError(f"{file.path}: changed while being imported; import again")
                image = preprocessing.decode(data, source=str(file.path))
            except ImageDecodeError as error:
                bad.append(str(error))
            except OSError as error:
                bad.append(f"{file.path}: cannot be read ({error.strerror or error})")
            else:
                kept.append(file)
                if store:
                    writer.add(image, label=file.label, relative=file.relative)
                    target = staging / "files" / file.relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
            if progress:
                progress("convert", done, len(scanned))
    except BaseException:
        writer.abort()
        raise
    writer.finish()
    return kept


def import_folder(
    source: Path,
    *,
    name: str,
    settings: Settings,
    image_size: tuple[int, int] | None = None,
    resize: Resize | None = None,
    skip_bad: bool = False,
    progress: ImportProgress | None = None,
    preprocessing: Preprocessing | None = None,
    lineage: dict[str, object] | None = None,
    recorded_source: str | None = None,
) -> DatasetVersion:
    """See storage.datasets.import_image_folder (the public entry point).

    The inbox merge (storage/inbox_merge.py) also gives ``preprocessing`` (its parent's, instead
    of one chosen from the images), the ``lineage`` to catalog and the ``recorded_source`` (the
    folder it imports from is a staging folder that goes away).
    """
    if problem := name_problem("dataset", name):
        raise DatasetError(problem)
    source = source.expanduser().resolve()
    files = _find_files(source)
    classes = tuple(files)
    bad: list[str] = []
    scanned = _scan(source, files, bad, progress)
    if not scanned:
        raise DatasetError(f"{source} has no readable PNG or JPEG images:\n  " + "\n  ".join(bad))
    preprocessing = preprocessing or choose_preprocessing(
        [f.header for f in scanned],
        image_size=image_size,
        resize=resize,
        any_jpeg=any(f.path.suffix.lower() != ".png" for f in scanned),
    )
    planned = _content_version(scanned, preprocessing)
    work = settings.datasets_dir / ".importing"  # locks and staging folders; the same file system
    # One import of given content at a time: the others wait here, then find it cataloged.
    with exclusive_lock(work / f"{name}-{planned}.lock"):
        if (skip_bad or not bad) and (existing := _existing(settings, name, planned)):
            return existing
        for stale in work.glob(f"{name}-{planned}-*"):  # left by a killed import of this content
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{name}-{planned}-", dir=work))
        try:
            kept = _convert(scanned, staging, preprocessing, bad, progress, store=skip_bad or not bad)
            _refuse_or_list(source, bad, skip_bad=skip_bad, staging=staging)
            counts = Counter(f.label for f in kept)
            if empty := [c for index, c in enumerate(classes) if not counts[index]]:
                raise DatasetError(f"class folder(s) {', '.join(empty)} in {source} have no readable images left")
            version = _content_version(kept, preprocessing)
            row = {
                "name": name,
                "version": version,
                "classes": json.dumps(classes),
                "counts": json.dumps({c: counts[index] for index, c in enumerate(classes)}),
                "channels": preprocessing.channels,
                "height": preprocessing.height,
                "width": preprocessing.width,
                "resize": preprocessing.resize,
                "jpeg_draft": int(preprocessing.jpeg_draft),
                "skipped": len(bad),
                "num_images": len(kept),
                "source": recorded_source or str(source),
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            if lineage is not None:
                row["lineage"] = json.dumps(lineage)
            return _finalize(settings, staging, row)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already when it became the version


def _refuse_or_list(source: Path, bad: list[str], *, skip_bad: bool, staging: Path) -> None:
    if bad and not skip_bad:
        listing = "\n  ".join(bad)
        raise DatasetError(
            f"{len(bad)} file(s) in {source} are not readable images; nothing was imported "
            f"(fix or remove them, or pass --skip-bad to import the rest):\n  {listing}"
        )
    if bad:
        (staging / SKIPPED_FILE).write_text("".join(f"{line}\n" for line in bad))


def _finalize(settings: Settings, staging: Path, row: dict[str, object]) -> DatasetVersion:
    """Rename the staging folder into place and catalog it, or return the version already there."""
    import sqlite_utils  # imports pandas when installed: seconds, so only here

    name, version = str(row["name"]), str(row["version"])
    final_dir = settings.datasets_dir / name / version
    with exclusive_lock(settings.catalog_path.with_name("catalog.lock")):
        if existing := _existing(settings, name, version):
            return existing  # the same files imported meanwhile (or earlier, when --skip-bad left some out)
        if final_dir.exists():  # left by an interrupted import; its catalog row was never written
            shutil.rmtree(final_dir)
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(final_dir)
        db = sqlite_utils.Database(settings.catalog_path)
        try:
            db.enable_wal()
            db.table(CATALOG_TABLE).insert(row, pk=("name", "version"), replace=True, alter=True)
        finally:
            db.close()
    return row_to_version(dict(row), settings)
