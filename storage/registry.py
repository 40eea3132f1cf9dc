"""MLflow access: the tracking store, the model registry and its aliases, served-model bundles.

The alias ``production`` is the single source of truth for what serves; ``previous`` remembers
what it pointed at before, for rollback.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from storage.errors import ModelError
from storage.settings import Settings

EXPERIMENT_NAME = "onebox"
PRODUCTION = "production"
PREVIOUS = "previous"
MODEL_CARD = "model_card.json"  # run artifact: classes, image shape, lineage, metrics


@dataclass(frozen=True)
class RegisteredVersion:
    model_name: str
    version: str
    run_id: str
    source: str


def configure_mlflow(settings: Settings) -> str:
    """Point MLflow at onebox's store and return the experiment id (created on first use)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    settings.home.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is not None:
        return str(experiment.experiment_id)
    try:
        # A local store keeps artifacts beside its database; a tracking server chooses (and serves) its own.
        local = not settings.mlflow_tracking_uri.startswith(("http://", "https://"))
        artifact_location = settings.mlflow_artifacts_dir.as_uri() if local else None
        return str(mlflow.create_experiment(EXPERIMENT_NAME, artifact_location=artifact_location))
    except mlflow.exceptions.MlflowException:
        # Another process created it between our look-up and create.
        experiment = mlflow.get_experiment_by_name(EXPERIMENT_NAME)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def _client(settings: Settings):  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    configure_mlflow(settings)
    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def version_by_alias(settings: Settings, alias: str) -> RegisteredVersion | None:
    """The version an alias points at, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    client = _client(settings)
    try:
        found = client.get_model_version_by_alias(settings.model_name, alias)
    except MlflowException:
        return None
    return RegisteredVersion(settings.model_name, str(found.version), found.run_id, found.source)


def peek_alias(settings: Settings, alias: str) -> RegisteredVersion | None:
    """:func:`version_by_alias` without importing MLflow where the store allows it (SQLite, HTTP).

    Seconds faster, and it creates nothing: on a fresh home there is no database yet, and
    ``onebox status`` must not make one.

    Raises:
        ModelError: a tracking server did not answer.
    """
    from storage import mlflow_peek

    try:
        return mlflow_peek.alias_version(settings, alias)
    except mlflow_peek.NotPeekable:
        return version_by_alias(settings, alias)


def get_version(settings: Settings, version: str) -> RegisteredVersion:
    """Raises: ModelError when the version is not registered."""
    from mlflow.exceptions import MlflowException

    try:
        found = _client(settings).get_model_version(settings.model_name, version)
    except MlflowException as error:
        raise ModelError(f"model {settings.model_name} has no version {version!r}") from error
    return RegisteredVersion(settings.model_name, str(found.version), found.run_id, found.source)


def count_versions(settings: Settings) -> int:
    """How many versions of the model are registered (0 before the first)."""
    return len(_client(settings).search_model_versions(f"name = '{settings.model_name}'"))


def move_production_alias(settings: Settings, version: str) -> None:
    """Point ``production`` at ``version``; ``previous`` keeps what it pointed at before."""
    client = _client(settings)
    current = version_by_alias(settings, PRODUCTION)
    if current is not None and current.version != version:
        client.set_registered_model_alias(settings.model_name, PREVIOUS, current.version)
    client.set_registered_model_alias(settings.model_name, PRODUCTION, version)


def bundle_dir(settings: Settings, version: str) -> Path:
    return settings.models_dir / settings.model_name / version


def materialize_bundle(settings: Settings, version: str) -> Path:
    """The served-model folder of a registered version (model.onnx + metadata.json).

    Built from the registry the first time, so any registered version can be served again
    on a machine that only has the MLflow store.
    """
    target = bundle_dir(settings, version)
    if (target / "metadata.json").is_file():
        return target
    import mlflow

    registered = get_version(settings, version)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".bundle-") as staging_name:
        staging = Path(staging_name)
        model_dir = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{settings.model_name}/{version}", dst_path=str(staging / "m")
            )
        )
        onnx_files = sorted(model_dir.rglob("*.onnx"))
        if not onnx_files:
            raise ModelError(f"model version {version} has no ONNX file in the registry")
        card_path = mlflow.artifacts.download_artifacts(
            run_id=registered.run_id, artifact_path=MODEL_CARD, dst_path=str(staging / "card")
        )
        card = json.loads(Path(card_path).read_text())
        final = staging / "bundle"
        final.mkdir()
        shutil.copyfile(onnx_files[0], final / "model.onnx")
        metadata = {**card, "model_name": settings.model_name, "model_version": version, "run_id": registered.run_id}
        (final / "metadata.json").write_text(json.dumps(metadata, indent=2))
        if target.exists():
            shutil.rmtree(target)
        final.rename(target)
    return target
