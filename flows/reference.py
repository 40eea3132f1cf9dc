"""The drift reference: what a model version computed on its held-out split, saved with the version.

The training pipeline writes it right after the export, with the exported ONNX graph run through
:meth:`serving.predictor.OnnxPredictor.infer`: the very computation serving does, so a drift check
compares production with what this version itself produced on images it never trained on. It is
logged as an artifact of the run and copied into the model bundle
(:data:`serving.metadata.REFERENCE_FILE`).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flows.export import ExportCheck
from flows.prepare import PreparedData, Split
from serving.metadata import REFERENCE_FILE, ModelMetadata
from serving.predictor import OnnxPredictor
from storage.errors import ModelError

# A bigger held-out split is subsampled (seeded) to this many images: the statistics gain little
# beyond it, and the bundle (copied into every model image) stays small.
MAX_REFERENCE_IMAGES = 5000
REFERENCE_SEED = 20261202
BATCH_SIZE = 256


@dataclass(frozen=True)
class Reference:
    probabilities: np.ndarray  # float32 (N, K)
    labels: np.ndarray  # int64 (N,): the true classes of the held-out images
    embeddings: np.ndarray | None  # float32 (N, D); None: the model has no embedding output

    def __len__(self) -> int:
        return len(self.labels)

    def save(self, path: Path) -> Path:
        arrays = {"probabilities": self.probabilities, "labels": self.labels}
        if self.embeddings is not None:
            arrays["embeddings"] = self.embeddings
        with path.open("wb") as handle:
            np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]  # numpy's stub wants positional arrays
        return path

    @classmethod
    def load(cls, path: Path) -> Reference:
        """Read a reference file.

        Raises:
            ModelError: the file is not a reference (unreadable, keys or shapes that do not fit).
        """
        try:
            with np.load(path, allow_pickle=False) as stored:
                probabilities = np.asarray(stored["probabilities"], dtype=np.float32)
                labels = np.asarray(stored["labels"], dtype=np.int64)
                embeddings = np.asarray(stored["embeddings"], np.float32) if "embeddings" in stored else None
        except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as error:
            raise ModelError(f"drift reference {path} cannot be read ({type(error).__name__}: {error})") from error
        rows = len(labels)
        sizes = {len(probabilities), rows} | ({len(embeddings)} if embeddings is not None else set())
        if probabilities.ndim != 2 or sizes != {rows}:
            raise ModelError(f"drift reference {path} holds arrays of mismatched shapes")
        return cls(probabilities=probabilities, labels=labels, embeddings=embeddings)


def reference_split(split: Split, *, limit: int = MAX_REFERENCE_IMAGES) -> Split:
    """The held-out images the reference is computed on: all of them, or a seeded subset of ``limit``."""
    if len(split) <= limit:
        return split
    chosen = np.sort(np.random.default_rng(REFERENCE_SEED).choice(len(split), limit, replace=False))
    return Split(source=split.source, indexes=split.indexes[chosen], labels=split.labels[chosen])


def compute_reference(predictor: OnnxPredictor, split: Split, *, batch_size: int = BATCH_SIZE) -> Reference:
    """The predictor's probabilities and embeddings on ``split``, read and run batch by batch."""
    probabilities, embeddings = [], []
    for images, _labels in split.batches(batch_size):
        batch_probabilities, batch_embeddings = predictor.infer(images)
        probabilities.append(batch_probabilities.astype(np.float32))
        if batch_embeddings is not None:
            embeddings.append(batch_embeddings.astype(np.float32))
    return Reference(
        probabilities=np.concatenate(probabilities),
        labels=split.labels.astype(np.int64),
        embeddings=np.concatenate(embeddings) if embeddings else None,
    )


def write_reference(onnx_path: Path, data: PreparedData) -> Reference:
    """Compute the exported model's reference on the test split and save it beside ``onnx_path``."""
    dataset = data.dataset
    # The version is not registered yet: the predictor needs only the shape and the conversion.
    metadata = ModelMetadata(
        model_name="",
        model_version="",
        run_id="",
        dataset_name=dataset.name,
        dataset_version=dataset.version,
        classes=dataset.classes,
        image_shape=dataset.image_shape,
        preprocessing=dataset.preprocessing.to_dict(),
    )
    reference = compute_reference(OnnxPredictor(onnx_path, metadata), reference_split(data.test))
    reference.save(onnx_path.with_name(REFERENCE_FILE))
    return reference


def describe(reference: Reference, check: ExportCheck) -> str:
    """The run's one line about its reference; without an embedding it says what drift will use."""
    if reference.embeddings is None:
        return (
            f"drift reference: {len(reference)} held-out images; the model has no final nn.Linear, so its ONNX "
            "graph has no embedding and drift checks will use the probabilities alone"
        )
    return (
        f"drift reference: {len(reference)} held-out images, embedding of {reference.embeddings.shape[1]} values "
        f"(ONNX parity: max |diff| {check.max_abs_embedding_diff:.2e})"
    )
