"""What a model bundle is (``metadata.json`` beside ``model.onnx``), readable without numpy or ONNX Runtime.

The runtimes and the CLI only need a bundle's identity and input shape; keeping it apart from
the predictor keeps ``onebox status`` and ``onebox stop`` from importing the inference stack.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from storage.images import Preprocessing

MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
MODEL_DIR_VARIABLE = "ONEBOX_MODEL_DIR"  # the bundle(s) a model server loads, joined with os.pathsep
DEFAULT_MODEL_VARIABLE = "ONEBOX_DEFAULT_MODEL"  # the model the unprefixed routes answer for
WORKERS_VARIABLE = "ONEBOX_SERVE_WORKERS"  # its worker processes
SERVICE_NAME = "onebox-classifier"  # the BentoML service's name (its answers' Server header says it)
REQUEST_ID_HEADER = "X-Request-ID"  # names an answer's predictions in the log
# The drift reference: the held-out split's probabilities and embeddings as this version computed
# them (numpy .npz: "probabilities" (N, K), "labels" (N,), "embeddings" (N, D) when the model has one).
REFERENCE_FILE = "reference.npz"
# The ONNX graph's outputs: the logits, and (when the model has a final linear layer) that layer's
# input, the embedding the drift check compares. Bundles exported before it have logits only.
LOGITS_OUTPUT = "logits"
EMBEDDING_OUTPUT = "embedding"


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
    trained: str = ""  # ISO timestamp of the training run; "" in bundles made before it was recorded
    # storage.images.Preprocessing.to_dict() of the training data; bundles made before it was
    # recorded were trained on stretched images: {} means that.
    preprocessing: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> ModelMetadata:
        """Read a bundle's metadata; fields this version does not know are left out, so a server
        reads bundles written by a newer onebox (an older one failed on ``trained``)."""
        raw = json.loads(path.read_text())
        raw["classes"] = tuple(raw["classes"])
        raw["image_shape"] = tuple(raw["image_shape"])
        known = {spec.name for spec in fields(cls)}
        return cls(**{name: value for name, value in raw.items() if name in known})

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


def bundle_folders(value: str) -> list[Path]:
    """The bundle folders named by a value of ``ONEBOX_MODEL_DIR``: one folder, or several joined
    with ``os.pathsep`` (one model server serving several models)."""
    return [Path(part) for part in value.split(os.pathsep) if part.strip()]
