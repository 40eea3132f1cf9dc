from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional

from flows.checkpoints import CheckpointStore
from flows.evaluate import evaluate_probabilities
from flows.model import ConvClassifier
from flows.prepare import PreparedData, Split, evaluation_batch_size, split_dataset
from flows.train import _measure, predict_split, resolve_device, train_model
from storage.datasets import BUILTIN_DATASET, open_images, resolve_dataset
from storage.errors import ParameterError
from storage.settings import Settings
from tests.flows.generated import generated_dataset

HAS_CUDA = torch.cuda.is_available()


def fresh_model(data: PreparedData, seed: int = 0) -> ConvClassifier:
    torch.manual_seed(seed)
    channels, height, width = data.dataset.image_shape
    return ConvClassifier(channels=channels, height=height, width=width, num_classes=len(data.classes))


@pytest.fixture
def squares(settings: Settings, tmp_path: Path) -> PreparedData:
    version = generated_dataset(settings, tmp_path / "squares", classes=3, per_class=12, side=12)
    return split_dataset(open_images(version), seed=0)


def test_auto_picks_cuda_when_present() -> None:
    assert resolve_device("auto").type == ("cuda" if HAS_CUDA else "cpu")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a GPU, so asking for cuda is valid")
def test_cuda_without_gpu_is_a_clear_error() -> None:
    with pytest.raises(ParameterError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_unknown_device_is_refused() -> None:
    with pytest.raises(ParameterError, match="unknown"):
        resolve_device("tpu")


@pytest.mark.parametrize("rgb", [False, True], ids=["gray", "colour"])
def test_gray_and_colour_datasets_train_through_the_loader(settings: Settings, tmp_path: Path, rgb: bool) -> None:
    version = generated_dataset(settings, tmp_path / "data", classes=4, per_class=10, side=16, rgb=rgb)
    data = split_dataset(open_images(version), seed=0)
    assert version.image_shape == ((3 if rgb else 1), 16, 16)
    augment = ("flip", "crop", "rotate", "color")
    result = train_model(
        data, fresh_model(data), epochs=2, learning_rate=3e-3, batch_size=8, seed=0, augment=augment, workers=0
    )
    assert [s.epoch for s in result.history] == [1, 2]
    assert all(0 <= s.train_accuracy <= 1 and s.val_loss > 0 for s in result.history)
    probabilities = predict_split(result.model, data.test, batch_size=3)
    assert probabilities.shape == (len(data.test), 4)


def test_the_model_returned_is_the_best_epoch_not_the_last(squares: PreparedData, tmp_path: Path) -> None:
    # A step size this large makes validation loss jump about: the best epoch is rarely the last.
    store = CheckpointStore(tmp_path / "checkpoints")
    result = train_model(
        squares, fresh_model(squares), epochs=4, learning_rate=0.5, batch_size=4, seed=1, checkpoints=store
    )
    losses = [s.val_loss for s in result.history]
    assert result.best_epoch == 1 + losses.index(min(losses))
    loss, _ = _measure(result.model, squares.validation, torch.device("cpu"), 64)
    assert loss == pytest.approx(min(losses), rel=1e-5)  # the weights evaluated are the best epoch's
    best = store.load_best()
    assert all(torch.equal(best[k], v) for k, v in result.model.state_dict().items())


def test_early_stopping_stops_after_patience_epochs_without_improvement(squares: PreparedData) -> None:
    result = train_model(squares, fresh_model(squares), epochs=8, learning_rate=0.5, batch_size=4, seed=1, patience=1)
    assert result.stopped_epoch < 8
    assert result.stopped_epoch == result.best_epoch + 1  # one epoch without improvement, then stop
    assert [s.epoch for s in result.history] == list(range(1, result.stopped_epoch + 1))
    losses = [s.val_loss for s in result.history]
    assert losses[-1] >= min(losses)


def test_without_patience_every_epoch_runs(squares: PreparedData) -> None:
    result = train_model(squares, fresh_model(squares), epochs=3, learning_rate=0.5, batch_size=4, seed=1)
    assert result.stopped_epoch == 3


def test_a_resumed_run_continues_exactly_where_it_stopped(squares: PreparedData, tmp_path: Path) -> None:
    options = {"learning_rate": 3e-3, "batch_size": 4, "seed": 2, "workers": 0}
    straight = train_model(squares, fresh_model(squares), epochs=3, **options)  # type: ignore[arg-type]

    store = CheckpointStore(tmp_path / "run")
    first = train_model(squares, fresh_model(squares), epochs=1, checkpoints=store, **options)  # type: ignore[arg-type]
    checkpoint = store.load()
    assert checkpoint is not None
    assert checkpoint.epoch == 1
    resumed = train_model(
        squares,
        fresh_model(squares, seed=99),
        epochs=3,
        checkpoints=store,
        resume=checkpoint,
        **options,  # type: ignore[arg-type]
    )
    assert first.stopped_epoch == 1
    assert resumed.resumed_after == 1
    assert [s.epoch for s in resumed.history] == [1, 2, 3]
    # Same order, same augmentations, same dropout: the continued run is the uninterrupted one.
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert a.val_loss == pytest.approx(b.val_loss, rel=1e-5)
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-5)


def test_the_same_seed_trains_the_same_model(squares: PreparedData) -> None:
    runs = [
        train_model(squares, fresh_model(squares), epochs=1, learning_rate=3e-3, batch_size=4, seed=5) for _ in range(2)
    ]
    assert runs[0].history == runs[1].history


@pytest.mark.slow  # trains for four epochs
@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no GPU"))]
)
def test_training_learns_digits(settings: Settings, device: str) -> None:
    data = split_dataset(open_images(resolve_dataset(BUILTIN_DATASET, None, settings)), seed=0)
    result = train_model(data, fresh_model(data), epochs=4, learning_rate=2e-3, batch_size=64, seed=0, device=device)

    assert result.device.startswith(device)
    assert [s.epoch for s in result.history] == [1, 2, 3, 4]
    assert result.history[-1].train_loss < result.history[0].train_loss
    evaluation = evaluate_probabilities(predict_split(result.model, data.test), data.test.labels, data.classes)
    assert evaluation.accuracy > 0.85
    assert sum(map(sum, evaluation.confusion)) == len(data.test)


class RecordedReads:
    """Images in memory that note how many each read asked for."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images
        self.reads: list[int] = []

    @property
    def image_shape(self) -> tuple[int, int, int]:
        channels, height, width = self.images.shape[1:]
        return channels, height, width

    def read_many(self, indexes: np.ndarray) -> np.ndarray:
        self.reads.append(len(indexes))
        chosen: np.ndarray = self.images[indexes]
        return chosen


def test_validation_and_predictions_of_large_images_go_in_bounded_batches() -> None:
    # At 224x224 a 256-image validation batch was a whole run's memory peak (benchmarks/training.py).
    images = np.random.default_rng(0).integers(0, 256, (60, 3, 224, 224), dtype=np.uint8)
    source = RecordedReads(images)
    split = Split(source=source, indexes=np.arange(60), labels=np.arange(60) % 2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    bound = evaluation_batch_size((3, 224, 224))
    assert bound < 60

    loss, _ = _measure(model, split, torch.device("cpu"), 4)
    assert max(source.reads) == bound
    assert sum(source.reads) == 60
    source.reads.clear()
    _measure(model, split, torch.device("cpu"), 50)  # never below the training batch
    assert source.reads == [50, 10]

    source.reads.clear()
    probabilities = predict_split(model, split)
    assert max(source.reads) == bound
    # The same probabilities as one pass over all of them.
    all_at_once = predict_split(model, split, batch_size=60)
    assert np.allclose(probabilities, all_at_once, atol=1e-6)
    expected_loss = functional.cross_entropy(torch.from_numpy(np.log(all_at_once)), torch.from_numpy(split.labels))
    assert loss == pytest.approx(float(expected_loss), rel=1e-4)
