"""Reading a version's images one at a time: the raw store, old arrays.npz versions, per-run sizes."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import sqlite_utils
from PIL import Image

from storage.datasets import DatasetImages, import_image_folder, list_datasets, load_dataset, open_images
from storage.errors import DatasetError
from storage.images import Preprocessing
from storage.settings import Settings
from tests.storage.test_dataset_import import make_photos


def test_images_are_read_from_the_raw_store(tmp_path: Path, settings: Settings) -> None:
    version = import_image_folder(make_photos(tmp_path / "src"), name="photos", settings=settings)
    images = open_images(version)
    raw = np.fromfile(version.path / "images.u8", dtype=np.uint8).reshape(12, *version.image_shape)
    assert np.array_equal(images.read_many(np.arange(12)), raw)  # one read for a run of images
    assert np.array_equal(images.read_many(np.array([7, 2])), raw[[7, 2]])
    assert np.array_equal(images.read(-1), raw[11])
    image = images.read(4)
    image[:] = 0  # a fresh, writable array each time (torch.from_numpy warns on read-only ones)
    assert np.array_equal(images.read(4), raw[4])
    header = json.loads((version.path / "store.json").read_text())
    assert header["count"] == 12
    assert Preprocessing.from_dict(header["preprocessing"]) == version.preprocessing


def test_an_index_out_of_range_is_an_index_error(tmp_path: Path, settings: Settings) -> None:
    images = open_images(import_image_folder(make_photos(tmp_path / "src"), name="photos", settings=settings))
    with pytest.raises(IndexError, match="image 12 is out of range"):
        images.read(12)
    with pytest.raises(IndexError):
        images.read_many(np.array([0, -13]))


def test_pickled_images_carry_no_arrays_and_reopen_their_files(tmp_path: Path, settings: Settings) -> None:
    version = import_image_folder(make_photos(tmp_path / "src", per_class=30), name="photos", settings=settings)
    images = open_images(version)
    expected = images.read_many(np.arange(len(images)))
    payload = pickle.dumps(images)  # as a DataLoader hands it to a worker process
    assert len(payload) < 2_000
    copy = pickle.loads(payload)
    assert np.array_equal(copy.read_many(np.arange(len(copy))), expected)
    assert np.array_equal(copy.labels, images.labels)
    copy.close()
    assert np.array_equal(copy.read(3), expected[3])  # reopened after close


def test_a_run_can_ask_for_another_resolution_and_policy(tmp_path: Path, settings: Settings) -> None:
    version = import_image_folder(make_photos(tmp_path / "src"), name="photos", settings=settings)
    wanted = replace(version.preprocessing, height=20, width=24, resize="pad")
    images = open_images(version, wanted)
    assert images.image_shape == (3, 20, 24)
    assert images.read_many(np.array([0, 11])).shape == (2, 3, 20, 24)
    first_file = version.path / "files" / (version.path / "files.txt").read_text().splitlines()[0]
    assert np.array_equal(images.read(0), wanted.decode(first_file.read_bytes()))
    assert pickle.loads(pickle.dumps(images)).read(0).shape == (3, 20, 24)
    assert open_images(version, version.preprocessing).image_shape == version.image_shape


def legacy_version(tmp_path: Path, settings: Settings) -> Path:
    """A version as imports before the image store wrote it: files/ and arrays.npz, no resize column."""
    folder = settings.datasets_dir / "old" / "0123456789ab"
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (4, 1, 6, 5), dtype=np.uint8)
    for index, name in enumerate(["a/0.png", "a/1.png", "b/0.png", "b/1.png"]):
        (folder / "files" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[index, 0]).save(folder / "files" / name)
    np.savez_compressed(folder / "arrays.npz", images=images, labels=np.array([0, 0, 1, 1], dtype=np.int64))
    row = {
        **{"name": "old", "version": "0123456789ab", "classes": '["a", "b"]', "counts": '{"a": 2, "b": 2}'},
        **{"channels": 1, "height": 6, "width": 5, "num_images": 4, "source": "/gone", "created": "2026-01-01"},
    }
    sqlite_utils.Database(settings.catalog_path).table("dataset_versions").insert(row, pk=("name", "version"))
    return folder


def test_versions_stored_as_arrays_npz_still_read(tmp_path: Path, settings: Settings) -> None:
    folder = legacy_version(tmp_path, settings)
    [version] = list_datasets(settings)
    images = open_images(version)
    with np.load(folder / "arrays.npz") as arrays:
        stored = arrays["images"]
    assert len(images) == 4
    assert np.array_equal(images.read(2), stored[2])
    assert np.array_equal(images.read_many(np.arange(4)), stored)
    assert np.array_equal(load_dataset(version).images, stored)
    bigger = open_images(version, Preprocessing(1, 12, 10))  # decoded from files/, in the old order
    assert bigger.read(3).shape == (1, 12, 10)
    assert np.array_equal(open_images(version, Preprocessing(3, 6, 5)).read(1)[0], stored[1, 0])


def test_a_version_whose_images_are_gone_says_so(tmp_path: Path, settings: Settings) -> None:
    version = import_image_folder(make_photos(tmp_path / "src"), name="photos", settings=settings)
    for name in ("images.u8", "labels.npy"):
        (version.path / name).unlink()
    with pytest.raises(DatasetError, match="has no images; import the dataset again"):
        len(DatasetImages(version))


class Pairs:
    """A map-style dataset over the store, as a training loop would wrap it (pickled to spawned workers)."""

    def __init__(self, images: DatasetImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.images.read(index), int(self.images.labels[index])


@pytest.mark.slow  # torch in four worker processes: seconds
def test_a_torch_dataloader_reads_the_store_in_worker_processes(tmp_path: Path, settings: Settings) -> None:
    import torch
    from torch.utils.data import DataLoader

    version = import_image_folder(make_photos(tmp_path / "src"), name="photos", settings=settings)
    images = open_images(version)
    images.read(0)  # an open file in the parent: forked workers inherit it, spawned ones open their own
    for context in ("fork", "spawn"):
        loader: DataLoader[tuple[np.ndarray, int]] = DataLoader(
            Pairs(images),  # type: ignore[arg-type]  # any object with __len__ and __getitem__ serves
            batch_size=5,
            num_workers=2,
            multiprocessing_context=context,
        )
        batches = list(loader)
        pixels = torch.cat([batch[0] for batch in batches]).numpy()
        assert np.array_equal(pixels, images.read_many(np.arange(12))), context
        assert torch.cat([batch[1] for batch in batches]).tolist() == images.labels.tolist()
