"""MLflow access: the tracking store, the model registry and its aliases, served-model bundles.

Every model is named (``onebox train --model NAME``) and every function here takes that name.
Per model, the alias ``production`` is the single source of truth for what serves; ``previous``
remembers what it pointed at before, for rollback; the tag ``onebox.retired`` marks a model taken
out of service. A model is bound to its first version's classes and input shape
(:mod:`storage.model_binding`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage.errors import ModelError
from storage.settings import Settings

if TYPE_CHECKING:
    from storage.mlflow_peek import PeekedModel

EXPERIMENT_NAME = "onebox"
PRODUCTION = "production"
PREVIOUS = "previous"
MODEL_CARD = "model_card.json"  # run artifact: classes, image shape, lineage, metrics
# Run artifact and bundle file: the drift reference (serving.metadata.REFERENCE_FILE; storage
# imports no serving). Runs from before it have none, and their bundles go without.
REFERENCE_ARTIFACT = "reference.npz"
# Models registered before models were named (one for everything); such a home keeps serving it.
LEGACY_MODEL_NAME = "onebox-classifier"
MODEL_NAME_TAG = "onebox.model_name"  # run tag: the registered model the run trains a version of
RETIRED_TAG = "onebox.retired"  # registered-model tag: "true" while retired


@dataclass(frozen=True)
class RegisteredVersion:
    model_name: str
    version: str
    run_id: str
    source: str


def configure_mlflow(settings: Settings, experiment_name: str = EXPERIMENT_NAME) -> str:
    """Point MLflow at onebox's store and return the experiment's id (created on first use): the
    training runs' by default, or another of onebox's (the drift checks' monitoring experiment)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    settings.home.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    experiment = mlflow.get_experiment_by_name(experiment_name)
    if experiment is not None:
        return str(experiment.experiment_id)
    try:
        # A local store keeps artifacts beside its database; a tracking server chooses (and serves) its own.
        local = not settings.mlflow_tracking_uri.startswith(("http://", "https://"))
        artifact_location = settings.mlflow_artifacts_dir.as_uri() if local else None
        return str(mlflow.create_experiment(experiment_name, artifact_location=artifact_location))
    except mlflow.exceptions.MlflowException:
        # Another process created it between our look-up and create.
        experiment = mlflow.get_experiment_by_name(experiment_name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def mlflow_client(settings: Settings):  # type: ignore[no-untyped-def]  # MlflowClient: imported lazily
    """An MLflow client of onebox's store (tracking and registry), the experiment made on first use."""
    from mlflow import MlflowClient

    configure_mlflow(settings)
    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def _found(name: str, found: Any) -> RegisteredVersion:
    return RegisteredVersion(name, str(found.version), found.run_id or "", found.source or "")


def version_by_alias(settings: Settings, name: str, alias: str) -> RegisteredVersion | None:
    """The version of model ``name`` an alias points at; None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client(settings)
    try:
        found = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    return _found(name, found)


def peek_alias(settings: Settings, name: str, alias: str) -> RegisteredVersion | None:
    """:func:`version_by_alias` without importing MLflow where the store allows it (SQLite, HTTP).

    Seconds faster, and it creates nothing: on a fresh home there is no database yet, and
    ``onebox status`` must not make one.

    Raises:
        ModelError: a tracking server did not answer.
    """
    from storage import mlflow_peek

    try:
        return mlflow_peek.alias_version(settings, name, alias)
    except mlflow_peek.NotPeekable:
        return version_by_alias(settings, name, alias)


def get_version(settings: Settings, name: str, version: str) -> RegisteredVersion:
    """Raises: ModelError when the version is not registered."""
    from mlflow.exceptions import MlflowException

    try:
        found = mlflow_client(settings).get_model_version(name, version)
    except MlflowException as error:
        raise ModelError(f"model {name} has no version {version!r}; see its versions in: onebox models") from error
    return _found(name, found)


def list_versions(settings: Settings, name: str) -> list[RegisteredVersion]:
    """Every registered version of model ``name``, oldest first (empty for an unknown model)."""
    found = mlflow_client(settings).search_model_versions(f"name = '{name}'")
    return sorted((_found(name, version) for version in found), key=lambda v: int(v.version))


def count_versions(settings: Settings, name: str) -> int:
    """How many versions of model ``name`` are registered (0 before the first)."""
    return len(list_versions(settings, name))


def move_production_alias(settings: Settings, name: str, version: str) -> None:
    """Point ``production`` of model ``name`` at ``version``; ``previous`` keeps what it pointed at before."""
    client = mlflow_client(settings)
    current = version_by_alias(settings, name, PRODUCTION)
    if current is not None and current.version != version:
        client.set_registered_model_alias(name, PREVIOUS, current.version)
    client.set_registered_model_alias(name, PRODUCTION, version)


def set_retired(settings: Settings, name: str, *, retired: bool) -> None:
    """Mark model ``name`` retired (not served, not brought back by ``onebox up``) or not.

    Kept in the registry, beside the aliases, so every runtime and every home reads the same.
    """
    client = mlflow_client(settings)
    if retired:
        client.set_registered_model_tag(name, RETIRED_TAG, "true")
    elif RETIRED_TAG in client.get_registered_model(name).tags:
        client.delete_registered_model_tag(name, RETIRED_TAG)


def bundle_dir(settings: Settings, name: str, version: str) -> Path:
    return settings.models_dir / name / version


def materialize_bundle(settings: Settings, name: str, version: str) -> Path:
    """The served-model folder of a registered version (model.onnx + metadata.json, and the drift
    reference when its run saved one).

    Built from the registry the first time, so any registered version can be served again
    on a machine that only has the MLflow store.
    """
    target = bundle_dir(settings, name, version)
    if (target / "metadata.json").is_file():
        return target
    import mlflow

    registered = get_version(settings, name, version)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".bundle-") as staging_name:
        staging = Path(staging_name)
        model_dir = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(staging / "m"))
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
        metadata = {**card, "model_name": name, "model_version": version, "run_id": registered.run_id}
        (final / "metadata.json").write_text(json.dumps(metadata, indent=2))
        if any(item.path == REFERENCE_ARTIFACT for item in mlflow_client(settings).list_artifacts(registered.run_id)):
            reference = mlflow.artifacts.download_artifacts(
                run_id=registered.run_id, artifact_path=REFERENCE_ARTIFACT, dst_path=str(staging / "reference")
            )
            shutil.copyfile(reference, final / REFERENCE_ARTIFACT)
        if target.exists():
            shutil.rmtree(target)
        final.rename(target)
    return target


def registered_models(settings: Settings) -> list[PeekedModel]:
    """Every registered model with its aliases, tags and production version's tags, by name.

    Read without importing MLflow where the store allows it (``onebox models`` stays quick).
    """
    from storage import mlflow_peek

    try:
        return mlflow_peek.registered_models(settings, production_alias=PRODUCTION)
    except mlflow_peek.NotPeekable:
        pass
    client = mlflow_client(settings)
    models = []
    for model in client.search_registered_models():
        aliases = {alias: str(version) for alias, version in (model.aliases or {}).items()}
        production_tags = {}
        if PRODUCTION in aliases:
            production_tags = dict(client.get_model_version(model.name, aliases[PRODUCTION]).tags)
        models.append(mlflow_peek.PeekedModel(model.name, aliases, dict(model.tags or {}), production_tags))
    return sorted(models, key=lambda model: model.name)


def unknown_model_error(name: str, known: list[str]) -> ModelError:
    """The one-line error for a model name nothing is registered under, listing the known ones."""
    listed = ", ".join(known) if known else "none yet (train one: onebox train --model NAME)"
    return ModelError(f"unknown model {name!r}; known models: {listed}")


def resolve_model(settings: Settings, name: str | None) -> str:
    """The registered model ``name``, or when None the only one there is.

    Raises:
        ModelError: ``name`` is not registered, or it is None and there are several models (or none).
    """
    known = [model.name for model in registered_models(settings)]
    if name is None:
        if len(known) == 1:
            return known[0]
        if not known:
            raise ModelError("no model is registered yet; train one with: onebox train --model NAME")
        raise ModelError(f"there are {len(known)} models ({', '.join(known)}): say which one with --model NAME")
    if name not in known:
        raise unknown_model_error(name, known)
    return name
