"""Behaviour of the trained model, through the same predictor the server uses."""

from __future__ import annotations

import numpy as np
import pytest

from flows.prepare import split_dataset
from serving.predictor import OnnxPredictor
from storage.datasets import BUILTIN_DATASET, open_images, resolve_dataset
from storage.registry import materialize_bundle
from tests.conftest import TrainedPipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def predictor(trained: TrainedPipeline) -> OnnxPredictor:
    return OnnxPredictor.from_directory(materialize_bundle(trained.settings, "digits", trained.result.model_version))


@pytest.fixture(scope="module")
def correctly_classified(trained: TrainedPipeline, predictor: OnnxPredictor):
    test = split_dataset(open_images(resolve_dataset(BUILTIN_DATASET, None, trained.settings)), seed=0).test
    keep = predictor.probabilities(test.images).argmax(1) == test.labels
    return test.images[keep], test.labels[keep]


def shift(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    moved = np.zeros_like(images)
    height, width = images.shape[-2:]
    moved[..., max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = images[
        ..., max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
    ]
    return moved


@pytest.mark.parametrize(("dy", "dx"), [(0, 1), (0, -1), (1, 0), (-1, 0)])
def test_a_digit_shifted_by_one_pixel_keeps_its_label(
    predictor: OnnxPredictor, correctly_classified, dy: int, dx: int
) -> None:
    images, labels = correctly_classified
    kept = predictor.probabilities(shift(images, dy, dx)).argmax(1) == labels
    assert kept.mean() >= 0.9


def test_a_blank_image_is_not_confidently_a_digit(predictor: OnnxPredictor) -> None:
    probabilities = predictor.probabilities(np.zeros((1, 1, 8, 8), np.uint8))[0]
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert probabilities.max() < 0.9


def test_brighter_ink_keeps_the_label(predictor: OnnxPredictor, correctly_classified) -> None:
    images, labels = correctly_classified
    brighter = np.clip(images.astype(np.int16) * 1.2, 0, 255).astype(np.uint8)
    assert (predictor.probabilities(brighter).argmax(1) == labels).mean() >= 0.95
