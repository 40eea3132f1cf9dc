"""Prepare: a deterministic, stratified train/validation/test split of one dataset version."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from storage.datasets import DatasetVersion, LoadedDataset
from storage.errors import DatasetError

VALIDATION_FRACTION = 0.15
TEST_FRACTION = 0.15
# The test split depends on the dataset version alone, never on the run's seed: challenger and
# production are compared on images neither of them trained on.
TEST_SPLIT_SEED = 20261129


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class PreparedData:
    dataset: DatasetVersion
    train: Split
    validation: Split
    test: Split
    seed: int

    @property
    def classes(self) -> tuple[str, ...]:
        return self.dataset.classes


def split_dataset(data: LoadedDataset, *, seed: int) -> PreparedData:
    """Split 70/15/15, stratified by class.

    The test split is fixed for a dataset version; ``seed`` picks the train/validation split, so
    the same seed always gives the same three splits.

    Raises:
        DatasetError: a class has too few images to appear in every split.
    """
    counts = np.bincount(data.labels, minlength=len(data.version.classes))
    if counts.min() < 4:
        small = [c for c, n in zip(data.version.classes, counts, strict=True) if n < 4]
        raise DatasetError(
            f"dataset {data.version.name}:{data.version.version} has fewer than 4 images in "
            f"class(es) {', '.join(small)}; each class needs at least 4 to be split"
        )
    indexes = np.arange(len(data.labels))
    rest, test = train_test_split(indexes, test_size=TEST_FRACTION, stratify=data.labels, random_state=TEST_SPLIT_SEED)
    train, validation = train_test_split(
        rest,
        test_size=VALIDATION_FRACTION / (1 - TEST_FRACTION),
        stratify=data.labels[rest],
        random_state=seed,
    )

    def take(selected: np.ndarray) -> Split:
        selected = np.sort(selected)
        return Split(images=data.images[selected], labels=data.labels[selected])

    return PreparedData(
        dataset=data.version, train=take(train), validation=take(validation), test=take(test), seed=seed
    )
