"""What a model bundle is (``metadata.json`` beside ``model.onnx``), readable without numpy or ONNX Runtime.

The runtimes and the CLI only need a bundle's identity and input shape; keeping it apart from
the predictor keeps ``onebox status`` and ``onebox stop`` from importing the inference stack.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from storage.images import Preprocessing

MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
MODEL_DIR_VARIABLE = "ONEBOX_MODEL_DIR"  # the bundle a model server loads
WORKERS_VARIABLE = "ONEBOX_SERVE_WORKERS"  # its worker processes


@dataclass(frozen=True)
class ModelMetadata:
    """What a served model is: its registry identity, lineage, input shape and test metrics."""

    model_name: str
    model_version: str
    run_id: str
    dataset_name: str
    dataset_version: str
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]  # channels, height, width
    metrics: dict[str, float] = field(default_factory=dict)
    # storage.images.Preprocessing.to_dict() of the training data; bundles made before it was
    # recorded were trained on stretched images: {} means that.
    preprocessing: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> ModelMetadata:
        raw = json.loads(path.read_text())
        raw["classes"] = tuple(raw["classes"])
        raw["image_shape"] = tuple(raw["image_shape"])
        return cls(**raw)

    def conversion(self) -> Preprocessing:
        """How an upload becomes this model's input: exactly as its training images were made."""
        from storage.images import Preprocessing

        channels, height, width = self.image_shape
        recorded = {"resize": "stretch", **self.preprocessing}
        return Preprocessing.from_dict({**recorded, "channels": channels, "height": height, "width": width})

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
