"""Telling Prefect that a merged dataset version exists, so its deployment trigger starts a retrain.

Posted to the Prefect server's REST API (``POST {api}/events``, a JSON list of events) with
httpx, not through the ``prefect`` package: the appliance's labeling service does not have it,
and one HTTP request cannot lose the event the way a half-open events websocket can
(STACK-NOTES.md). Without a server that answers, the version stays created and the caller says
that the retrain was not started, and why; the scheduled reconcile starts it later.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from flows.events import DATASET_VERSION_CREATED
from storage.inbox_merge import MergeResult
from storage.settings import Settings

TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Announcement:
    """What became of the event: sent, or not and why, in a sentence for the page and the CLI."""

    sent: bool
    message: str


def events_api_url(settings: Settings) -> str:
    """The Prefect API the event goes to: the appliance's, the one PREFECT_API_URL names, or the
    local runtime's own server (flows/prefect_server.py)."""
    if settings.prefect_api_url:
        return settings.prefect_api_url
    if chosen := os.environ.get("PREFECT_API_URL"):
        return chosen
    from flows.prefect_server import LocalPrefectServer

    return LocalPrefectServer(settings).api_url


def dataset_resource_id(name: str, version: str) -> str:
    return f"onebox.dataset.{name}.{version}"


def dataset_version_event(result: MergeResult) -> dict[str, Any]:
    """The ``onebox.dataset.version.created`` event of a merge, as Prefect's events API takes it."""
    version = result.version
    lineage = version.lineage or {}
    return {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": DATASET_VERSION_CREATED,
        "resource": {
            "prefect.resource.id": dataset_resource_id(version.name, version.version),
            "prefect.resource.name": f"{version.name}:{version.version}",
        },
        "related": [{"prefect.resource.id": f"onebox.model.{result.model}", "prefect.resource.role": "model"}],
        "payload": {
            "dataset": version.name,
            "version": version.version,
            "model": result.model,
            "parent": result.parent.version,
            "inbox_batch": result.batch,
            "images": result.merged,
            "by": lineage.get("by"),
        },
    }


def announce_new_version(settings: Settings, result: MergeResult, *, api_url: str | None = None) -> Announcement:
    """Post the event of a merge; never raises for a server that is missing or refuses it."""
    if not result.created:
        return Announcement(False, f"version {result.version.version} existed already: no retrain was started")
    url = (api_url or events_api_url(settings)).rstrip("/")
    auth = None
    if credentials := os.environ.get("PREFECT_API_AUTH_STRING"):
        user, _, password = credentials.partition(":")
        auth = httpx.BasicAuth(user, password)
    not_started = "the retrain was not started"
    try:
        answer = httpx.post(f"{url}/events", json=[dataset_version_event(result)], auth=auth, timeout=TIMEOUT_S)
    except httpx.HTTPError as error:
        reason = str(error) or type(error).__name__
        return Announcement(False, f"{not_started}: no Prefect server answered at {url} ({reason})")
    if answer.status_code >= 300:
        return Announcement(False, f"{not_started}: Prefect at {url} answered {answer.status_code} {answer.text[:200]}")
    return Announcement(True, f"retraining of model {result.model} was requested (event sent to Prefect at {url})")
