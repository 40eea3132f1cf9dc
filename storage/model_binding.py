"""What binds a model: the classes and input shape of its first registered version.

A new task is a new model name with its own endpoint; the gate refuses a challenger that would
change what a model answers or takes (flows/promote.py). Each version is tagged at registration
with what it answers and takes; versions from before those tags are read from their model card.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from storage.registry import MODEL_CARD, list_versions, mlflow_client
from storage.settings import Settings

CLASSES_TAG = "onebox.classes"  # version tags: what the version answers and takes
IMAGE_SHAPE_TAG = "onebox.image_shape"


@dataclass(frozen=True)
class ModelBinding:
    """What a model is bound to by its first version: the classes it answers and the input it takes."""

    version: str
    classes: tuple[str, ...]
    image_shape: tuple[int, ...]

    def describe(self) -> str:
        return f"{len(self.classes)} classes ({', '.join(self.classes)}) and input shape {_shape(self.image_shape)}"


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def binding_tags(classes: tuple[str, ...], image_shape: tuple[int, ...]) -> dict[str, str]:
    """The version tags that record what a version answers and takes (read back by :func:`model_binding`)."""
    return {CLASSES_TAG: json.dumps(list(classes)), IMAGE_SHAPE_TAG: _shape(image_shape)}


def model_binding(settings: Settings, name: str) -> ModelBinding | None:
    """What model ``name``'s first registered version answers and takes; None for a model with no version.

    Versions registered before bindings were tagged are read from their run's model card.
    """
    versions = list_versions(settings, name)
    if not versions:
        return None
    first = versions[0]
    tags = mlflow_client(settings).get_model_version(name, first.version).tags
    if CLASSES_TAG in tags and IMAGE_SHAPE_TAG in tags:
        classes = tuple(json.loads(tags[CLASSES_TAG]))
        shape = tuple(int(size) for size in tags[IMAGE_SHAPE_TAG].split("x"))
        return ModelBinding(first.version, classes, shape)
    import mlflow

    with tempfile.TemporaryDirectory() as folder:
        card_path = mlflow.artifacts.download_artifacts(run_id=first.run_id, artifact_path=MODEL_CARD, dst_path=folder)
        card = json.loads(Path(card_path).read_text())
    return ModelBinding(first.version, tuple(card["classes"]), tuple(int(size) for size in card["image_shape"]))
