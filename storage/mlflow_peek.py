"""Quick reads of MLflow's store that do not import MLflow (importing it takes seconds).

``onebox status`` and ``onebox models`` need the registered models and their production
versions, and ``onebox report RUN`` must say at once when RUN does not exist: a few look-ups.
For a tracking server those are calls of MLflow's REST API; for the local SQLite store,
read-only queries of the registry's tables, which never create the database. Any other store,
or a schema this code does not know (a newer MLflow), raises :class:`NotPeekable` and the
caller asks MLflow itself; tests/storage/test_mlflow_peek.py checks that both agree on a real store.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage.errors import ModelError
from storage.settings import Settings

if TYPE_CHECKING:
    from storage.registry import RegisteredVersion

# MLflow marks a deleted version this way in its SQLite store; it no longer exists for its API.
DELETED_STAGE = "Deleted_Internal"
DEFAULT_WORKSPACE = "default"
TIMEOUT_S = 10.0


class NotPeekable(Exception):  # noqa: N818 -- a signal to ask MLflow instead, not an error
    """This store cannot be read without MLflow."""


class StoreUnreachableError(ModelError):
    """The tracking server did not answer; the message is one line naming its URI."""


def alias_version(settings: Settings, name: str, alias: str) -> RegisteredVersion | None:
    """The version ``alias`` of model ``name`` points at; None when the model or alias does not exist.

    Raises:
        NotPeekable: the store is neither SQLite nor HTTP(S), or its schema is not the one known here.
        StoreUnreachableError: a tracking server did not answer.
    """
    from storage.registry import RegisteredVersion

    uri = settings.mlflow_tracking_uri
    if uri.startswith(("http://", "https://")):
        found = _rest_get(uri, "registered-models/alias", {"name": name, "alias": alias})
        if found is None:
            return None
        version = found["model_version"]
        return RegisteredVersion(name, str(version["version"]), version.get("run_id", ""), version.get("source", ""))
    row = _sqlite_query(
        uri,
        "SELECT v.version, v.run_id, v.source FROM registered_model_aliases AS a "
        "JOIN model_versions AS v ON v.workspace = a.workspace AND v.name = a.name AND v.version = a.version "
        "WHERE a.workspace = ? AND a.name = ? AND a.alias = ? AND v.current_stage IS NOT ?",
        (DEFAULT_WORKSPACE, name, alias, DELETED_STAGE),
    )
    if row is None:
        return None
    version, run_id, source = row
    return RegisteredVersion(name, str(version), run_id or "", source or "")


@dataclass(frozen=True)
class PeekedModel:
    """A registered model as ``onebox models`` lists it: its aliases, tags, and its production version's tags."""

    name: str
    aliases: dict[str, str]  # alias -> version
    tags: dict[str, str]
    production_tags: dict[str, str] = field(default_factory=dict)


def registered_models(settings: Settings, *, production_alias: str = "production") -> list[PeekedModel]:
    """Every registered model, by name, with its aliases and tags, and the tags of the version
    ``production_alias`` names (dataset, test accuracy); an empty list before the first model.

    Raises:
        NotPeekable: the store is neither SQLite nor HTTP(S), or its schema is not the one known here.
        StoreUnreachableError: a tracking server did not answer.
    """
    uri = settings.mlflow_tracking_uri
    if uri.startswith(("http://", "https://")):
        return _rest_models(uri, production_alias)
    names = [row[0] for row in _sqlite_rows(uri, "SELECT name FROM registered_models WHERE workspace = ?", ())]
    models = []
    for name in sorted(names):
        aliases = _sqlite_rows(
            uri,
            "SELECT a.alias, a.version FROM registered_model_aliases AS a JOIN model_versions AS v "
            "ON v.workspace = a.workspace AND v.name = a.name AND v.version = a.version "
            "WHERE a.workspace = ? AND a.name = ? AND v.current_stage IS NOT ?",
            (name, DELETED_STAGE),
        )
        tags = _sqlite_rows(
            uri, 'SELECT "key", value FROM registered_model_tags WHERE workspace = ? AND name = ?', (name,)
        )
        by_alias = {alias: str(version) for alias, version in aliases}
        production_tags: list[tuple[Any, ...]] = []
        if production_alias in by_alias:
            production_tags = _sqlite_rows(
                uri,
                'SELECT "key", value FROM model_version_tags WHERE workspace = ? AND name = ? AND version = ?',
                (name, by_alias[production_alias]),
            )
        models.append(PeekedModel(name, by_alias, dict(tags), dict(production_tags)))
    return models


def _rest_models(uri: str, production_alias: str) -> list[PeekedModel]:
    found = _rest_get(uri, "registered-models/search", {"max_results": "1000"}) or {}
    models = []
    for model in found.get("registered_models", []):
        aliases = {entry["alias"]: str(entry["version"]) for entry in model.get("aliases", [])}
        tags = {entry["key"]: entry.get("value", "") for entry in model.get("tags", [])}
        production_tags: dict[str, str] = {}
        if production_alias in aliases:
            asked = {"name": model["name"], "version": aliases[production_alias]}
            version = _rest_get(uri, "model-versions/get", asked)
            entries = (version or {}).get("model_version", {}).get("tags", [])
            production_tags = {entry["key"]: entry.get("value", "") for entry in entries}
        models.append(PeekedModel(model["name"], aliases, tags, production_tags))
    return sorted(models, key=lambda model: model.name)


def run_exists(settings: Settings, run_id: str) -> bool:
    """Whether the tracking store has the run ``run_id`` (deleted runs count, as for MLflow's get_run).

    Raises:
        NotPeekable: the store is neither SQLite nor HTTP(S), or its schema is not the one known here.
        StoreUnreachableError: a tracking server did not answer.
    """
    uri = settings.mlflow_tracking_uri
    if uri.startswith(("http://", "https://")):
        return _rest_get(uri, "runs/get", {"run_id": run_id}) is not None
    return _sqlite_query(uri, "SELECT 1 FROM runs WHERE run_uuid = ?", (run_id,)) is not None


def _sqlite_path(uri: str) -> Path:
    if not uri.startswith("sqlite:///"):
        raise NotPeekable(uri)
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    if not path or path == ":memory:":
        raise NotPeekable(uri)
    return Path(path)


def _sqlite_query(uri: str, query: str, parameters: tuple[str, ...]) -> tuple[Any, ...] | None:
    """The first row ``query`` finds; None also when there is no database yet (nothing is created)."""
    path = _sqlite_path(uri)
    if not path.is_file():
        return None
    try:
        # mode=ro: never creates, migrates or writes the database MLflow owns.
        with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=TIMEOUT_S) as connection:
            row: tuple[Any, ...] | None = connection.execute(query, parameters).fetchone()
    except sqlite3.Error as error:  # no such table or column: a schema this code does not know
        raise NotPeekable(f"{uri}: {error}") from error
    return row


def _sqlite_rows(uri: str, query: str, parameters: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """Every row ``query`` finds in the default workspace (its first parameter); none without a database."""
    path = _sqlite_path(uri)
    if not path.is_file():
        return []
    try:
        with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=TIMEOUT_S) as connection:
            return connection.execute(query, (DEFAULT_WORKSPACE, *parameters)).fetchall()
    except sqlite3.Error as error:
        raise NotPeekable(f"{uri}: {error}") from error


def _rest_get(uri: str, endpoint: str, parameters: dict[str, str]) -> dict[str, Any] | None:
    """GET MLflow's REST endpoint; None when it answers that the resource does not exist."""
    import httpx

    headers, auth = {}, None
    if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
        headers["Authorization"] = f"Bearer {token}"
    elif (user := os.environ.get("MLFLOW_TRACKING_USERNAME")) is not None:
        auth = httpx.BasicAuth(user, os.environ.get("MLFLOW_TRACKING_PASSWORD", ""))
    try:
        answer = httpx.get(
            f"{uri.rstrip('/')}/api/2.0/mlflow/{endpoint}",
            params=parameters,
            headers=headers,
            auth=auth,
            timeout=TIMEOUT_S,
        )
    except httpx.HTTPError as error:
        raise StoreUnreachableError(f"MLflow ({uri}): {error or type(error).__name__}") from error
    if answer.status_code in (400, 404):  # RESOURCE_DOES_NOT_EXIST (no model, alias or run), INVALID_PARAMETER_VALUE
        return None
    if answer.status_code != 200:
        raise StoreUnreachableError(f"MLflow ({uri}): {endpoint} answered {answer.status_code}: {answer.text[:200]}")
    body: dict[str, Any] = answer.json()
    return body


def require_runs(settings: Settings, run_ids: list[str | None]) -> None:
    """Fail at once for a run id the store does not have (None: no id given, nothing to check).

    Raises:
        ModelError: a run does not exist (the message :func:`flows.report.read_run` gives).
    """
    for run_id in run_ids:
        if run_id is None:
            continue
        try:
            exists = run_exists(settings, run_id)
        except NotPeekable:
            return  # MLflow itself says so, a few seconds later
        if not exists:
            raise ModelError(f"run {run_id!r} does not exist in {settings.mlflow_tracking_uri}")
