"""What the prediction log keeps on disk, and for how long: kept input images and record files.

(And how an input is kept: an upload as its own format, a pixel array as a PNG.)

Both live in the model's folder of the log (storage/prediction_log.py). Inputs are kept by
content (``images/AB/SHA.EXT``), so an image seen a thousand times is one file; seeing it again
touches it, so "oldest first" means "least recently seen first". Each model has a size cap for its
images and one for its records, and a retention period for both; the writer thread
(serving/prediction_log.py) enforces them, never the request path.

Several worker processes (and containers) may share one model's folder: every deletion here
tolerates a file that another one already removed, and every count is re-read from disk when a
cap is reached, so no process needs to know what the others wrote.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from storage.prediction_log import IMAGES_FOLDER, RECORDS_FOLDER, image_path, model_log_dir

MB = 1024 * 1024
# Deleting down to a little under a cap, not to the cap itself: a folder at its cap would be
# scanned again for every new file.
LOW_WATER = 0.9
STAGING_PREFIX = "."  # an image being written: ".SHA.EXT.PID.tmp", renamed when whole
STALE_STAGING_S = 3600.0  # a staging file this old was left by a writer that died
# An input seen again within this long is not touched again: a popular image would cost a
# syscall per request otherwise. "Least recently seen" is exact to this much.
TOUCH_INTERVAL_S = 60.0
RECENT_MAX = 10000  # digests remembered as recently touched, at most


def _files(folder: Path) -> list[tuple[float, int, Path]]:
    """(mtime, size, path) of every file under ``folder``; none when it does not exist."""
    found = []
    for directory, _, names in os.walk(folder):
        for name in names:
            path = Path(directory, name)
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # removed meanwhile by another writer
            found.append((stat.st_mtime, stat.st_size, path))
    return found


def _target(total: int, max_bytes: int) -> float:
    """How much to keep: everything when under the cap, else a little under it."""
    return max_bytes * LOW_WATER if total > max_bytes else max_bytes


def _remove(path: Path) -> int:
    """Delete ``path``; returns the bytes freed (0 when another writer removed it first)."""
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return 0
    return size


class KeptInputs:
    """The input images of every model, kept by content within ``max_bytes`` and ``days`` per model."""

    def __init__(self, predictions_dir: Path, *, max_bytes: int, days: int) -> None:
        self.predictions_dir = predictions_dir
        self.max_bytes = max_bytes
        self.days = days
        self.sizes: dict[str, int] = {}  # bytes kept per model, as last counted plus what was added since
        self.folders: set[Path] = set()  # made already (a deletion never removes a folder)
        self.recent: dict[tuple[str, str], tuple[float, str]] = {}  # (model, digest): when touched, path

    def keep(self, model: str, sha256: str, extension: str, encoded: Callable[[], bytes]) -> str | None:
        """Keep one input; returns its path relative to the model's folder, None when it is not kept
        (larger than the whole cap). ``encoded`` is called only when the image is not kept yet.

        Raises:
            OSError: the folder cannot be written (the caller counts the input as not kept).
        """
        now = time.monotonic()
        recent = self.recent.get((model, sha256))
        if recent is not None and now - recent[0] < TOUCH_INTERVAL_S:
            return recent[1]
        path = image_path(self.predictions_dir, model, sha256, extension)
        relative = f"{IMAGES_FOLDER}/{path.parent.name}/{path.name}"  # below the model's folder
        if len(self.recent) >= RECENT_MAX:
            self.recent.clear()
        try:
            os.utime(path)  # seen again: it stays among the newest
            self.recent[(model, sha256)] = (now, relative)
            return relative
        except FileNotFoundError:
            pass
        data = encoded()
        if len(data) > self.max_bytes:
            return None
        if model not in self.sizes:
            self.enforce(model)  # the first image since this writer started: count what is there
        if path.parent not in self.folders:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.folders.add(path.parent)
        staging = path.with_name(f"{STAGING_PREFIX}{path.name}.{os.getpid()}.tmp")
        try:
            staging.write_bytes(data)
            staging.replace(path)  # whole or absent: a reader never sees half an image
        finally:
            staging.unlink(missing_ok=True)
        self.sizes[model] = self.sizes.get(model, 0) + len(data)
        self.recent[(model, sha256)] = (now, relative)
        if self.sizes[model] > self.max_bytes:
            self.enforce(model)
        return relative

    def enforce(self, model: str, *, now: float | None = None) -> int:
        """Delete the model's images older than the retention period, then the least recently seen
        until they fit in the cap; returns how many were deleted."""
        now = time.time() if now is None else now
        oldest_allowed = now - self.days * 86400
        self.recent.clear()  # what it deletes must not be taken as kept
        files = sorted(_files(model_log_dir(self.predictions_dir, model) / IMAGES_FOLDER))
        total = sum(size for _, size, _ in files)
        target = _target(total, self.max_bytes)
        deleted = 0
        for mtime, size, path in files:
            staging = path.name.startswith(STAGING_PREFIX)
            if staging and mtime > now - STALE_STAGING_S:
                continue  # another writer is writing it right now
            if mtime >= oldest_allowed and total <= target and not staging:
                break
            total -= _remove(path) or size
            deleted += 1
        self.sizes[model] = max(total, 0)
        return deleted


def enforce_record_limits(predictions_dir: Path, model: str, *, max_bytes: int, days: int) -> int:
    """Delete the model's record files of days older than the retention period, then the oldest
    files until the rest fit in ``max_bytes``; returns how many files were deleted."""
    root = model_log_dir(predictions_dir, model) / RECORDS_FOLDER
    if not root.is_dir():
        return 0
    first_kept_day = (datetime.now(UTC) - timedelta(days=days)).strftime("%Y%m%d")
    deleted = 0
    for day in sorted(root.iterdir()):
        if day.is_dir() and day.name < first_kept_day:
            deleted += sum(1 for _ in day.glob("*.jsonl"))
            shutil.rmtree(day, ignore_errors=True)
    # Oldest day first, and within a day the oldest file first; the newest file is never removed
    # to make room (it is being appended to), so a cap smaller than one day's file only trims older days.
    files = sorted(_files(root), key=lambda item: (item[2].parent.name, item[0]))
    total = sum(size for _, size, _ in files)
    target = _target(total, max_bytes)
    for _, size, path in files[:-1]:
        if total <= target:
            break
        total -= _remove(path) or size
        deleted += 1
    for day in root.iterdir():
        with contextlib.suppress(OSError):  # not empty, or removed by another writer
            day.rmdir()  # an empty day folder left behind
    return deleted


# The signatures of the formats people upload: read from the first bytes, no decoder needed.
SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpg"), (b"GIF8", "gif"), (b"BM", "bmp"))


def upload_extension(data: bytes) -> str:
    """The file extension of an upload's own format (it decoded as an image already)."""
    for signature, extension in SIGNATURES:
        if data.startswith(signature):
            return extension
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = (image.format or "").lower()
    except Exception:  # decoded once already; a format Pillow names differently is still kept
        kind = ""
    return {"jpeg": "jpg", "tiff": "tif", "": "img"}.get(kind, kind)


def png_of(pixels: np.ndarray) -> bytes:
    """A PNG of one (C, H, W) uint8 input: gray for one channel, RGB for three."""
    from PIL import Image

    image = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()
