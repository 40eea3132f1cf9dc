"""What a model bundle is (``metadata.json`` beside ``model.onnx``), readable without numpy or ONNX Runtime.

The runtimes and the CLI only need a bundle's identity and input shape; keeping it apart from
the predictor keeps ``onebox status`` and ``onebox stop`` from importing the inference stack.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
    trained: str = ""  # ISO time of the training run's registration; "" in bundles from before it was kept

    @classmethod
    def read(cls, path: Path) -> ModelMetadata:
        raw = json.loads(path.read_text())
        raw["classes"] = tuple(raw["classes"])
        raw["image_shape"] = tuple(raw["image_shape"])
        return cls(**raw)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
