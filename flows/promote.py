"""The promotion gate and the deploy that follows it.

A challenger goes to production only if there is none yet, or if it beats production on the
same test split by at least ``min_improvement`` (accuracy). The ``production`` alias moves last,
after the new model has answered a prediction through the running server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flows.evaluate import Evaluation, evaluate_probabilities
from flows.prepare import PreparedData
from serving.predictor import OnnxPredictor
from serving.runtime import Runtime, runtime_for
from storage.errors import ModelError
from storage.registry import PREVIOUS, PRODUCTION, materialize_bundle, move_production_alias, version_by_alias
from storage.settings import Settings

if TYPE_CHECKING:
    from serving.runtime import ServerState


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    challenger_version: str
    challenger_accuracy: float
    production_version: str | None = None
    production_accuracy: float | None = None
    production_evaluation: Evaluation | None = None


def evaluate_production(settings: Settings, data: PreparedData) -> tuple[str, Evaluation | None, str]:
    """Score the production model on this run's test split.

    Returns:
        (version, evaluation, note): evaluation is None when production's classes or input
        shape differ from this dataset's, so the two cannot be compared.
    """
    production = version_by_alias(settings, PRODUCTION)
    if production is None:
        return "", None, "no production model yet"
    predictor = OnnxPredictor.from_directory(materialize_bundle(settings, production.version))
    meta = predictor.metadata
    if meta.classes != data.classes or meta.image_shape != data.dataset.image_shape:
        note = (
            f"production v{production.version} was trained on other classes or image shape "
            f"({meta.dataset_name}:{meta.dataset_version}) and cannot be scored on this test split"
        )
        return production.version, None, note
    evaluation = evaluate_probabilities(predictor.probabilities(data.test.images), data.test.labels, data.classes)
    return production.version, evaluation, ""


def decide_promotion(
    *,
    challenger_version: str,
    challenger: Evaluation,
    production_version: str,
    production: Evaluation | None,
    note: str,
    min_improvement: float,
) -> GateDecision:
    accuracy = challenger.accuracy
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


def deploy_and_promote(settings: Settings, version: str, *, runtime: Runtime | None = None) -> str:
    """Serve ``version``, check it answers, then point ``production`` at it; returns the serving URL.

    The replaced model is retired only after the alias moved: production always names a model
    that is serving.

    Raises:
        ServingError: the new model did not become ready; the alias has not moved.
    """
    runtime = runtime or runtime_for(settings)
    state = runtime.deploy(materialize_bundle(settings, version))
    move_production_alias(settings, version)
    runtime.retire_previous()
    return state.url


def rollback(settings: Settings, *, runtime: Runtime | None = None) -> tuple[str, str]:
    """Serve the ``previous`` version again, then move ``production`` back to it.

    Returns:
        (version, url) now serving. ``previous`` then names the version rolled back from.

    Raises:
        ModelError: there is no previous production version.
    """
    previous = version_by_alias(settings, PREVIOUS)
    if previous is None:
        raise ModelError(f"model {settings.model_name} has no previous production version to roll back to")
    return previous.version, deploy_and_promote(settings, previous.version, runtime=runtime)


def ensure_production_served(
    settings: Settings, *, restart: bool = False, runtime: Runtime | None = None
) -> ServerState:
    """Serve the production version unless it already serves (or ``restart``); returns what serves.

    A deploy of the same version restarts it: stop-start locally, blue/green in the appliance.
    The alias does not move: it names this version already.

    Raises:
        ModelError: there is no production version yet.
        ServingError: the model did not become ready (what served before still serves).
    """
    production = version_by_alias(settings, PRODUCTION)
    if production is None:
        raise ModelError("no production model yet; train one with: onebox train")
    runtime = runtime or runtime_for(settings)
    current = runtime.current()
    if not restart and current is not None and current.model_version == production.version:
        return current
    state = runtime.deploy(materialize_bundle(settings, production.version))
    runtime.retire_previous()
    return state
