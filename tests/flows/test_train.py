from __future__ import annotations

import pytest
import torch

from flows.evaluate import evaluate_probabilities
from flows.model import build
from flows.prepare import split_dataset
from flows.train import predict_probabilities, resolve_device, shift_randomly, train_model
from storage.datasets import BUILTIN_DATASET, load_dataset, resolve_dataset
from storage.errors import ParameterError
from storage.settings import Settings

HAS_CUDA = torch.cuda.is_available()


def test_auto_picks_cuda_when_present() -> None:
    assert resolve_device("auto").type == ("cuda" if HAS_CUDA else "cpu")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a GPU, so asking for cuda is valid")
def test_cuda_without_gpu_is_a_clear_error() -> None:
    with pytest.raises(ParameterError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_unknown_device_is_refused() -> None:
    with pytest.raises(ParameterError, match="unknown"):
        resolve_device("tpu")


def test_shift_moves_pixels_by_at_most_one() -> None:
    images = torch.zeros(64, 1, 5, 5)
    images[:, 0, 2, 2] = 1.0
    shifted = shift_randomly(images, torch.Generator().manual_seed(0))
    positions = {tuple(torch.nonzero(img[0])[0].tolist()) for img in shifted}
    assert positions <= {(r, c) for r in (1, 2, 3) for c in (1, 2, 3)}
    assert len(positions) > 3


@pytest.mark.slow  # trains for four epochs
@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no GPU"))]
)
def test_training_learns_digits(settings: Settings, device: str) -> None:
    data = split_dataset(load_dataset(resolve_dataset(BUILTIN_DATASET, None, settings)), seed=0)
    model = build(num_classes=len(data.classes), input_shape=data.dataset.image_shape)
    result = train_model(data, model, epochs=4, learning_rate=2e-3, batch_size=64, seed=0, device=device)

    assert result.device.startswith(device)
    assert [s.epoch for s in result.history] == [1, 2, 3, 4]
    assert result.history[-1].train_loss < result.history[0].train_loss
    evaluation = evaluate_probabilities(
        predict_probabilities(result.model, data.test.images), data.test.labels, data.classes
    )
    assert evaluation.accuracy > 0.85
    assert sum(map(sum, evaluation.confusion)) == len(data.test)
