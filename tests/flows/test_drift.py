"""The drift statistics on a real trained model: clean held-out traffic against each kind of drift.

Production records are made as serving makes them: the served bundle's ``OnnxPredictor.infer`` on
held-out images (perturbed by flows.perturbations), written with ``append_records``. The
reference is the bundle's own (the test split); clean windows come from the validation split,
which the model never trained on either.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from flows.drift_check import check_model, check_window, load_bundle_reference
from flows.drift_window import DriftConfig, served_version
from flows.perturbations import DRIFT_KINDS, perturb
from flows.prepare import Split, split_dataset
from flows.reference import Reference
from serving.predictor import OnnxPredictor
from storage.datasets import open_images, resolve_dataset
from storage.prediction_log import PredictionRecord, append_records
from storage.registry import materialize_bundle
from storage.settings import Settings
from tests.conftest import TrainedPipeline

pytestmark = pytest.mark.slow  # the session's trained model

DEFAULT = DriftConfig()
CLEAN_WINDOWS = 40
CLEAN_WINDOW_SIZE = 150


def make_records(
    predictor: OnnxPredictor, images: np.ndarray, *, start: datetime | None = None
) -> list[PredictionRecord]:
    """What the served model would log for these images, one record each, a second apart."""
    probabilities, embeddings = predictor.infer(images)
    start = start or datetime(2026, 12, 1, tzinfo=UTC)
    metadata = predictor.metadata
    records = []
    for index, (row, image) in enumerate(zip(probabilities, images, strict=True)):
        best = int(row.argmax())
        records.append(
            PredictionRecord(
                time=(start + timedelta(seconds=index)).isoformat(),
                model=metadata.model_name,
                version=metadata.model_version,
                request_id=f"r{index}",
                sha256=hashlib.sha256(image.tobytes()).hexdigest(),
                label=metadata.classes[best],
                confidence=float(row[best]),
                probabilities=tuple(float(p) for p in row),
                embedding=None if embeddings is None else tuple(float(v) for v in embeddings[index]),
            )
        )
    return records


def served_bundle(trained: TrainedPipeline) -> tuple[OnnxPredictor, Reference, Split]:
    """The served bundle's predictor and reference, and the validation split of its dataset."""
    result = trained.result
    # What serves now: other tests of the session may have promoted another version.
    bundle = materialize_bundle(
        trained.settings, result.model_name, served_version(trained.settings, result.model_name)
    )
    reference = load_bundle_reference(bundle)
    assert reference is not None
    predictor = OnnxPredictor.from_directory(bundle)
    metadata = predictor.metadata
    dataset = resolve_dataset(metadata.dataset_name, metadata.dataset_version, trained.settings)
    return predictor, reference, split_dataset(open_images(dataset), seed=0).validation


@pytest.fixture(scope="module")
def served(trained: TrainedPipeline) -> tuple[OnnxPredictor, Reference, Split]:
    return served_bundle(trained)


def test_the_bundle_reference_is_what_serving_computes_on_the_test_split(
    trained: TrainedPipeline, served: tuple[OnnxPredictor, Reference, Split]
) -> None:
    predictor, reference, _ = served
    name, version = trained.result.dataset.split(":")
    test = split_dataset(open_images(resolve_dataset(name, version, trained.settings)), seed=0).test
    probabilities, embeddings = predictor.infer(test.images)
    assert len(reference) == len(test)
    np.testing.assert_array_equal(reference.labels, test.labels)
    np.testing.assert_allclose(reference.probabilities, probabilities, atol=1e-6)
    assert embeddings is not None
    assert reference.embeddings is not None
    assert reference.embeddings.shape == (len(test), 128)  # the built-in CNN's head: Linear(128, classes)
    np.testing.assert_allclose(reference.embeddings, embeddings, atol=1e-5)


def test_clean_held_out_windows_are_flagged_at_most_at_the_false_alarm_rate(
    served: tuple[OnnxPredictor, Reference, Split],
) -> None:
    predictor, reference, validation = served
    records = make_records(predictor, validation.images)
    classes = predictor.metadata.classes
    flagged = []
    for seed in range(CLEAN_WINDOWS):
        chosen = np.random.default_rng(seed).choice(len(records), CLEAN_WINDOW_SIZE, replace=False)
        window = [records[index] for index in sorted(chosen)]
        result = check_window("digits", "1", window, reference, classes, DEFAULT)
        assert result.drift is not None
        assert result.uses_embedding
        flagged.append(result.drift)
    # Also the whole validation split at once: the largest clean window there is.
    whole = check_window("digits", "1", records, reference, classes, DEFAULT)
    flagged.append(bool(whole.drift))
    assert sum(flagged) / len(flagged) <= DEFAULT.false_alarm_rate, whole.reason


@pytest.mark.parametrize("kind", [kind for kind in DRIFT_KINDS if kind != "none"])
def test_each_drift_kind_is_flagged_at_the_default_window(
    trained: TrainedPipeline, served: tuple[OnnxPredictor, Reference, Split], kind: str, tmp_path: Path
) -> None:
    predictor, _, validation = served
    settings = own_home(trained, tmp_path)
    rng = np.random.default_rng(len(kind))
    images = validation.images[rng.choice(len(validation), DEFAULT.window, replace=True)]
    records = make_records(predictor, perturb(images, kind, rng))  # type: ignore[arg-type]
    append_records(settings.predictions_dir, "test-writer", records)

    check = check_model(settings, trained.result.model_name)

    result = check.result
    assert result.window == DEFAULT.window
    assert result.drift is True, result.reason
    assert result.reason.startswith("drift in the newest 500 predictions: ")


def own_home(trained: TrainedPipeline, tmp_path: Path) -> Settings:
    """The trained model's MLflow store with a home of this test's own: its own prediction log and inbox
    (the session's served model may log predictions of other tests into the shared home)."""
    return trained.settings.model_copy(
        update={"home": tmp_path / "home", "tracking_uri": trained.settings.mlflow_tracking_uri}
    )
