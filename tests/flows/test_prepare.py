from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flows.prepare import EVALUATION_BATCH_BYTES, LARGEST_EVALUATION_BATCH, Split, evaluation_batch_size, split_dataset
from storage.datasets import BUILTIN_DATASET, DatasetImages, import_image_folder, open_images, resolve_dataset
from storage.errors import DatasetError
from storage.settings import Settings
from tests.flows.generated import write_image_folder


@pytest.fixture
def digits(settings: Settings) -> DatasetImages:
    return open_images(resolve_dataset(BUILTIN_DATASET, None, settings))


def test_split_is_deterministic_per_seed(digits: DatasetImages) -> None:
    first, again, other = split_dataset(digits, seed=3), split_dataset(digits, seed=3), split_dataset(digits, seed=4)
    assert np.array_equal(first.train.indexes, again.train.indexes)
    assert np.array_equal(first.validation.indexes, again.validation.indexes)
    assert not np.array_equal(first.train.indexes, other.train.indexes)


def test_test_split_is_the_same_for_every_seed(digits: DatasetImages) -> None:
    # Challenger and production are compared on images neither trained on.
    first, other = split_dataset(digits, seed=0), split_dataset(digits, seed=9)
    assert np.array_equal(first.test.indexes, other.test.indexes)
    assert not set(first.test.indexes) & set(np.concatenate([other.train.indexes, other.validation.indexes]))


def test_split_is_disjoint_complete_and_stratified(digits: DatasetImages) -> None:
    data = split_dataset(digits, seed=0)
    splits = (data.train, data.validation, data.test)
    together = np.sort(np.concatenate([s.indexes for s in splits]))
    assert np.array_equal(together, np.arange(len(digits)))  # every image in exactly one split
    assert len(data.test) == pytest.approx(0.15 * len(digits), abs=2)
    overall = np.bincount(digits.labels) / len(digits)
    for split in splits:
        assert np.array_equal(split.labels, digits.labels[split.indexes])
        share = np.bincount(split.labels, minlength=10) / len(split)
        assert np.abs(share - overall).max() < 0.02


def test_a_split_is_read_batch_by_batch_in_order(digits: DatasetImages) -> None:
    test = split_dataset(digits, seed=0).test
    batches = list(test.batches(100))
    assert [len(labels) for _, labels in batches] == [100] * (len(test) // 100) + [len(test) % 100]
    images = np.concatenate([images for images, _ in batches])
    assert images.dtype == np.uint8
    assert images.shape == (len(test), 1, 8, 8)
    assert np.array_equal(images, digits.read_many(test.indexes))
    assert np.array_equal(np.concatenate([labels for _, labels in batches]), test.labels)
    assert np.array_equal(test.sample(5), images[:5])
    assert len(test.sample(10_000)) == len(test)  # a bound above the split's size is the whole split


def test_tiny_classes_are_refused(tmp_path: Path, settings: Settings) -> None:
    root = write_image_folder(tmp_path / "tiny", classes=2, per_class=10)
    for extra in sorted((root / "class0").iterdir())[2:]:
        extra.unlink()
    images = open_images(import_image_folder(root, name="tiny", settings=settings))
    with pytest.raises(DatasetError, match="fewer than 4 images in class"):
        split_dataset(images, seed=0)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (3, 224, 224), (3, 512, 512)], ids=str)
def test_evaluation_batches_hold_at_most_their_budget_of_input(shape: tuple[int, int, int]) -> None:
    image_bytes = int(np.prod(shape)) * 4  # float32
    size = evaluation_batch_size(shape)
    assert 1 <= size <= LARGEST_EVALUATION_BATCH
    assert size * image_bytes <= EVALUATION_BATCH_BYTES
    # As large as the budget allows: one more image would be over it, or over the cap.
    assert size == LARGEST_EVALUATION_BATCH or (size + 1) * image_bytes > EVALUATION_BATCH_BYTES


def test_an_image_larger_than_the_budget_is_evaluated_one_at_a_time() -> None:
    assert evaluation_batch_size((3, 4096, 4096)) == 1


def test_evaluation_batches_are_never_smaller_than_the_training_batch() -> None:
    # A batch that trained with its gradients fits without them, and fewer passes are faster.
    assert evaluation_batch_size((3, 224, 224), at_least=64) == 64
    assert evaluation_batch_size((1, 8, 8), at_least=1000) == 1000


def test_a_split_is_predicted_in_bounded_batches_and_joined_in_order() -> None:
    images = np.random.default_rng(0).integers(0, 256, (70, 3, 224, 224), dtype=np.uint8)
    split = Split.from_arrays(images, np.zeros(70, dtype=np.int64))
    seen: list[int] = []

    def mean_pixel(batch: np.ndarray) -> np.ndarray:
        seen.append(len(batch))
        means: np.ndarray = batch.reshape(len(batch), -1).mean(axis=1, keepdims=True)
        return means

    predicted = split.predict(mean_pixel)
    assert max(seen) == evaluation_batch_size((3, 224, 224)) < 70
    assert sum(seen) == 70
    assert np.allclose(predicted, images.reshape(70, -1).mean(axis=1, keepdims=True))
