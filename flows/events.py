"""The Prefect events onebox emits, by name: automations and deployment triggers match these."""

from __future__ import annotations

# A drift check found production inputs unlike the model's reference. Resource: onebox.model.NAME.
DRIFT_DETECTED = "onebox.drift.detected"
# A new dataset version exists (merged from a model's inbox, or imported). Resource:
# onebox.dataset.NAME.VERSION; for an inbox merge the related resource names the model to retrain.
DATASET_VERSION_CREATED = "onebox.dataset.version.created"

# What a DATASET_VERSION_CREATED event carries, so the retraining trigger can template the
# training run's parameters from it: the resource's labels name the dataset and version, and a
# related resource in the role "model" (only for a version made for retraining) names the model.
DATASET_NAME_LABEL = "onebox.dataset.name"
DATASET_VERSION_LABEL = "onebox.dataset.version"
MODEL_ROLE = "model"


def dataset_version_created(name: str, version: str, *, model: str | None = None) -> dict[str, object]:
    """The keyword arguments of ``prefect.events.emit_event`` announcing a new dataset version.

    ``model``: the model to retrain on it (an inbox merge); None for a plain import, which
    starts no training.
    """
    related = []
    if model is not None:
        related.append(
            {
                "prefect.resource.id": f"onebox.model.{model}",
                "prefect.resource.role": MODEL_ROLE,
                "prefect.resource.name": model,
            }
        )
    return {
        "event": DATASET_VERSION_CREATED,
        "resource": {
            "prefect.resource.id": f"onebox.dataset.{name}.{version}",
            "prefect.resource.name": f"{name}:{version}",
            DATASET_NAME_LABEL: name,
            DATASET_VERSION_LABEL: version,
        },
        "related": related,
    }
