"""`onebox data merge-inbox` and `onebox label` as a user runs them: one-line errors, exit codes,
nothing created by a refused merge, the page served on 127.0.0.1 at the printed URL."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from benchmarks.servers import free_port
from serving.waiting import NotYet, wait_for
from storage.datasets import list_datasets
from storage.labels import LabelStore
from tests.inbox_fixtures import LabelingHome

ONEBOX = str(Path(sys.executable).with_name("onebox"))
CLASSES = tuple(str(d) for d in range(10))


def environment(home: LabelingHome, prefect_api_url: str | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "ONEBOX_HOME": str(home.settings.home),
        "ONEBOX_TRACKING_URI": str(home.settings.tracking_uri),
        "ONEBOX_LABEL_PORT": str(home.settings.label_port),
        "ONEBOX_RUNTIME": "local",
        "PREFECT_API_URL": prefect_api_url or f"http://127.0.0.1:{free_port()}/api",  # nothing listens there
        "USER": "carol",
        "COLUMNS": "300",
    }


def onebox(home: LabelingHome, *args: str, prefect_api_url: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ONEBOX, *args],
        env=environment(home, prefect_api_url),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def label_first(home: LabelingHome, count: int) -> None:
    store = LabelStore(home.settings.inbox_dir, "digits")
    for image in home.inbox[:count]:
        store.set_label(image.sha256, image.truth, classes=CLASSES, by="carol")


def test_merge_with_nothing_labeled_is_one_line_exit_1_and_creates_nothing(labeling_home: LabelingHome) -> None:
    before = list_datasets(labeling_home.settings)
    done = onebox(labeling_home, "data", "merge-inbox", "--model", "digits")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: nothing is labeled in the inbox of model digits (12 image(s) waiting); "
        "label some first: onebox label --model digits"
    ]
    assert list_datasets(labeling_home.settings) == before


def test_merge_of_an_unknown_model_names_the_known_ones(labeling_home: LabelingHome) -> None:
    done = onebox(labeling_home, "data", "merge-inbox", "--model", "pets")
    assert done.returncode == 1
    assert "error: unknown model 'pets'; known models: digits" in done.stderr
    assert "Traceback" not in done.stderr


def test_merge_makes_the_version_and_says_the_retrain_was_not_started(labeling_home: LabelingHome) -> None:
    label_first(labeling_home, 4)
    done = onebox(labeling_home, "data", "merge-inbox")  # the only model: no --model needed
    assert done.returncode == 0, done.stderr
    parent = labeling_home.parent.version
    found = re.search(rf"dataset digits version (\w+): 34 images, {parent} plus 4 labeled", done.stdout)
    assert found, done.stdout
    assert "8 left there" in done.stdout
    assert "the retrain was not started: no Prefect server answered at http://127.0.0.1:" in done.stderr
    (made,) = [v for v in list_datasets(labeling_home.settings) if v.version == found.group(1)]
    assert (made.lineage or {})["by"] == "carol"  # $USER


def test_label_serves_the_page_on_loopback_at_the_printed_url(labeling_home: LabelingHome) -> None:
    server = subprocess.Popen(
        [ONEBOX, "label", "--model", "digits"],
        env=environment(labeling_home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/label/digits/", line)
        assert url, line

        def page() -> httpx.Response:
            try:
                return httpx.get(url.group(0), timeout=2)
            except httpx.TransportError as error:
                raise NotYet(str(error)) from None

        answer = wait_for(page, timeout_s=120, what="onebox label's page")
        assert answer.status_code == 200
        assert "labeling.js" in answer.text
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_label_refuses_an_unknown_model_and_a_taken_port(labeling_home: LabelingHome) -> None:
    done = onebox(labeling_home, "label", "--model", "pets")
    assert done.returncode == 1
    assert "unknown model 'pets'" in done.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", labeling_home.settings.label_port))
        taken.listen()
        done = onebox(labeling_home, "label")
    assert done.returncode == 1
    assert f"port {labeling_home.settings.label_port} on 127.0.0.1 is used by another program" in done.stderr
    assert "Traceback" not in done.stderr
