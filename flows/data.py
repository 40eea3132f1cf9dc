"""Data for training: a torch Dataset over a split's images, the run's augmentations, the DataLoader.

Images are read one at a time from the version's :class:`~storage.datasets.DatasetImages` in the
loader's worker processes, so a dataset far larger than memory trains in a bounded footprint.

Augmentations are chosen per run from a small documented set (``AUGMENTATIONS``), applied to
uint8 tensors with torchvision.transforms.v2 before scaling to [0, 1]
(``flows.parameters.augment_names`` checks a run's choice):

- ``flip``: mirror left-right with probability 1/2 (not for digits or text: a mirrored 2 is no 2);
- ``crop``: pad by 1/16 of each side (at least 1 pixel) and crop back at a random place, i.e. a
  random shift; the digits demo's default (a shift of up to 1 pixel);
- ``rotate``: a random rotation of up to 10 degrees;
- ``color``: jitter brightness and contrast by up to 20 % (and saturation on colour images).
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision.transforms import v2

from flows.parameters import AUGMENTATIONS
from storage.datasets import DatasetImages
from storage.errors import ParameterError

# Below this decoded size, worker processes cost more (start-up, pickling) than they save.
SMALL_DATASET_BYTES = 64 * 2**20


def build_augmentation(names: Sequence[str], image_shape: tuple[int, int, int]) -> v2.Transform | None:
    """The transform for ``names`` on uint8 (C, H, W) tensors of ``image_shape``; None for no augmentation."""
    channels, height, width = image_shape
    steps: list[v2.Transform] = []
    for name in names:
        if name == "flip":
            steps.append(v2.RandomHorizontalFlip())
        elif name == "crop":
            steps.append(v2.RandomCrop((height, width), padding=max(1, min(height, width) // 16)))
        elif name == "rotate":
            steps.append(v2.RandomRotation(10))
        elif name == "color":
            steps.append(v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2 if channels == 3 else None))
        else:
            raise ParameterError(f"augmentation {name!r} is unknown; choose from {', '.join(AUGMENTATIONS)}")
    return v2.Compose(steps) if steps else None


class SplitImages(Dataset[tuple[torch.Tensor, int]]):
    """Images ``indexes`` of ``images`` as (float32 (C, H, W) in [0, 1], label), augmented if asked.

    Picklable (the DatasetImages handle is), so worker processes each read their own images.
    """

    def __init__(self, images: DatasetImages, indexes: np.ndarray, augmentation: v2.Transform | None = None) -> None:
        self.images = images
        self.indexes = np.asarray(indexes, dtype=np.int64)
        self.labels = images.labels[self.indexes]
        self.augmentation = augmentation

    def __len__(self) -> int:
        return len(self.indexes)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(np.ascontiguousarray(self.images.read(int(self.indexes[position]))))
        if self.augmentation is not None:
            image = self.augmentation(image)
        return image.float().div_(255.0), int(self.labels[position])


def default_workers(images: DatasetImages) -> int:
    """0 for datasets small enough that workers cost more than they save, else min(4, CPUs - 1)."""
    channels, height, width = images.version.image_shape
    decoded = len(images) * channels * height * width * 4  # float32
    if decoded < SMALL_DATASET_BYTES:
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def seed_worker(worker_id: int) -> None:
    """Seed Python's and numpy's RNGs in a worker from torch's (which the loader seeded per worker)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def training_loader(
    dataset: SplitImages,
    *,
    batch_size: int,
    workers: int,
    generator: torch.Generator,
    cuda: bool,
) -> DataLoader[tuple[torch.Tensor, int]]:
    """Shuffled batches drawn with ``generator`` (so a seed fixes the order), pinned for CUDA."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=RandomSampler(dataset, generator=generator),
        num_workers=workers,
        worker_init_fn=seed_worker if workers else None,
        generator=generator,
        persistent_workers=workers > 0,
        pin_memory=cuda,
        prefetch_factor=4 if workers else None,
    )
