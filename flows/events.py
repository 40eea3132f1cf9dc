"""The Prefect events onebox emits, by name: automations and deployment triggers match these."""

from __future__ import annotations

# A drift check found production inputs unlike the model's reference. Resource: onebox.model.NAME.
DRIFT_DETECTED = "onebox.drift.detected"
# A new dataset version exists (merged from a model's inbox, or imported). Resource:
# onebox.dataset.NAME.VERSION; for an inbox merge the related resource names the model to retrain.
DATASET_VERSION_CREATED = "onebox.dataset.version.created"
