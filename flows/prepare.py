"""Prepare: a deterministic, stratified train/validation/test split of one dataset version.

A split is a list of image positions and their labels, not the images: training, evaluation and
the export check read images through the version's :class:`~storage.datasets.DatasetImages` as
they need them, so nothing here grows with the size of the images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from sklearn.model_selection import train_test_split

from storage.datasets import DatasetImages, DatasetVersion
from storage.errors import DatasetError

VALIDATION_FRACTION = 0.15
TEST_FRACTION = 0.15
# The test split depends on the dataset version alone, never on the run's seed: challenger and
# production are compared on images neither of them trained on.
TEST_SPLIT_SEED = 20261129
# The export's parity check compares torch and ONNX Runtime on this many test images at most.
EXPORT_CHECK_IMAGES = 256
# Evaluation (validation each epoch, test predictions, the export check) holds no gradients, so its
# batches may be larger than training's, which is fast for small images. At 224x224 a 256-image
# batch was the peak of a whole training run, 1 GB above the training steps (benchmarks/training.py):
# its activations are the same size per image as training's. So a batch holds at most this many
# bytes of float32 input (27 images at 224x224x3, 256 at 32x32x3).
EVALUATION_BATCH_BYTES = 16 * 2**20
LARGEST_EVALUATION_BATCH = 256


def evaluation_batch_size(image_shape: tuple[int, int, int], *, at_least: int = 1) -> int:
    """Images per evaluation batch: up to EVALUATION_BATCH_BYTES of input, capped at LARGEST_EVALUATION_BATCH.

    Args:
        at_least: the training batch size, when there is one: a batch that trained with its
            gradients fits in memory without them.
    """
    channels, height, width = image_shape
    fits = EVALUATION_BATCH_BYTES // (channels * height * width * 4)
    return max(1, at_least, min(LARGEST_EVALUATION_BATCH, fits))


class ImageSource(Protocol):
    """Where a split's images are read from: a version's DatasetImages, or arrays already in memory."""

    @property
    def image_shape(self) -> tuple[int, int, int]: ...

    def read_many(self, indexes: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class ArrayImages:
    """Images already in memory (uint8 (N, C, H, W)), e.g. a report's own examples."""

    images: np.ndarray

    @property
    def image_shape(self) -> tuple[int, int, int]:
        channels, height, width = self.images.shape[1:]
        return channels, height, width

    def read_many(self, indexes: np.ndarray) -> np.ndarray:
        chosen: np.ndarray = self.images[indexes]
        return chosen


@dataclass(frozen=True)
class Split:
    """Some of a dataset version's images: their positions in ``source`` and their labels."""

    source: ImageSource
    indexes: np.ndarray  # int64 (N,), sorted positions in ``source``
    labels: np.ndarray  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_arrays(cls, images: np.ndarray, labels: np.ndarray) -> Split:
        """A split of images already in memory, in their order."""
        return cls(source=ArrayImages(images), indexes=np.arange(len(labels)), labels=labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of each image read."""
        return self.source.image_shape

    def batches(self, batch_size: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The split in order, ``batch_size`` images at a time: (uint8 (n, C, H, W), int64 labels (n,))."""
        for start in range(0, len(self.indexes), batch_size):
            chosen = self.indexes[start : start + batch_size]
            yield self.source.read_many(chosen), self.labels[start : start + batch_size]

    def predict(self, predict: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """``predict`` (uint8 (n, C, H, W) -> (n, ...)) over the split in evaluation-sized batches, joined.

        A whole test split at once (4,500 images at 224x224 for a 30,000-image dataset) would hold
        its float32 copy and every image's activations together: gigabytes.
        """
        step = evaluation_batch_size(self.image_shape)
        return np.concatenate([predict(images) for images, _ in self.batches(step)])

    def sample(self, limit: int) -> np.ndarray:
        """The first ``limit`` images of the split (all when it is smaller), uint8 (n, C, H, W)."""
        return self.source.read_many(self.indexes[:limit])

    @property
    def images(self) -> np.ndarray:
        """Every image of the split at once (uint8): for small data and tests; streaming code uses batches()."""
        return self.source.read_many(self.indexes)


@dataclass(frozen=True)
class PreparedData:
    dataset: DatasetVersion
    images: DatasetImages
    train: Split
    validation: Split
    test: Split
    seed: int

    @property
    def classes(self) -> tuple[str, ...]:
        return self.dataset.classes


def split_dataset(images: DatasetImages, *, seed: int) -> PreparedData:
    """Split 70/15/15, stratified by class.

    The test split is fixed for a dataset version; ``seed`` picks the train/validation split, so
    the same seed always gives the same three splits.

    Raises:
        DatasetError: a class has too few images to appear in every split.
    """
    version, labels = images.version, images.labels
    counts = np.bincount(labels, minlength=len(version.classes))
    if counts.min() < 4:
        small = [c for c, n in zip(version.classes, counts, strict=True) if n < 4]
        raise DatasetError(
            f"dataset {version.name}:{version.version} has fewer than 4 images in "
            f"class(es) {', '.join(small)}; each class needs at least 4 to be split"
        )
    indexes = np.arange(len(labels))
    rest, test = train_test_split(indexes, test_size=TEST_FRACTION, stratify=labels, random_state=TEST_SPLIT_SEED)
    train, validation = train_test_split(
        rest,
        test_size=VALIDATION_FRACTION / (1 - TEST_FRACTION),
        stratify=labels[rest],
        random_state=seed,
    )

    def take(selected: np.ndarray) -> Split:
        selected = np.sort(selected).astype(np.int64)
        return Split(source=images, indexes=selected, labels=labels[selected])

    return PreparedData(
        dataset=version, images=images, train=take(train), validation=take(validation), test=take(test), seed=seed
    )
