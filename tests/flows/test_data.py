from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from flows.data import SplitImages, build_augmentation, default_workers, training_loader
from flows.parameters import AUGMENTATIONS, TrainingParameters, augment_names
from flows.prepare import split_dataset
from storage.datasets import BUILTIN_DATASET, open_images, resolve_dataset
from storage.settings import Settings
from tests.flows.generated import generated_dataset


def test_augmentations_are_named_from_the_documented_set() -> None:
    assert augment_names("Flip, crop,flip") == ("flip", "crop")
    assert augment_names("none") == ()
    assert augment_names("") == ()
    assert TrainingParameters(augment=" rotate ,COLOR").augment == "rotate,color"
    assert TrainingParameters().augment == "crop"  # the digits demo's shift of up to a pixel


@pytest.mark.parametrize("bad", ["blur", "flip,blur", "none,flip"])
def test_an_unknown_augmentation_is_a_clear_error(bad: str) -> None:
    with pytest.raises(ValidationError, match="is unknown; choose from flip, crop, rotate, color"):
        TrainingParameters(augment=bad)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 20, 14)], ids=["gray", "colour"])
@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_each_augmentation_keeps_shape_and_type(name: str, shape: tuple[int, int, int]) -> None:
    image = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    transform = build_augmentation([name], shape)
    assert transform is not None
    outputs = [transform(image) for _ in range(20)]
    assert all(out.shape == image.shape and out.dtype == torch.uint8 for out in outputs)
    assert any(not torch.equal(out, image) for out in outputs)  # it does something, sometimes


def test_no_augmentation_is_none() -> None:
    assert build_augmentation([], (1, 8, 8)) is None


def test_crop_shifts_a_digit_by_at_most_one_pixel() -> None:
    image = torch.zeros(1, 8, 8, dtype=torch.uint8)
    image[0, 4, 4] = 255
    transform = build_augmentation(["crop"], (1, 8, 8))
    assert transform is not None
    positions = {tuple(torch.nonzero(transform(image)[0])[0].tolist()) for _ in range(100)}
    assert positions <= {(r, c) for r in (3, 4, 5) for c in (3, 4, 5)}
    assert len(positions) > 3


def test_the_dataset_gives_float_images_in_unit_range_and_labels(settings: Settings) -> None:
    images = open_images(resolve_dataset(BUILTIN_DATASET, None, settings))
    data = split_dataset(images, seed=0)
    dataset = SplitImages(images, data.validation.indexes)
    image, label = dataset[3]
    assert image.dtype == torch.float32
    assert image.shape == (1, 8, 8)
    assert 0.0 <= image.min() <= image.max() <= 1.0
    assert label == data.validation.labels[3]
    expected = images.read(int(data.validation.indexes[3])).astype(np.float32) / 255
    assert np.allclose(image.numpy(), expected)


def test_small_datasets_load_in_process(settings: Settings) -> None:
    assert default_workers(open_images(resolve_dataset(BUILTIN_DATASET, None, settings))) == 0


def test_worker_processes_give_the_same_batches_for_a_seed(settings: Settings, tmp_path: Path) -> None:
    version = generated_dataset(settings, tmp_path / "squares", classes=2, per_class=8, side=8, rgb=True)
    images = open_images(version)
    dataset = SplitImages(images, np.arange(len(images)), build_augmentation(["flip", "color"], version.image_shape))

    def first_epoch(workers: int) -> list[torch.Tensor]:
        loader = training_loader(
            dataset, batch_size=5, workers=workers, generator=torch.Generator().manual_seed(7), cuda=False
        )
        return [batch for batch, _ in loader]

    once, again = first_epoch(1), first_epoch(1)
    assert sum(len(batch) for batch in once) == len(images)
    assert all(torch.equal(a, b) for a, b in zip(once, again, strict=True))
