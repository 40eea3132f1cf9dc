"""The promotion gate and what moves a model's production: deploy, rollback, serve, retire.

Every model is named, and the gate compares a challenger only with its own model's production.
A model is bound to its first version's classes and input shape: a challenger that differs is
refused whatever ``min_improvement`` says (a new task is a new model name with its own endpoint).
Otherwise it goes to production if there is none yet, or if it beats production on the same test
split by at least ``min_improvement`` (accuracy). The ``production`` alias moves last, after the
new model has answered a prediction through the running server.

Each model's deploys, rollbacks, serves and retirements hold its lock (:func:`model_lock`) from the
first look at its aliases to the old version's removal, across processes: two at once run one
after the other (the second says whom it waits for), so what serves, ``production`` and the
runtime's record of the colors never disagree.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flows.evaluate import Evaluation, evaluate_probabilities
from flows.prepare import PreparedData
from serving.metadata import METADATA_FILE, ModelMetadata
from serving.runtime import Runtime, runtime_for
from storage.errors import ModelError, ServingError
from storage.locks import exclusive_lock
from storage.model_binding import model_binding
from storage.registry import (
    PREVIOUS,
    PRODUCTION,
    RETIRED_TAG,
    get_version,
    materialize_bundle,
    move_production_alias,
    registered_models,
    set_retired,
    version_by_alias,
)
from storage.settings import Settings

if TYPE_CHECKING:
    from serving.runtime import ServerState

REFUSED = "refused: "


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    challenger_version: str
    challenger_accuracy: float
    production_version: str | None = None
    production_accuracy: float | None = None
    production_evaluation: Evaluation | None = None
    refused: bool = False  # other classes or input shape than the model's first version


def binding_refusal(
    settings: Settings,
    name: str,
    challenger_version: str,
    *,
    classes: tuple[str, ...],
    image_shape: tuple[int, ...],
    dataset: str,
) -> str:
    """Why model ``name`` cannot take a challenger of ``classes`` and ``image_shape`` ("" when it can).

    The model's first version binds it; the challenger, registered already, is that version when
    the model is new. ``dataset`` ("NAME:VERSION") names what the challenger was trained on.
    """
    binding = model_binding(settings, name)
    if binding is None or binding.version == challenger_version:
        return ""
    if binding.classes == classes and binding.image_shape == image_shape:
        return ""
    return (
        f"{REFUSED}model {name} is bound by its first version v{binding.version} to {binding.describe()}; "
        f"{dataset} has {len(classes)} classes ({', '.join(classes)}) and input shape "
        f"{'x'.join(map(str, image_shape))}: train it under a new model name (--model NEWNAME)"
    )


def evaluate_production(settings: Settings, name: str, data: PreparedData) -> tuple[str, Evaluation | None, str]:
    """Score model ``name``'s production version on this run's test split.

    Returns:
        (version, evaluation, note): evaluation is None when production's classes or input
        shape differ from this dataset's (a home from before named models), so the two cannot be compared.
    """
    from serving.predictor import OnnxPredictor

    production = version_by_alias(settings, name, PRODUCTION)
    if production is None:
        return "", None, f"model {name} has no production version yet"
    predictor = OnnxPredictor.from_directory(materialize_bundle(settings, name, production.version))
    meta = predictor.metadata
    if meta.classes != data.classes or meta.image_shape != data.dataset.image_shape:
        note = (
            f"production v{production.version} was trained on other classes or image shape "
            f"({meta.dataset_name}:{meta.dataset_version}) and cannot be scored on this test split"
        )
        return production.version, None, note
    evaluation = evaluate_probabilities(data.test.predict(predictor.probabilities), data.test.labels, data.classes)
    return production.version, evaluation, ""


def decide_promotion(
    *,
    challenger_version: str,
    challenger: Evaluation,
    production_version: str,
    production: Evaluation | None,
    note: str,
    min_improvement: float,
    refusal: str = "",
) -> GateDecision:
    """The gate: ``refusal`` (from :func:`binding_refusal`) wins over every comparison."""
    accuracy = challenger.accuracy
    if refusal:
        return GateDecision(False, refusal, challenger_version, accuracy, production_version or None, refused=True)
    if not production_version:
        return GateDecision(True, f"promoted: {note}; accuracy {accuracy:.4f}", challenger_version, accuracy)
    if production is None:
        return GateDecision(True, f"promoted: {note}", challenger_version, accuracy, production_version)
    gain = accuracy - production.accuracy
    compared = (
        f"challenger v{challenger_version} accuracy {accuracy:.4f} vs production v{production_version} "
        f"{production.accuracy:.4f} on the same test split (gain {gain:+.4f}, needed {min_improvement:+.4f})"
    )
    promote = gain >= min_improvement
    return GateDecision(
        promote=promote,
        reason=("promoted: " if promote else "kept production: ") + compared,
        challenger_version=challenger_version,
        challenger_accuracy=accuracy,
        production_version=production_version,
        production_accuracy=production.accuracy,
        production_evaluation=production,
    )


@contextmanager
def model_lock(settings: Settings, name: str) -> Iterator[None]:
    """Held while what serves model ``name`` or its aliases change; another process waits, saying for whom.

    The file lives in the onebox home, which the host and the worker container share.
    """
    with exclusive_lock(settings.home / "locks" / f"model-{name}.lock", waiting=f"model {name}"):
        yield


class ProductionMovedError(ModelError):
    """Production changed between the gate's comparison and the deploy: the decision is stale."""


def deploy_and_promote(
    settings: Settings, name: str, version: str, *, runtime: Runtime | None = None, compared_with: str | None = None
) -> str:
    """Serve ``version`` of model ``name``, check it answers, then point its ``production`` at it.

    Returns the model's URL. The replaced version is retired only after the alias moved:
    production always names a version that is serving. Other models are not touched.

    ``compared_with``: the production version the gate compared ``version`` with ("" for none);
    when production is another one by the time the model's lock is held (a rollback, or another
    run promoted meanwhile), nothing is deployed.

    Raises:
        ServingError: the new version did not become ready; the alias has not moved.
        ProductionMovedError: production is no longer ``compared_with``.
    """
    with model_lock(settings, name):
        if compared_with is not None:
            current = version_by_alias(settings, name, PRODUCTION)
            now = current.version if current else ""
            if now != compared_with:
                was = f"v{compared_with}" if compared_with else "no production version"
                is_now = f"v{now}" if now else "none"
                raise ProductionMovedError(
                    f"model {name}'s production is {is_now} now, not {was} as when v{version} was compared; "
                    f"v{version} stays registered, not deployed: compare it again with onebox train, or serve it "
                    f"with onebox rollback --model {name} --to {version}"
                )
        return _deploy_and_promote(settings, name, version, runtime or runtime_for(settings))


def _deploy_and_promote(settings: Settings, name: str, version: str, runtime: Runtime) -> str:
    state = runtime.deploy(materialize_bundle(settings, name, version))
    move_production_alias(settings, name, version)
    set_retired(settings, name, retired=False)  # serving again
    runtime.retire_previous(name)
    return state.url


def _check_bound(settings: Settings, name: str, version: str) -> None:
    """Refuse to serve a version of other classes or shape than the model's first (a legacy home's)."""
    binding = model_binding(settings, name)
    metadata = ModelMetadata.read(materialize_bundle(settings, name, version) / METADATA_FILE)
    if binding is not None and (metadata.classes, metadata.image_shape) != (binding.classes, binding.image_shape):
        raise ModelError(
            f"model {name} v{version} answers other classes or takes another input shape than v{binding.version}: "
            f"it cannot serve as {name}; pick another version (onebox models)"
        )


def rollback(
    settings: Settings, name: str, *, to: str | None = None, runtime: Runtime | None = None
) -> tuple[str, str]:
    """Serve an earlier version of model ``name`` again, then move its ``production`` to it.

    Args:
        to: any registered version; default: the ``previous`` alias.

    Returns:
        (version, url) now serving. ``previous`` then names the version rolled back from.

    Raises:
        ModelError: no previous version, ``to`` is not registered or is production already.
    """
    with model_lock(settings, name):
        return _rollback(settings, name, to, runtime or runtime_for(settings))


def _rollback(settings: Settings, name: str, to: str | None, runtime: Runtime) -> tuple[str, str]:
    if to is None:
        previous = version_by_alias(settings, name, PREVIOUS)
        if previous is None:
            raise ModelError(
                f"model {name} has no previous production version to roll back to; name one with --to VERSION"
            )
        to = previous.version
    get_version(settings, name, to)  # a clear error for a version that does not exist
    production = version_by_alias(settings, name, PRODUCTION)
    if production is not None and production.version == to:
        raise ModelError(f"model {name} v{to} is production already")
    _check_bound(settings, name, to)
    return to, _deploy_and_promote(settings, name, to, runtime)


def serve_model(settings: Settings, name: str, *, restart: bool = False, runtime: Runtime | None = None) -> ServerState:
    """Serve model ``name`` at its production version unless it serves it already (or ``restart``).

    Brings a retired model back. A deploy of the same version restarts it. The alias does not move.

    Raises:
        ModelError: the model has no production version.
        ServingError: the model did not become ready (what served before still serves).
    """
    with model_lock(settings, name):
        return _serve_model(settings, name, restart, runtime or runtime_for(settings))


def _serve_model(settings: Settings, name: str, restart: bool, runtime: Runtime) -> ServerState:
    production = version_by_alias(settings, name, PRODUCTION)
    if production is None:
        raise ModelError(f"model {name} has no production version yet; train one with: onebox train --model {name}")
    current = runtime.current(name)
    set_retired(settings, name, retired=False)
    if not restart and current is not None and current.model_version == production.version:
        return current
    state = runtime.deploy(materialize_bundle(settings, name, production.version))
    runtime.retire_previous(name)
    return state


def ensure_production_served(
    settings: Settings, *, restart: bool = False, runtime: Runtime | None = None
) -> list[ServerState]:
    """Serve every model that has a production version and is not retired (``onebox up``, ``serve``).

    Returns what serves them, by name. A model whose server does not become ready raises after the
    others were tried.

    Raises:
        ServingError: a model did not become ready (what served it before still serves).
    """
    runtime = runtime or runtime_for(settings)
    served, failures = [], []
    for model in registered_models(settings):
        if PRODUCTION not in model.aliases or model.tags.get(RETIRED_TAG) == "true":
            continue
        try:
            served.append(serve_model(settings, model.name, restart=restart, runtime=runtime))
        except ServingError as error:  # one model failing must not keep the others down
            failures.append(error)
    if failures:
        raise failures[0]
    return served


def retire(settings: Settings, name: str, *, runtime: Runtime | None = None) -> list[ServerState]:
    """Stop serving model ``name``; its versions and aliases stay, and ``onebox up`` leaves it retired.

    ``onebox serve --model NAME`` (:func:`serve_model`) brings it back at its production version.
    Returns what served it (empty when nothing did).
    """
    with model_lock(settings, name):
        set_retired(settings, name, retired=True)  # first: a stop cut short is finished by the next up
        return (runtime or runtime_for(settings)).stop(name)
