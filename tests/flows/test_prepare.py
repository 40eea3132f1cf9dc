from __future__ import annotations

import numpy as np
import pytest

from flows.prepare import split_dataset
from storage.datasets import BUILTIN_DATASET, DatasetVersion, LoadedDataset, load_dataset, resolve_dataset
from storage.errors import DatasetError
from storage.settings import Settings


@pytest.fixture
def digits(settings: Settings) -> LoadedDataset:
    return load_dataset(resolve_dataset(BUILTIN_DATASET, None, settings))


def test_split_is_deterministic_per_seed(digits: LoadedDataset) -> None:
    first, again, other = split_dataset(digits, seed=3), split_dataset(digits, seed=3), split_dataset(digits, seed=4)
    assert np.array_equal(first.train.images, again.train.images)
    assert np.array_equal(first.validation.images, again.validation.images)
    assert not np.array_equal(first.train.images, other.train.images)


def test_test_split_is_the_same_for_every_seed(digits: LoadedDataset) -> None:
    # Challenger and production are compared on images neither trained on.
    first, other = split_dataset(digits, seed=0), split_dataset(digits, seed=9)
    assert np.array_equal(first.test.images, other.test.images)
    trained_on = {image.tobytes() for image in np.concatenate([other.train.images, other.validation.images])}
    test_only = [image.tobytes() not in trained_on for image in first.test.images]
    assert np.mean(test_only) > 0.95  # digits has a few duplicate images


def test_split_is_disjoint_complete_and_stratified(digits: LoadedDataset) -> None:
    data = split_dataset(digits, seed=0)
    assert len(data.train) + len(data.validation) + len(data.test) == len(digits.labels)
    assert len(data.test) == pytest.approx(0.15 * len(digits.labels), abs=2)
    overall = np.bincount(digits.labels) / len(digits.labels)
    for split in (data.train, data.validation, data.test):
        share = np.bincount(split.labels, minlength=10) / len(split)
        assert np.abs(share - overall).max() < 0.02

    def rows(images: np.ndarray, labels: np.ndarray) -> list[bytes]:
        return sorted(image.tobytes() + bytes([label]) for image, label in zip(images, labels, strict=True))

    # Every image lands in exactly one split: together they are the dataset, row for row.
    splits = (data.train, data.validation, data.test)
    together = rows(np.concatenate([s.images for s in splits]), np.concatenate([s.labels for s in splits]))
    assert together == rows(digits.images, digits.labels)


def test_tiny_classes_are_refused(tmp_path) -> None:
    version = DatasetVersion("tiny", "v", ("a", "b"), {"a": 2, "b": 10}, (1, 2, 2), "", tmp_path)
    data = LoadedDataset(version, np.zeros((12, 1, 2, 2), np.uint8), np.array([0] * 2 + [1] * 10))
    with pytest.raises(DatasetError, match="fewer than 4 images in class"):
        split_dataset(data, seed=0)
