"""The labeling page in headless Chromium, driven from the keyboard as a labeler uses it: take the
guess, type a class, skip, undo, then create the dataset version."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest

from storage.datasets import list_datasets
from storage.labels import LabelStore
from tests.inbox_fixtures import LabelingHome, labeling_server
from tests.serving.chromium import Page, chromium_page

SCREENSHOT = Path(__file__).parents[2] / "docs" / "labeling-page.png"
KEY_CODES = {"Enter": 13, " ": 32, "Backspace": 8}


def press(page: Page, key: str) -> None:
    """One key press as the keyboard sends it (keyDown with its text, then keyUp)."""
    code = KEY_CODES[key] if key in KEY_CODES else ord(key.upper())
    text = {"Enter": "\r", "Backspace": ""}.get(key, key)
    page.send("Input.dispatchKeyEvent", type="keyDown", key=key, text=text, windowsVirtualKeyCode=code)
    page.send("Input.dispatchKeyEvent", type="keyUp", key=key, windowsVirtualKeyCode=code)


def shown(page: Page) -> str:
    """The sha256 of the image on screen, once it has loaded."""
    page.wait_until("document.getElementById('image').complete && document.getElementById('image').naturalWidth > 0",
                    what="the image to show")  # fmt: skip
    return str(page.evaluate("document.getElementById('image').src.split('/').pop().split('.')[0]"))


def progress(page: Page, text: str) -> None:
    page.wait_until(f"document.getElementById('progress-text').textContent === {text!r}", what=f"progress {text!r}")


@pytest.mark.slow
def test_label_with_the_keyboard_undo_skip_and_create_the_version(labeling_home: LabelingHome) -> None:
    home = labeling_home
    truth = {image.sha256: image for image in home.inbox}
    store = LabelStore(home.settings.inbox_dir, "digits")
    with labeling_server(home.settings) as url, chromium_page() as page:
        page.open(f"{url}/label/digits/")
        progress(page, "0 of 12 labeled")
        # Keys for other class names: a one-key name keeps its key, the rest take the free ones in order.
        assert page.evaluate("assignKeys(['cat', 'dog', 'b', '1'])") == ["2", "3", "b", "1"]
        assert page.evaluate("assignKeys([...Array(40).keys()].map(i => 'class' + i)).slice(34)") == [
            "y", "z", None, None, None, None,
        ]  # fmt: skip
        first = shown(page)
        # The model's guess is preselected: Enter takes it.
        highlighted = page.evaluate("document.querySelector('#classes button.highlight').dataset.class")
        assert highlighted == truth[first].guess
        press(page, "Enter")
        progress(page, "1 of 12 labeled")
        assert store.labels()[first].label == truth[first].guess

        second = shown(page)
        assert second != first
        press(page, truth[second].truth)  # a class's own key (digit d is the key d)
        progress(page, "2 of 12 labeled")
        assert store.labels()[second].label == truth[second].truth
        third = shown(page)
        press(page, " ")  # skip
        progress(page, "2 of 12 labeled, 1 skipped")
        press(page, "Backspace")  # undo the skip: the same image again
        progress(page, "2 of 12 labeled")
        assert shown(page) == third
        press(page, "Backspace")  # undo the second label
        progress(page, "1 of 12 labeled")
        assert shown(page) == second
        assert second not in store.labels()

        for done in range(1, 6):  # five more images by their true digit, one key each
            sha = shown(page)
            press(page, truth[sha].truth)
            progress(page, f"{done + 1} of 12 labeled")
            assert store.labels()[sha].label == truth[sha].truth
        press(page, " ")
        progress(page, "6 of 12 labeled, 1 skipped")
        page.evaluate("(() => { const by = document.getElementById('by'); by.value = 'dora';"
                      " by.dispatchEvent(new Event('change')); })()")  # fmt: skip
        page.screenshot(SCREENSHOT)

        page.evaluate("document.getElementById('merge').click()")
        result = page.wait_until(
            "document.getElementById('merge-result').textContent.startsWith('Created dataset') &&"
            " document.getElementById('merge-result').textContent",
            what="the new dataset version",
            timeout_s=120,
        )
        assert "(6 from the inbox, 6 left there)" in result
        assert "the retrain was not started: no Prefect server answered" in result
        progress(page, "0 of 6 labeled, 1 skipped")
        origins = {urlparse(request_url).netloc for _, request_url in page.requests()}
        assert origins == {urlparse(url).netloc}  # nothing fetched from anywhere else

    (made,) = [v for v in list_datasets(home.settings) if v.lineage]
    assert made.num_images == home.parent.num_images + 6
    assert (made.lineage or {})["by"] == "dora"
    assert SCREENSHOT.stat().st_size > 10_000
