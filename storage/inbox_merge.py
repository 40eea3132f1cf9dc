"""A model's labeled inbox images merged into a new dataset version, with its lineage.

The new version is the model's parent version (the one its production version was trained on,
or the newest version merged from it for this model since, so that a second batch labeled
before the retrained model is promoted still holds the first) plus every labeled image of the
inbox, with the parent's classes and preprocessing, under the parent's dataset name and
content-hashed like any import (storage/dataset_import.py stages and finalizes it).

Crash safety: a batch is written down first (``inbox/NAME/merged/BATCH/batch.json``: the
labels, the parent), images leave the inbox only once the version is cataloged, and labels
are forgotten last. A merge killed at any point is finished by the next one: same batch, same
content, so the same version (nothing half made, no label lost). One merge at a time per model
(a file lock); a second one started at once waits, then finds nothing left to merge.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from storage.datasets import DatasetVersion, ImportProgress, list_datasets, resolve_dataset
from storage.errors import DatasetError, LabelError, ModelError
from storage.inbox import inbox_items, model_inbox
from storage.labels import LabelStore, image_bytes
from storage.locks import exclusive_lock
from storage.settings import Settings

MERGED_FOLDER = "merged"  # inbox/NAME/merged/BATCH/: the images a batch took, its manifest
MANIFEST = "batch.json"
INBOX_SUBFOLDER = "inbox"  # merged images go to CLASS/inbox/SHA.EXT in the version's files


@dataclass(frozen=True)
class LabelingTarget:
    """What a model's labels are checked against and merged into."""

    model: str
    production_version: str
    classes: tuple[str, ...]
    trained_on: DatasetVersion  # what the production version was trained on
    parent: DatasetVersion  # what the next merge adds to: trained_on or its newest merge for this model


@dataclass(frozen=True)
class MergeResult:
    version: DatasetVersion
    parent: DatasetVersion
    model: str
    batch: str
    merged: int  # images taken from the inbox
    left: int  # images still waiting in it (unlabeled or skipped)
    created: bool  # False: a version of exactly this content existed already


def labeling_models(settings: Settings) -> list[str]:
    """The models that have a production version, by name: the ones there is something to label for."""
    from storage.registry import PRODUCTION, registered_models

    return [model.name for model in registered_models(settings) if PRODUCTION in model.aliases]


def labeling_target(settings: Settings, model: str) -> LabelingTarget:
    """The classes and parent dataset version of ``model``'s labels.

    Raises:
        ModelError: the model is unknown, has no production version, or that version does not
            name a dataset version this home has.
    """
    from storage.model_binding import CLASSES_TAG
    from storage.registry import PRODUCTION, registered_models, unknown_model_error

    models = {found.name: found for found in registered_models(settings)}
    found = models.get(model)
    if found is None:
        raise unknown_model_error(model, sorted(models))
    if PRODUCTION not in found.aliases:
        raise ModelError(f"model {model} has no production version yet: nothing serves, so nothing was sent to label")
    dataset = found.production_tags.get("dataset", "")
    name, _, version = dataset.partition(":")
    if not name or not version:
        raise ModelError(f"model {model}'s production version does not record its dataset (tag 'dataset')")
    try:
        trained_on = resolve_dataset(name, version, settings)
    except DatasetError as error:
        raise ModelError(f"model {model} was trained on {dataset}, which this home does not have: {error}") from None
    classes = tuple(json.loads(found.production_tags[CLASSES_TAG])) if CLASSES_TAG in found.production_tags else ()
    return LabelingTarget(
        model=model,
        production_version=found.aliases[PRODUCTION],
        classes=classes or trained_on.classes,
        trained_on=trained_on,
        parent=newest_descendant(settings, trained_on, model),
    )


def newest_descendant(settings: Settings, root: DatasetVersion, model: str) -> DatasetVersion:
    """The newest version merged for ``model`` whose lineage leads back to ``root`` (``root`` if none)."""
    versions = [v for v in list_datasets(settings) if v.name == root.name]  # newest first
    parents = {v.version: (v.lineage or {}).get("parent") for v in versions}
    for candidate in versions:
        if (candidate.lineage or {}).get("model") != model:
            continue
        step: str | None = candidate.version
        seen: set[str] = set()
        while step is not None and step not in seen and step != root.version:
            seen.add(step)
            step = parents.get(step)
        if step == root.version:
            return candidate
    return root


def _pending_batch(folder: Path) -> dict[str, Any] | None:
    """The manifest of a batch a killed merge left unfinished, if any."""
    for manifest in sorted((folder / MERGED_FOLDER).glob(f"*/{MANIFEST}")):
        batch: dict[str, Any] = json.loads(manifest.read_text())
        if not batch.get("done"):
            return batch
    return None


def _write_manifest(folder: Path, batch: dict[str, Any]) -> None:
    target = folder / MERGED_FOLDER / batch["batch"] / MANIFEST
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_suffix(".partial")
    staging.write_text(json.dumps(batch, indent=2))
    os.replace(staging, target)  # a reader finds the whole manifest or the one before


def _new_batch(settings: Settings, target: LabelingTarget, by: str) -> dict[str, Any]:
    store = LabelStore(settings.inbox_dir, target.model)
    waiting = {item.sha256: item.file for item in inbox_items(settings.inbox_dir, target.model)}
    labels = {sha: label for sha, label in store.labels().items() if label.label is not None and sha in waiting}
    if not labels:
        raise LabelError(
            f"nothing is labeled in the inbox of model {target.model} ({len(waiting)} image(s) waiting); "
            f"label some first: onebox label --model {target.model}"
        )
    if stale := sorted({label.label for label in labels.values()} - set(target.classes), key=str):
        raise LabelError(f"labels {', '.join(map(str, stale))} are not classes of model {target.model} (any more)")
    now = datetime.now(UTC)
    return {
        "batch": f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}",
        "model": target.model,
        "dataset": target.parent.name,
        "parent": target.parent.version,
        "trained_on": target.trained_on.version,
        "production_version": target.production_version,
        "by": by,
        "at": now.isoformat(timespec="seconds"),
        "images": {sha: {"file": waiting[sha], "label": label.label} for sha, label in sorted(labels.items())},
        "version": None,
        "done": False,
    }


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)  # the datasets and the inbox share the home's file system
    except OSError:
        shutil.copyfile(source, target)


def _stage_source(settings: Settings, parent: DatasetVersion, batch: dict[str, Any], inbox: Path) -> Path:
    """A folder of class sub-folders: the parent's original files and the batch's images."""
    source = settings.datasets_dir / ".importing" / f"merge-{batch['model']}-{batch['batch']}"
    shutil.rmtree(source, ignore_errors=True)  # left by a killed merge of this batch
    files = parent.path / "files"
    for class_name in parent.classes:
        for path in sorted((files / class_name).rglob("*")):
            if path.is_file():
                _link(path, source / path.relative_to(files))
    archive = inbox / MERGED_FOLDER / batch["batch"]
    for sha, entry in batch["images"].items():
        where = inbox / entry["file"]
        if not where.is_file():
            where = archive / entry["file"]  # moved already by the merge that was killed
        data, media_type = image_bytes(where)
        suffix = ".png" if media_type == "image/png" else ".jpg"
        target = source / entry["label"] / INBOX_SUBFOLDER / f"{sha}{suffix}"
        if not target.exists():  # the parent has this very image (a batch merged before)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return source


def _archive(inbox: Path, batch: dict[str, Any]) -> None:
    """Move the batch's images and sidecars out of the inbox (already moved ones are skipped)."""
    archive = inbox / MERGED_FOLDER / batch["batch"]
    for sha, entry in batch["images"].items():
        for name in (entry["file"], f"{sha}.json"):
            if (inbox / name).exists():
                os.replace(inbox / name, archive / name)


def merge_inbox(settings: Settings, model: str, *, by: str, progress: ImportProgress | None = None) -> MergeResult:
    """Make a new dataset version from ``model``'s parent version and its labeled inbox images.

    Raises:
        ModelError: the model is unknown or has no production version to take the parent from.
        LabelError: nothing is labeled (nothing is created), or a label is not one of its classes.
        DatasetError: the parent version's files cannot be read.
    """
    from storage.dataset_import import import_folder

    target = labeling_target(settings, model)
    inbox = model_inbox(settings.inbox_dir, model)
    with exclusive_lock(inbox / "merge.lock"):
        batch = _pending_batch(inbox) or _new_batch(settings, target, by)
        _write_manifest(inbox, batch)
        parent = resolve_dataset(batch["dataset"], batch["parent"], settings)
        source = _stage_source(settings, parent, batch, inbox)
        lineage = {key: batch[key] for key in ("parent", "model", "by", "at", "trained_on", "production_version")}
        lineage.update(inbox_batch=batch["batch"], images=len(batch["images"]))
        try:
            version = import_folder(
                source,
                name=parent.name,
                settings=settings,
                preprocessing=parent.preprocessing,
                lineage=lineage,
                recorded_source=f"inbox of model {model}, batch {batch['batch']}",
                progress=progress,
            )
        finally:
            shutil.rmtree(source, ignore_errors=True)
        _write_manifest(inbox, {**batch, "version": version.version})
        _archive(inbox, batch)
        LabelStore(settings.inbox_dir, model).forget(list(batch["images"]))
        _write_manifest(inbox, {**batch, "version": version.version, "done": True})
    return MergeResult(
        version=version,
        parent=parent,
        model=model,
        batch=batch["batch"],
        merged=len(batch["images"]),
        left=len(inbox_items(settings.inbox_dir, model)),
        created=(version.lineage or {}).get("inbox_batch") == batch["batch"],
    )
