"""One model's drift check as plain functions: its window, its reference, the comparison, the inbox.

The ``drift-check`` flow (flows/drift_flow.py) runs these as tasks; tests call them directly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flows.drift import compare
from flows.drift_window import (
    DriftConfig,
    DriftResult,
    not_checked,
    served_version,
    summarize,
    too_few,
    window_records,
)
from flows.reference import Reference
from serving.metadata import REFERENCE_FILE, ModelMetadata
from storage.inbox import add_to_inbox
from storage.prediction_log import PredictionRecord, model_log_dir
from storage.registry import materialize_bundle
from storage.settings import Settings


@dataclass(frozen=True)
class DriftCheck:
    """A check's result and the records it compared (the inbox is filled from them)."""

    result: DriftResult
    records: list[PredictionRecord] = field(default_factory=list)
    reference: Reference | None = None

    def window_probabilities(self) -> np.ndarray | None:
        """The compared records' probabilities (N, K); None when nothing was compared."""
        if not self.result.tests or self.reference is None:
            return None
        classes = self.reference.probabilities.shape[1]
        return np.array([r.probabilities for r in self.records if len(r.probabilities) == classes], np.float32)


def check_window(
    name: str,
    version: str,
    records: list[PredictionRecord],
    reference: Reference | None,
    classes: tuple[str, ...],
    config: DriftConfig,
) -> DriftResult:
    """Compare the records with the reference; null when there are too few or no reference."""
    # Records that do not fit the model (another class count, a broken embedding) are not compared.
    fitting = [record for record in records if len(record.probabilities) == len(classes)]
    if (short := too_few(name, version, config, len(fitting))) is not None:
        return short
    if reference is None:
        reason = (
            f"no drift reference: {name} v{version} was trained before onebox saved one with each version; "
            "train a new version to check drift"
        )
        return not_checked(name, version, config, reason, window=len(fitting), reference=0)
    probabilities = np.array([record.probabilities for record in fitting], dtype=np.float32)
    embeddings = None
    sizes = {len(record.embedding) if record.embedding is not None else 0 for record in fitting}
    if reference.embeddings is not None and sizes == {reference.embeddings.shape[1]}:
        embeddings = np.array([record.embedding for record in fitting], dtype=np.float32)
    tests = compare(
        reference.probabilities,
        probabilities,
        classes=classes,
        false_alarm_rate=config.false_alarm_rate,
        permutations=config.permutations,
        reference_embeddings=reference.embeddings if embeddings is not None else None,
        window_embeddings=embeddings,
    )
    return DriftResult(
        model=name,
        version=version,
        drift=any(test.drifted for test in tests),
        reason=summarize(tests, window=len(fitting))
        + ("" if embeddings is not None else "; probabilities alone (no embedding)"),
        window=len(fitting),
        minimum=config.minimum,
        reference_size=len(reference),
        false_alarm_rate=config.false_alarm_rate,
        uses_embedding=embeddings is not None,
        tests=tests,
    )


def load_bundle_reference(bundle: Path) -> Reference | None:
    """The bundle's drift reference; None for a bundle made before references were saved.

    Raises:
        ModelError: the file is there but unreadable.
    """
    path = bundle / REFERENCE_FILE
    return Reference.load(path) if path.is_file() else None


def check_model(settings: Settings, name: str, config: DriftConfig | None = None) -> DriftCheck:
    """The drift check of model ``name``'s served version.

    Raises:
        ModelError: the model has no production version, or its reference is unreadable.
    """
    config = config or DriftConfig.from_settings(settings)
    version = served_version(settings, name)
    records = window_records(settings, name, version, config)
    if (short := too_few(name, version, config, len(records))) is not None:
        return DriftCheck(short, records)  # no bundle needed to say so
    bundle = materialize_bundle(settings, name, version)
    metadata = ModelMetadata.read(bundle / "metadata.json")
    reference = load_bundle_reference(bundle)
    return DriftCheck(check_window(name, version, records, reference, metadata.classes, config), records, reference)


def fill_inbox(settings: Settings, check: DriftCheck, *, low_confidence: float, limit: int) -> dict[str, int]:
    """Copy kept images of the window into the model's inbox: low-confidence ones, and on drift a
    sample of the drifted window; at most ``limit`` new ones. Returns how many were added, by reason.

    Half the room goes to each kind when both have candidates; an image already there is not
    counted again. Records whose image was not kept (or has been removed since) are passed over.
    """
    result = check.result
    folder = model_log_dir(settings.predictions_dir, result.model)
    kept = [record for record in check.records if record.image and (folder / record.image).is_file()]
    unsure = sorted((r for r in kept if r.confidence < low_confidence), key=lambda record: record.confidence)
    drifted: list[PredictionRecord] = []
    if result.drift:
        others = [record for record in kept if record.confidence >= low_confidence]
        drifted = random.Random(result.window).sample(others, len(others))
    added = {"low-confidence": 0, "drift": 0}
    share = limit if not drifted else limit - limit // 2
    queue = [("low-confidence", record) for record in unsure[:share]] + [("drift", record) for record in drifted]
    queue += [("low-confidence", record) for record in unsure[share:]]  # room the drift sample left
    for reason, record in queue:
        if sum(added.values()) >= limit:
            break
        image = folder / (record.image or "")
        new = add_to_inbox(
            settings.inbox_dir,
            result.model,
            image=image,
            sha256=record.sha256,
            guess=record.label,
            confidence=record.confidence,
            model_version=record.version,
            reason="drift" if reason == "drift" else "low-confidence",
        )
        added[reason] += int(new)
    return added
