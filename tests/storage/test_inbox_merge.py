"""Labeled inbox images merged into a new dataset version: content-hashed, with lineage, the
images archived, nothing labeled refused, two merges at once, a merge killed half-way."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from storage.datasets import list_datasets, open_images
from storage.errors import LabelError, ModelError
from storage.images import Preprocessing
from storage.inbox import inbox_items
from storage.inbox_merge import MERGED_FOLDER, labeling_target, merge_inbox
from storage.labels import LabelStore
from storage.settings import Settings
from tests.inbox_fixtures import LabelingHome, fill_inbox, import_parent

CLASSES = tuple(str(d) for d in range(10))


def label(home: LabelingHome, count: int, *, skip: int = 0) -> dict[str, str]:
    """Label the first ``count`` inbox images with their true digit, skip the next ``skip``."""
    store = LabelStore(home.settings.inbox_dir, "digits")
    labeled = {}
    for image in home.inbox[:count]:
        store.set_label(image.sha256, image.truth, classes=CLASSES, by="ann")
        labeled[image.sha256] = image.truth
    for image in home.inbox[count : count + skip]:
        store.skip(image.sha256, by="ann")
    return labeled


def versions(settings: Settings) -> list[str]:
    return sorted(v.version for v in list_datasets(settings))


def test_a_merge_is_the_parent_plus_the_labeled_images_with_lineage(labeling_home: LabelingHome) -> None:
    home, parent = labeling_home, labeling_home.parent
    labeled = label(home, 5, skip=2)
    result = merge_inbox(home.settings, "digits", by="ann")
    new = result.version
    assert (result.merged, result.left, result.created) == (5, 7, True)
    assert result.parent == parent
    assert new.name == parent.name
    assert new.version != parent.version
    assert new.classes == parent.classes
    assert new.preprocessing == parent.preprocessing
    assert new.num_images == parent.num_images + 5
    for digit in CLASSES:
        assert new.counts[digit] == parent.counts[digit] + sum(truth == digit for truth in labeled.values())
    lineage = new.lineage or {}
    assert lineage["parent"] == parent.version
    assert lineage["model"] == "digits"
    assert lineage["by"] == "ann"
    assert lineage["inbox_batch"] == result.batch
    assert lineage["at"]
    # cataloged: read back from the catalog, not only returned
    (listed,) = [v for v in list_datasets(home.settings) if v.version == new.version]
    assert listed.lineage == lineage

    # The merged images are in the version, as its training reads them, with their labels.
    images = open_images(new)
    files = (new.path / "files.txt").read_text().splitlines()
    for sha, truth in labeled.items():
        (position,) = [i for i, f in enumerate(files) if sha in f]
        assert files[position] == f"{truth}/inbox/{sha}.png"
        assert new.classes[int(images.labels[position])] == truth
        kept = (home.settings.inbox_dir / "digits" / MERGED_FOLDER / result.batch / f"{sha}.png").read_bytes()
        assert np.array_equal(images.read(position), parent.preprocessing.decode(kept))

    # Merged images left the inbox (archived with their sidecars); the others wait, labels gone.
    waiting = {item.sha256 for item in inbox_items(home.settings.inbox_dir, "digits")}
    assert waiting == {image.sha256 for image in home.inbox[5:]}
    archive = home.settings.inbox_dir / "digits" / MERGED_FOLDER / result.batch
    assert sorted(p.name for p in archive.glob("*.json") if p.stem != "batch") == sorted(f"{s}.json" for s in labeled)
    manifest = json.loads((archive / "batch.json").read_text())
    assert (manifest["done"], manifest["version"]) == (True, new.version)
    remaining = LabelStore(home.settings.inbox_dir, "digits").labels()
    assert set(remaining) == {image.sha256 for image in home.inbox[5:7]}  # the skipped ones
    assert all(entry.skipped for entry in remaining.values())


def test_the_version_is_content_hashed(tmp_path: Path, production_store: str) -> None:
    made = []
    for name in ("one", "two"):
        settings = Settings(home=tmp_path / name / "home", tracking_uri=production_store)
        parent = import_parent(settings, tmp_path / name / "parent")
        home = LabelingHome(settings, parent, fill_inbox(settings, tmp_path / name / "seen"))
        label(home, 4)
        made.append(merge_inbox(settings, "digits", by=name).version.version)
    assert made[0] == made[1]


def test_nothing_labeled_is_one_line_and_creates_nothing(labeling_home: LabelingHome) -> None:
    label(labeling_home, 0, skip=3)  # skipped images are not labels
    before = versions(labeling_home.settings)
    with pytest.raises(LabelError) as refused:
        merge_inbox(labeling_home.settings, "digits", by="ann")
    assert "nothing is labeled in the inbox of model digits (12 image(s) waiting)" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert versions(labeling_home.settings) == before
    assert len(inbox_items(labeling_home.settings.inbox_dir, "digits")) == 12


def test_an_unknown_model_names_the_known_ones(labeling_home: LabelingHome) -> None:
    with pytest.raises(ModelError, match="unknown model 'pets'; known models: digits"):
        merge_inbox(labeling_home.settings, "pets", by="ann")


def test_a_second_batch_builds_on_the_first_while_production_is_unchanged(labeling_home: LabelingHome) -> None:
    label(labeling_home, 3)
    first = merge_inbox(labeling_home.settings, "digits", by="ann").version
    assert labeling_target(labeling_home.settings, "digits").parent == first
    store = LabelStore(labeling_home.settings.inbox_dir, "digits")
    for image in labeling_home.inbox[3:5]:
        store.set_label(image.sha256, image.truth, classes=CLASSES, by="bob")
    second = merge_inbox(labeling_home.settings, "digits", by="bob")
    assert second.parent == first
    assert second.version.num_images == first.num_images + 2
    assert (second.version.lineage or {})["parent"] == first.version
    assert (second.version.lineage or {})["trained_on"] == labeling_home.parent.version


def test_a_pixel_array_in_the_inbox_is_merged_as_an_image(labeling_home: LabelingHome, tmp_path: Path) -> None:
    from storage.inbox import add_to_inbox

    sha = "ab" * 32
    array = tmp_path / f"{sha}.npy"
    np.save(array, np.full((1, 8, 8), 200, dtype=np.uint8))
    add_to_inbox(labeling_home.settings.inbox_dir, "digits", image=array, sha256=sha, guess="1", confidence=0.3,
                 model_version="1", reason="drift")  # fmt: skip
    LabelStore(labeling_home.settings.inbox_dir, "digits").set_label(sha, "1", classes=CLASSES, by="ann")
    new = merge_inbox(labeling_home.settings, "digits", by="ann").version
    files = (new.path / "files.txt").read_text().splitlines()
    position = files.index(f"1/inbox/{sha}.png")
    assert int(open_images(new).read(position).mean()) == 200


def _merge_in_process(home: Path, tracking_uri: str, who: str, results: multiprocessing.Queue[str]) -> None:
    try:
        result = merge_inbox(Settings(home=home, tracking_uri=tracking_uri), "digits", by=who)
        results.put(f"made {result.version.version}")
    except LabelError as error:
        results.put(f"refused {error}")


def test_two_merges_at_once_make_one_version(labeling_home: LabelingHome) -> None:
    label(labeling_home, 6)
    before = versions(labeling_home.settings)
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[str] = context.Queue()
    settings = labeling_home.settings
    workers = [
        context.Process(target=_merge_in_process, args=(settings.home, settings.tracking_uri, who, results))
        for who in ("ann", "bob")
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert [worker.exitcode for worker in workers] == [0, 0]
    outcomes = sorted(results.get(timeout=5) for _ in workers)
    assert outcomes[0].startswith("made ")
    assert outcomes[1].startswith("refused nothing is labeled")
    assert len(versions(settings)) == len(before) + 1


KILLER = """
import os, signal, sys
from storage.settings import Settings
import storage.inbox_merge as merge

settings = Settings(home=sys.argv[1], tracking_uri=sys.argv[2])
where = sys.argv[3]
if where == "converting":
    def progress(phase, done, total):
        if phase == "convert" and done == total // 2:
            os.kill(os.getpid(), signal.SIGKILL)
    merge.merge_inbox(settings, "digits", by="ann", progress=progress)
else:  # after the version is cataloged, with one image moved out of the inbox
    def archive_one(inbox, batch):
        sha, entry = next(iter(batch["images"].items()))
        os.replace(inbox / entry["file"], inbox / merge.MERGED_FOLDER / batch["batch"] / entry["file"])
        os.kill(os.getpid(), signal.SIGKILL)
    merge._archive = archive_one
    merge.merge_inbox(settings, "digits", by="ann")
"""


@pytest.mark.parametrize("where", ["converting", "archiving"])
def test_a_merge_killed_half_way_loses_nothing_and_the_next_one_finishes_it(
    labeling_home: LabelingHome, where: str
) -> None:
    settings = labeling_home.settings
    labeled = label(labeling_home, 5)
    before = versions(settings)
    killed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLER), str(settings.home), str(settings.tracking_uri), where],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    store = LabelStore(settings.inbox_dir, "digits")
    assert {sha: entry.label for sha, entry in store.labels().items()} == labeled  # no label lost
    if where == "converting":
        assert versions(settings) == before  # no half version
        assert len(inbox_items(settings.inbox_dir, "digits")) == 12
    else:
        assert len(versions(settings)) == len(before) + 1

    finished = merge_inbox(settings, "digits", by="bob")
    assert len(versions(settings)) == len(before) + 1  # the same one version either way
    assert finished.merged == 5
    assert (finished.version.lineage or {})["by"] == "ann"  # the batch the killed merge wrote down
    assert finished.version.num_images == labeling_home.parent.num_images + 5
    assert len(inbox_items(settings.inbox_dir, "digits")) == 7
    assert store.labels() == {}
    assert not list((settings.datasets_dir / ".importing").glob("merge-*"))


def test_the_parents_preprocessing_is_kept_for_images_of_another_size(labeling_home: LabelingHome) -> None:
    """A 32x32 colour photo in the inbox becomes an 8x8 gray image like the parent's, not a new resolution."""
    from storage.inbox import add_to_inbox
    from tests.inbox_fixtures import png

    rgb = np.zeros((32, 32, 3), dtype=np.uint8)
    rgb[:, :16] = (255, 0, 0)
    data = png(rgb)
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    path = labeling_home.settings.home / f"{sha}.png"
    path.write_bytes(data)
    add_to_inbox(labeling_home.settings.inbox_dir, "digits", image=path, sha256=sha, guess="4", confidence=0.2,
                 model_version="1", reason="drift")  # fmt: skip
    LabelStore(labeling_home.settings.inbox_dir, "digits").set_label(sha, "4", classes=CLASSES, by="ann")
    new = merge_inbox(labeling_home.settings, "digits", by="ann").version
    assert new.preprocessing == labeling_home.parent.preprocessing == Preprocessing(1, 8, 8, "stretch")
    assert new.image_shape == (1, 8, 8)
