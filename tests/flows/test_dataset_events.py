"""The ``onebox.dataset.version.created`` event of a merge arrives on a real Prefect server, read back
with its events filter API; the CLI says the retrain was requested."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from flows.dataset_events import announce_new_version, dataset_resource_id
from flows.events import DATASET_VERSION_CREATED
from serving.waiting import NotYet, wait_for
from storage.inbox_merge import merge_inbox
from storage.labels import LabelStore
from tests.flows.test_cli_labeling import label_first, onebox
from tests.inbox_fixtures import LabelingHome

CLASSES = tuple(str(d) for d in range(10))


@pytest.fixture
def api_url(prefect_server: None) -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url
    return str(url)


def read_back(api_url: str, resource_id: str) -> dict[str, Any]:
    """The event of ``resource_id``, once the server has stored it (events are written asynchronously)."""

    def stored() -> dict[str, Any]:
        asked = {"filter": {"event": {"name": [DATASET_VERSION_CREATED]}, "resource": {"id": [resource_id]}}}
        events = httpx.post(f"{api_url}/events/filter", json=asked, timeout=10).json()["events"]
        if not events:
            raise NotYet(f"no {DATASET_VERSION_CREATED} event of {resource_id} yet")
        (event,) = events
        return dict(event)

    return wait_for(stored, timeout_s=60, what="the event to be stored")


@pytest.mark.slow
def test_the_event_of_a_merge_arrives_with_its_model_and_parent(labeling_home: LabelingHome, api_url: str) -> None:
    store = LabelStore(labeling_home.settings.inbox_dir, "digits")
    for image in labeling_home.inbox[:3]:
        store.set_label(image.sha256, image.truth, classes=CLASSES, by="ann")
    result = merge_inbox(labeling_home.settings, "digits", by="ann")
    announcement = announce_new_version(labeling_home.settings, result, api_url=api_url)
    assert announcement.sent, announcement.message
    assert announcement.message.startswith("retraining of model digits was requested")

    resource_id = dataset_resource_id("digits", result.version.version)
    event = read_back(api_url, resource_id)
    assert event["resource"]["prefect.resource.id"] == f"onebox.dataset.digits.{result.version.version}"
    assert event["related"] == [{"prefect.resource.id": "onebox.model.digits", "prefect.resource.role": "model"}]
    payload = event["payload"]
    assert (payload["dataset"], payload["version"], payload["model"]) == ("digits", result.version.version, "digits")
    assert payload["parent"] == labeling_home.parent.version
    assert payload["inbox_batch"] == result.batch
    assert payload["images"] == 3


@pytest.mark.slow
def test_the_cli_merge_sends_it_too(labeling_home: LabelingHome, api_url: str) -> None:
    label_first(labeling_home, 2)
    done = onebox(labeling_home, "data", "merge-inbox", "--model", "digits", prefect_api_url=api_url)
    assert done.returncode == 0, done.stderr
    assert "retraining of model digits was requested" in done.stdout
    version = done.stdout.split("version ", 1)[1].split(":", 1)[0]
    assert read_back(api_url, dataset_resource_id("digits", version))["payload"]["by"] == "carol"
