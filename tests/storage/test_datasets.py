from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from storage.datasets import (
    BUILTIN_DATASET,
    import_image_folder,
    list_datasets,
    load_dataset,
    resolve_dataset,
)
from storage.errors import DatasetError
from storage.settings import Settings


def make_folder(
    root: Path, *, classes: int = 2, per_class: int = 3, size: tuple[int, int] = (12, 10), rgb: bool = False
) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            shape = (size[1], size[0], 3) if rgb else (size[1], size[0])
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            suffix = ".jpg" if i % 2 else ".png"
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}{suffix}")
    return root


def test_import_stores_a_versioned_copy_and_catalogs_it(tmp_path: Path, settings: Settings) -> None:
    source = make_folder(tmp_path / "src")
    version = import_image_folder(source, name="parts", settings=settings)

    assert version.classes == ("class0", "class1")
    assert version.counts == {"class0": 3, "class1": 3}
    assert version.image_shape == (1, 10, 12)
    assert (version.path / "files" / "class0" / "1.jpg").is_file()
    loaded = load_dataset(version)
    assert loaded.images.shape == (6, 1, 10, 12)
    assert loaded.images.dtype == np.uint8
    assert loaded.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert [(v.name, v.version) for v in list_datasets(settings)] == [("parts", version.version)]


def test_same_content_same_version_nothing_copied_twice(tmp_path: Path, settings: Settings) -> None:
    source = make_folder(tmp_path / "src")
    first = import_image_folder(source, name="parts", settings=settings)
    marker = first.path / "images.u8"
    stamp = marker.stat().st_mtime_ns
    second = import_image_folder(source, name="parts", settings=settings)

    assert second.version == first.version
    assert marker.stat().st_mtime_ns == stamp
    assert len(list_datasets(settings)) == 1


def test_changed_content_is_a_new_version(tmp_path: Path, settings: Settings) -> None:
    source = make_folder(tmp_path / "src")
    first = import_image_folder(source, name="parts", settings=settings)
    Image.fromarray(np.zeros((10, 12), dtype=np.uint8)).save(source / "class1" / "extra.png")
    second = import_image_folder(source, name="parts", settings=settings)

    assert second.version != first.version
    assert second.counts["class1"] == 4
    assert resolve_dataset("parts", None, settings).version in {first.version, second.version}
    assert resolve_dataset("parts", first.version, settings) == first


def test_color_and_large_images_are_converted_to_one_shape(tmp_path: Path, settings: Settings) -> None:
    source = make_folder(tmp_path / "src", size=(200, 100), rgb=True)
    version = import_image_folder(source, name="photos", settings=settings)
    assert version.image_shape == (3, 32, 64)  # the longer side scaled down to 64


def test_corrupt_files_are_all_named_and_nothing_is_stored(tmp_path: Path, settings: Settings) -> None:
    source = make_folder(tmp_path / "src")
    good = (source / "class0" / "0.png").read_bytes()
    (source / "class0" / "truncated.png").write_bytes(good[: len(good) // 2])
    (source / "class1" / "notes.png").write_text("not an image")

    with pytest.raises(DatasetError) as caught:
        import_image_folder(source, name="parts", settings=settings)

    message = str(caught.value)
    assert "truncated.png" in message
    assert "notes.png" in message
    assert "nothing was imported" in message
    assert list_datasets(settings) == []
    assert not (settings.datasets_dir / "parts").exists()


def test_a_failed_import_keeps_earlier_versions(tmp_path: Path, settings: Settings) -> None:
    source = make_folder(tmp_path / "src")
    kept = import_image_folder(source, name="parts", settings=settings)
    (source / "class0" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")

    with pytest.raises(DatasetError, match=r"broken\.jpg"):
        import_image_folder(source, name="parts", settings=settings)

    assert list_datasets(settings) == [kept]
    assert load_dataset(kept).images.shape[0] == 6


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda root: root / "missing", "does not exist"),
        (lambda root: make_folder(root / "one", classes=1), "at least 2"),
        (lambda root: (root / "f.txt", (root / "f.txt").write_text("x"))[0], "is not a folder"),
    ],
)
def test_unusable_folders_are_refused(tmp_path: Path, settings: Settings, setup, expected: str) -> None:
    with pytest.raises(DatasetError, match=expected):
        import_image_folder(setup(tmp_path), name="parts", settings=settings)


def test_empty_class_folder_is_named(tmp_path: Path, settings: Settings) -> None:
    source = make_folder(tmp_path / "src")
    (source / "class9").mkdir()
    with pytest.raises(DatasetError, match="class9"):
        import_image_folder(source, name="parts", settings=settings)


@pytest.mark.parametrize("name", ["", "Has Space", "UPPER", "-lead", "a" * 65, "../escape"])
def test_bad_names_are_refused(tmp_path: Path, settings: Settings, name: str) -> None:
    with pytest.raises(DatasetError, match="not valid"):
        import_image_folder(make_folder(tmp_path / "src"), name=name, settings=settings)


def test_builtin_digits_need_no_download(settings: Settings) -> None:
    version = resolve_dataset(BUILTIN_DATASET, None, settings)
    assert version.classes == tuple(str(d) for d in range(10))
    assert version.num_images == 1797
    assert version.image_shape == (1, 8, 8)
    assert resolve_dataset(BUILTIN_DATASET, None, settings).version == version.version


def test_unknown_dataset_and_version_name_what_exists(settings: Settings) -> None:
    with pytest.raises(DatasetError, match=r"unknown dataset 'nope'.*onebox data import"):
        resolve_dataset("nope", None, settings)
    with pytest.raises(DatasetError, match="has no version 'abc'"):
        resolve_dataset(BUILTIN_DATASET, "abc", settings)
