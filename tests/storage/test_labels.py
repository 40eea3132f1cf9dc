"""The label store of an inbox: one label per image, unknown classes and path tricks refused,
skip and undo, two labelers at once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from storage.errors import LabelError
from storage.inbox import inbox_items
from storage.labels import LABELS_FILE, LabelStore, image_bytes
from tests.inbox_fixtures import LabelingHome

CLASSES = tuple(str(d) for d in range(10))


def test_labeling_twice_keeps_the_last_label_in_one_row(labeling_home: LabelingHome) -> None:
    store = LabelStore(labeling_home.settings.inbox_dir, "digits")
    first = labeling_home.inbox[0].sha256
    store.set_label(first, "3", classes=CLASSES, by="ann")
    store.set_label(first, "8", classes=CLASSES, by="bob")
    labels = store.labels()
    assert list(labels) == [first]
    assert (labels[first].label, labels[first].by) == ("8", "bob")


def test_an_unknown_class_is_refused_in_one_line_and_nothing_changes(labeling_home: LabelingHome) -> None:
    store = LabelStore(labeling_home.settings.inbox_dir, "digits")
    first = labeling_home.inbox[0].sha256
    store.set_label(first, "3", classes=CLASSES, by="ann")
    with pytest.raises(LabelError) as refused:
        store.set_label(first, "cat", classes=CLASSES, by="ann")
    assert "'cat' is not a class of model digits" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert store.labels()[first].label == "3"


@pytest.mark.parametrize(
    "trick",
    ["../../catalog", "/etc/passwd", "A" * 64, "ab" * 31 + "a/", "..", "", "ab" * 32 + "\n", "ab" * 33],
)
def test_ids_that_are_not_digests_are_refused(labeling_home: LabelingHome, trick: str) -> None:
    store = LabelStore(labeling_home.settings.inbox_dir, "digits")
    with pytest.raises(LabelError, match="not an inbox image id"):
        store.set_label(trick, "3", classes=CLASSES, by="ann")
    assert store.labels() == {}


def test_an_image_not_in_this_inbox_is_refused(labeling_home: LabelingHome) -> None:
    store = LabelStore(labeling_home.settings.inbox_dir, "digits")
    with pytest.raises(LabelError, match="is not in the inbox of model digits"):
        store.set_label("0" * 64, "3", classes=CLASSES, by="ann")
    other = LabelStore(labeling_home.settings.inbox_dir, "pets")  # another model's inbox: not there
    with pytest.raises(LabelError, match="not in the inbox of model pets"):
        other.skip(labeling_home.inbox[0].sha256, by="ann")


def test_undo_restores_what_was_there_before_step_by_step(labeling_home: LabelingHome) -> None:
    store = LabelStore(labeling_home.settings.inbox_dir, "digits")
    first, second = labeling_home.inbox[0].sha256, labeling_home.inbox[1].sha256
    store.set_label(first, "3", classes=CLASSES, by="ann")
    store.set_label(first, "5", classes=CLASSES, by="ann")
    store.skip(second, by="ann")
    assert store.labels()[second].skipped
    assert store.undo(by="ann") == second
    assert second not in store.labels()
    assert store.undo(by="ann") == first
    assert store.labels()[first].label == "3"
    assert store.undo(by="ann") == first
    assert store.labels() == {}
    assert store.undo(by="ann") is None


def test_undo_of_one_labeler_leaves_the_others_work(labeling_home: LabelingHome) -> None:
    store = LabelStore(labeling_home.settings.inbox_dir, "digits")
    first, second = labeling_home.inbox[0].sha256, labeling_home.inbox[1].sha256
    store.set_label(first, "1", classes=CLASSES, by="ann")
    store.set_label(second, "2", classes=CLASSES, by="bob")
    assert store.undo(by="ann") == first
    assert {sha: label.label for sha, label in store.labels().items()} == {second: "2"}


def test_the_store_is_not_taken_for_an_inbox_item(labeling_home: LabelingHome) -> None:
    store = LabelStore(labeling_home.settings.inbox_dir, "digits")
    store.set_label(labeling_home.inbox[0].sha256, "1", classes=CLASSES, by="ann")
    assert (store.folder / LABELS_FILE).is_file()
    assert len(inbox_items(labeling_home.settings.inbox_dir, "digits")) == len(labeling_home.inbox)


def _label_all(inbox_dir: Path, shas: list[str], label: str, who: str) -> None:
    store = LabelStore(inbox_dir, "digits")
    for sha in shas:
        store.set_label(sha, label, classes=CLASSES, by=who)


def test_two_labelers_at_once_in_two_processes(labeling_home: LabelingHome) -> None:
    shas = [image.sha256 for image in labeling_home.inbox]
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_label_all, args=(labeling_home.settings.inbox_dir, shas, label, who))
        for label, who in (("1", "ann"), ("2", "bob"))
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    labels = LabelStore(labeling_home.settings.inbox_dir, "digits").labels()
    assert sorted(labels) == sorted(shas)  # one row each, whoever was last
    assert {(label.label, label.by) for label in labels.values()} <= {("1", "ann"), ("2", "bob")}


def test_a_pixel_array_is_shown_as_png(tmp_path: Path) -> None:
    path = tmp_path / f"{'cd' * 32}.npy"
    np.save(path, np.linspace(0, 1, 3 * 8 * 8, dtype=np.float32).reshape(3, 8, 8))
    data, media_type = image_bytes(path)
    assert media_type == "image/png"
    assert data.startswith(b"\x89PNG")
    np.save(path, np.zeros((5,), dtype=np.uint8))
    with pytest.raises(LabelError, match="not an image"):
        image_bytes(path)
    hostile = tmp_path / f"{'ef' * 32}.npy"
    np.save(hostile, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(LabelError, match="not a readable pixel array"):
        image_bytes(hostile)
