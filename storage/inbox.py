"""A model's labeling inbox: images production was unsure about, waiting for a person's label.

Layout, ``$ONEBOX_HOME/inbox/NAME/``: each image as ``SHA256.EXT`` (its content digest, so one
image is in the inbox once however often it was seen), and beside it ``SHA256.json``, an
:class:`InboxItem`: the model's guess, its confidence, the version that guessed and why the image
is here. The drift check fills it (flows/drift.py); the labeling page and
``onebox data merge-inbox`` read and empty it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

Reason = Literal["drift", "low-confidence"]


@dataclass(frozen=True)
class InboxItem:
    sha256: str
    file: str  # the image's file name in the inbox folder
    guess: str  # the class the model predicted
    confidence: float
    model_version: str
    reason: Reason
    added: str  # ISO 8601, UTC

    @classmethod
    def read(cls, path: Path) -> InboxItem:
        return cls(**json.loads(path.read_text()))


def model_inbox(inbox_dir: Path, model: str) -> Path:
    return inbox_dir / model


def add_to_inbox(
    inbox_dir: Path,
    model: str,
    *,
    image: Path,
    sha256: str,
    guess: str,
    confidence: float,
    model_version: str,
    reason: Reason,
) -> bool:
    """Copy a logged input into the model's inbox; False when that image is there already.

    The sidecar is written after the image and renamed into place, so a reader that finds the
    sidecar always finds the image.
    """
    folder = model_inbox(inbox_dir, model)
    sidecar = folder / f"{sha256}.json"
    if sidecar.exists():
        return False
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{sha256}{image.suffix.lower()}"
    staging = folder / f".{sha256}.{os.getpid()}.partial"
    shutil.copyfile(image, staging)
    staging.replace(target)
    item = InboxItem(
        sha256=sha256,
        file=target.name,
        guess=guess,
        confidence=confidence,
        model_version=model_version,
        reason=reason,
        added=datetime.now(UTC).isoformat(),
    )
    staging.write_text(json.dumps(asdict(item)))
    staging.replace(sidecar)
    return True


def inbox_items(inbox_dir: Path, model: str) -> list[InboxItem]:
    """The model's waiting images, oldest first."""
    folder = model_inbox(inbox_dir, model)
    # Sidecars are named by a sha256 digest: other files there (labels, batches) are not items.
    items = [InboxItem.read(path) for path in folder.glob("*.json") if len(path.stem) == 64]
    return sorted(items, key=lambda item: item.added)
