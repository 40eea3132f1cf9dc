"""Importing real-looking photo folders: mixed sizes, gray, 16-bit, bad files, concurrent imports."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import signal
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving.metadata import ModelMetadata
from storage.datasets import DatasetVersion, import_image_folder, list_datasets, open_images
from storage.errors import DatasetError
from storage.settings import Settings
from tests.storage.test_images import bomb_png

SIZES = [(30, 40), (64, 48), (90, 90), (48, 64), (64, 48), (33, 77)]


def make_photos(root: Path, *, classes: int = 2, per_class: int = 6, gray: bool = False) -> Path:
    """Colour (or gray) photos of mixed sizes, 30-90 px a side, as JPEG and PNG."""
    rng = np.random.default_rng(1)
    for c in range(classes):
        (root / f"kind{c}").mkdir(parents=True)
        for i in range(per_class):
            width, height = SIZES[i % len(SIZES)]
            shape = (height, width) if gray else (height, width, 3)
            base = rng.integers(0, 256, shape, dtype=np.uint8) // 4 + 64 * c  # classes differ in brightness
            Image.fromarray(base).save(root / f"kind{c}" / f"{i}.{'png' if i % 3 == 0 else 'jpg'}")
    (root / "kind0" / "README.txt").write_text("notes are not images")
    return root


def test_mixed_size_photos_get_the_most_common_size(tmp_path: Path, settings: Settings) -> None:
    version = import_image_folder(make_photos(tmp_path / "src"), name="photos", settings=settings)
    assert version.image_shape == (3, 48, 64)  # 64x48 is the most common (width x height)
    assert version.resize == "stretch"
    assert version.num_images == 12
    images = open_images(version)
    assert len(images) == 12
    assert images.read(0).shape == (3, 48, 64)
    assert images.read_many(np.array([11, 0, 5])).shape == (3, 3, 48, 64)
    assert images.labels.tolist() == [0] * 6 + [1] * 6
    assert not (version.path / "files" / "kind0" / "README.txt").exists()


@pytest.mark.parametrize("resize", ["stretch", "crop", "pad"])
def test_an_explicit_resolution_and_policy_are_recorded(tmp_path: Path, settings: Settings, resize: str) -> None:
    source = make_photos(tmp_path / "src")
    version = import_image_folder(source, name="photos", settings=settings, image_size=(32, 40), resize=resize)  # type: ignore[arg-type]
    assert version.image_shape == (3, 32, 40)
    assert version.preprocessing.resize == resize
    assert list_datasets(settings)[0].preprocessing == version.preprocessing
    # Serving converts an upload as import did: same bytes, same pixels.
    metadata = ModelMetadata("m", "1", "r", "photos", version.version, version.classes, version.image_shape,
                             preprocessing=version.preprocessing.to_dict())  # fmt: skip
    images = open_images(version)
    for index, relative in enumerate((version.path / "files.txt").read_text().splitlines()):
        upload = (version.path / "files" / relative).read_bytes()
        assert np.array_equal(metadata.conversion().decode(upload), images.read(index)), relative


def test_other_resolutions_of_one_folder_are_other_versions(tmp_path: Path, settings: Settings) -> None:
    source = make_photos(tmp_path / "src")
    default = import_image_folder(source, name="photos", settings=settings)
    cropped = import_image_folder(source, name="photos", settings=settings, image_size=(48, 64), resize="crop")
    again = import_image_folder(source, name="photos", settings=settings, image_size=(48, 64), resize="crop")
    assert len({default.version, cropped.version}) == 2
    assert again == cropped
    assert len(list_datasets(settings)) == 2


def test_gray_photos_are_stored_with_one_channel(tmp_path: Path, settings: Settings) -> None:
    version = import_image_folder(make_photos(tmp_path / "src", gray=True), name="xray", settings=settings)
    assert version.image_shape == (1, 48, 64)
    assert open_images(version).read(3).shape == (1, 48, 64)


def test_sixteen_bit_pngs_are_scaled(tmp_path: Path, settings: Settings) -> None:
    for c, level in ((0, 8000), (1, 60000)):
        (tmp_path / "src" / f"c{c}").mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((10, 12), level + i, np.uint16)).save(tmp_path / "src" / f"c{c}" / f"{i}.png")
    version = import_image_folder(tmp_path / "src", name="scans", settings=settings)
    images = open_images(version)
    assert version.image_shape == (1, 10, 12)
    assert 30 <= int(images.read(0).mean()) <= 32  # 8000 / 257, not clipped to white
    assert 232 <= int(images.read(3).mean()) <= 234


def add_bad_files(source: Path) -> None:
    good = (source / "kind0" / "1.jpg").read_bytes()
    (source / "kind0" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (source / "kind1" / "bomb.png").write_bytes(bomb_png())
    (source / "kind1" / "text.jpg").write_text("not an image")


def test_bad_files_refuse_the_folder_each_listed_with_its_reason(tmp_path: Path, settings: Settings) -> None:
    source = make_photos(tmp_path / "src")
    add_bad_files(source)
    with pytest.raises(DatasetError) as caught:
        import_image_folder(source, name="photos", settings=settings)
    message = str(caught.value)
    assert "3 file(s)" in message
    assert "nothing was imported" in message
    assert "--skip-bad" in message
    assert "truncated.jpg: not a readable image" in message
    assert "bomb.png: too many pixels" in message
    assert "text.jpg: not a PNG or JPEG image" in message
    assert list_datasets(settings) == []
    assert not (settings.datasets_dir / "photos").exists()
    assert not [p for p in (settings.datasets_dir / ".importing").iterdir() if p.is_dir()]


def test_skip_bad_imports_the_rest_and_records_what_was_skipped(tmp_path: Path, settings: Settings) -> None:
    source = make_photos(tmp_path / "src")
    clean = import_image_folder(source, name="clean", settings=settings)
    add_bad_files(source)
    version = import_image_folder(source, name="photos", settings=settings, skip_bad=True)
    assert version.skipped == 3
    assert version.num_images == 12
    assert version.version == clean.version  # the stored content is the clean folder's
    assert sorted(Path(line.split(":")[0]).name for line in version.skipped_files()) == [
        "bomb.png", "text.jpg", "truncated.jpg"
    ]  # fmt: skip
    assert [v.skipped for v in list_datasets(settings) if v.name == "photos"] == [3]
    assert import_image_folder(source, name="photos", settings=settings, skip_bad=True) == version


def test_a_class_with_only_bad_files_is_refused_even_with_skip_bad(tmp_path: Path, settings: Settings) -> None:
    source = make_photos(tmp_path / "src")
    (source / "broken").mkdir()
    (source / "broken" / "a.png").write_bytes(bomb_png())
    with pytest.raises(DatasetError, match="broken"):
        import_image_folder(source, name="photos", settings=settings, skip_bad=True)
    assert list_datasets(settings) == []


def _import_in_a_process(source: str, home: str) -> tuple[str, int]:
    version = import_image_folder(Path(source), name="photos", settings=Settings(home=Path(home)))
    return version.version, len(open_images(version))


def test_three_concurrent_imports_of_one_folder_agree(tmp_path: Path, settings: Settings) -> None:
    source = make_photos(tmp_path / "src", per_class=12)
    context = multiprocessing.get_context("spawn")  # fresh interpreters, as three `onebox data import`s are
    with concurrent.futures.ProcessPoolExecutor(3, mp_context=context) as pool:
        results = list(pool.map(_import_in_a_process, [str(source)] * 3, [str(settings.home)] * 3))
    assert len(set(results)) == 1
    assert results[0][1] == 24
    with sqlite3.connect(settings.catalog_path) as db:
        assert db.execute("SELECT count(*) FROM dataset_versions").fetchone() == (1,)
    [version] = list_datasets(settings)
    assert [p.name for p in (settings.datasets_dir / "photos").iterdir()] == [version.version]
    assert open_images(version).read_many(np.arange(24)).shape == (24, 3, 48, 64)


def _import_then_kill_9_halfway(source: str, home: str) -> None:
    def progress(phase: str, done: int, total: int) -> None:
        if phase == "convert" and done == total // 2:
            os.kill(os.getpid(), signal.SIGKILL)  # as `kill -9` would, while holding the import's locks

    import_image_folder(Path(source), name="photos", settings=Settings(home=Path(home)), progress=progress)


def test_an_import_killed_halfway_leaves_nothing_cataloged_and_the_next_one_works(
    tmp_path: Path, settings: Settings
) -> None:
    source = make_photos(tmp_path / "src", per_class=10)
    killed = multiprocessing.get_context("spawn").Process(
        target=_import_then_kill_9_halfway, args=(str(source), str(settings.home))
    )
    killed.start()
    killed.join(timeout=120)
    assert killed.exitcode == -signal.SIGKILL
    assert list_datasets(settings) == []
    assert not (settings.datasets_dir / "photos").exists()
    [left] = [p for p in (settings.datasets_dir / ".importing").iterdir() if p.is_dir()]
    version = import_image_folder(source, name="photos", settings=settings)  # the lock died with the process
    assert version.num_images == 20
    assert not left.exists()
    assert open_images(version).read_many(np.arange(20)).shape == (20, 3, 48, 64)


def test_an_interrupted_import_is_redone(tmp_path: Path, settings: Settings) -> None:
    """What kill -9 leaves (a staging folder, or a renamed folder with no catalog row) is replaced."""
    source = make_photos(tmp_path / "src")
    first = import_image_folder(source, name="photos", settings=settings)
    with sqlite3.connect(settings.catalog_path) as db:
        db.execute("DELETE FROM dataset_versions")
    (first.path / "images.u8").write_bytes(b"half")
    stale = settings.datasets_dir / ".importing" / f"photos-{first.version}-dead"
    stale.mkdir()
    again = import_image_folder(source, name="photos", settings=settings)
    assert again.version == first.version
    assert not stale.exists()
    assert open_images(again).read(11).shape == (3, 48, 64)


def test_versions_cataloged_before_resize_policies_read_as_stretch(tmp_path: Path, settings: Settings) -> None:
    version = import_image_folder(make_photos(tmp_path / "src"), name="photos", settings=settings)
    with sqlite3.connect(settings.catalog_path) as db:
        db.execute("ALTER TABLE dataset_versions DROP COLUMN resize")
        db.execute("ALTER TABLE dataset_versions DROP COLUMN skipped")
    [old] = list_datasets(settings)
    assert isinstance(old, DatasetVersion)
    assert (old.resize, old.skipped, old.image_shape) == ("stretch", 0, version.image_shape)
