"""The labels people give a model's inbox images: one SQLite file per inbox, safe for two writers.

``$ONEBOX_HOME/inbox/NAME/labels.db`` (WAL; not named like a sidecar, so the inbox never takes it
for an image). One row per image in ``labels``: its class, or none for a skipped image; labeling
an image again replaces its row. Every change also goes on a ``history`` stack with what the
row was before, so undo restores the previous state exactly (a relabel undone gives the first
label back). Writes take SQLite's write lock at their start (``BEGIN IMMEDIATE``), so two
labelers at once serialize instead of failing on a lock upgrade.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from storage.errors import LabelError
from storage.inbox import model_inbox

LABELS_FILE = "labels.db"
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
BUSY_TIMEOUT_S = 30.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (sha256 TEXT PRIMARY KEY, label TEXT, by TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, sha256 TEXT NOT NULL, by TEXT NOT NULL,
    had_row INTEGER NOT NULL, previous_label TEXT, previous_by TEXT, previous_at TEXT
);
"""


class NotInInboxError(LabelError):
    """The image named is not (or no longer) in the model's inbox, or the name is no digest at all."""


@dataclass(frozen=True)
class Label:
    sha256: str
    label: str | None  # None: skipped
    by: str
    at: str  # ISO 8601, UTC

    @property
    def skipped(self) -> bool:
        return self.label is None


def check_sha256(sha256: str) -> str:
    """``sha256`` when it is a lowercase hex digest (an inbox file name stem).

    Raises:
        NotInInboxError: anything else, path characters above all.
    """
    if not SHA256_PATTERN.fullmatch(sha256):
        raise NotInInboxError(f"{sha256[:80]!r} is not an inbox image id (64 lowercase hex digits)")
    return sha256


class LabelStore:
    """The labels of model ``model``'s inbox."""

    def __init__(self, inbox_dir: Path, model: str) -> None:
        self.model = model
        self.folder = model_inbox(inbox_dir, model)
        self.path = self.folder / LABELS_FILE

    @contextlib.contextmanager
    def _connect(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        if not write and not self.path.is_file():
            with contextlib.closing(sqlite3.connect(":memory:")) as empty:
                empty.executescript(_SCHEMA)  # a fresh inbox reads as one without labels
                yield empty
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            if not write:
                yield db
                return
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _require_image(self, sha256: str) -> None:
        if not (self.folder / f"{check_sha256(sha256)}.json").is_file():
            raise NotInInboxError(f"image {sha256} is not in the inbox of model {self.model}")

    def _change(self, sha256: str, label: str | None, by: str) -> None:
        self._require_image(sha256)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._connect(write=True) as db:
            before = db.execute("SELECT label, by, at FROM labels WHERE sha256 = ?", (sha256,)).fetchone()
            db.execute(
                "INSERT INTO history (sha256, by, had_row, previous_label, previous_by, previous_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (sha256, by, before is not None, *(before or (None, None, None))),
            )
            db.execute(
                "INSERT OR REPLACE INTO labels (sha256, label, by, at) VALUES (?, ?, ?, ?)", (sha256, label, by, now)
            )

    def set_label(self, sha256: str, label: str, *, classes: tuple[str, ...], by: str) -> None:
        """Label an inbox image (again: the new label replaces the old one).

        Raises:
            LabelError: ``label`` is not one of ``classes``.
            NotInInboxError: the image is not in the inbox.
        """
        if label not in classes:
            raise LabelError(f"{label[:80]!r} is not a class of model {self.model}; its classes: {', '.join(classes)}")
        self._change(sha256, label, by)

    def skip(self, sha256: str, *, by: str) -> None:
        """Set an image aside unlabeled: it stays in the inbox and is not merged.

        Raises:
            NotInInboxError: the image is not in the inbox.
        """
        self._change(sha256, None, by)

    def undo(self, *, by: str | None = None) -> str | None:
        """Take back the last change (``by`` that person only, when given); returns its image, or
        None when there is nothing to undo."""
        with self._connect(write=True) as db:
            query = "SELECT id, sha256, had_row, previous_label, previous_by, previous_at FROM history"
            query += " WHERE by = ? ORDER BY id DESC LIMIT 1" if by is not None else " ORDER BY id DESC LIMIT 1"
            last = db.execute(query, (by,) if by is not None else ()).fetchone()
            if last is None:
                return None
            entry_id, sha256, had_row, *previous = last
            if had_row:
                db.execute(
                    "INSERT OR REPLACE INTO labels (sha256, label, by, at) VALUES (?, ?, ?, ?)", (sha256, *previous)
                )
            else:
                db.execute("DELETE FROM labels WHERE sha256 = ?", (sha256,))
            db.execute("DELETE FROM history WHERE id = ?", (entry_id,))
        return str(sha256)

    def labels(self) -> dict[str, Label]:
        """Every image's current label or skip, by its sha256."""
        with self._connect(write=False) as db:
            rows = db.execute("SELECT sha256, label, by, at FROM labels").fetchall()
        return {row[0]: Label(*row) for row in rows}

    def forget(self, sha256s: list[str]) -> None:
        """Drop the labels (and their undo history) of images that left the inbox (merged)."""
        if not sha256s:
            return
        with self._connect(write=True) as db:
            for sha256 in sha256s:
                db.execute("DELETE FROM labels WHERE sha256 = ?", (sha256,))
                db.execute("DELETE FROM history WHERE sha256 = ?", (sha256,))


def image_bytes(path: Path) -> tuple[bytes, str]:
    """An inbox image as (bytes, media type) a browser shows and a dataset import reads.

    PNG and JPEG are as they were kept; a pixel array (``.npy``, an input sent as an array) is
    encoded as PNG: uint8 or [0, 1] floats, (C, H, W) or (H, W, C), gray or colour.

    Raises:
        LabelError: the file is missing or is an array no image can be made of.
    """
    suffix = path.suffix.lower()
    try:
        if suffix in (".png", ".jpg", ".jpeg"):
            return path.read_bytes(), "image/png" if suffix == ".png" else "image/jpeg"
        if suffix == ".npy":
            return _array_png(path), "image/png"
    except FileNotFoundError:
        raise NotInInboxError(f"image {path.name} is no longer in the inbox") from None
    raise LabelError(f"inbox file {path.name} is neither PNG, JPEG nor a pixel array (.npy)")


def _array_png(path: Path) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    try:
        array = np.load(path, allow_pickle=False)  # no pickled objects: the file came from an upload
    except ValueError as error:
        raise LabelError(f"inbox file {path.name} is not a readable pixel array: {error}") from None
    array = np.squeeze(array)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)  # (C, H, W) -> (H, W, C)
    array = np.squeeze(array)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3) or array.size == 0:
        raise LabelError(f"inbox file {path.name} holds an array of shape {array.shape}, not an image")
    if array.dtype.kind == "f":
        scale = 255.0 if float(np.nanmax(array)) <= 1.0 else 1.0
        array = np.nan_to_num(array * scale)
    pixels = np.clip(array, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
