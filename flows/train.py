"""Train: fit a model on the training split through a DataLoader, watching the validation split each epoch.

The loop owns what every model needs: batches streamed from disk with the run's augmentations,
mixed precision and pinned memory on CUDA, a checkpoint each epoch (``flows/checkpoints.py``),
resuming from one, and early stopping on validation loss. The model it trains is the caller's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from flows.checkpoints import Checkpoint, CheckpointStore
from flows.data import SplitImages, build_augmentation, default_workers, training_loader
from flows.prepare import PreparedData, Split, evaluation_batch_size
from storage.errors import ParameterError
from storage.images import normalize


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float


@dataclass
class TrainingResult:
    """The trained model holds the best epoch's weights (lowest validation loss), not the last's."""

    model: nn.Module
    device: str
    history: list[EpochStats] = field(default_factory=list)
    seconds: float = 0.0
    best_epoch: int = 0
    stopped_epoch: int = 0  # the last epoch trained: below `epochs` when early stopping ended the run
    resumed_after: int = 0  # epochs a checkpoint already held when this process continued the run
    train_images_per_second: float = 0.0


def resolve_device(requested: str) -> torch.device:
    """'auto' picks CUDA when torch sees a GPU; asking for 'cuda' without one is an error.

    Raises:
        ParameterError: CUDA was asked for but is not available, or the name is unknown.
    """
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ParameterError(
            "device 'cuda' was asked for, but torch sees no CUDA GPU on this machine; "
            "use --device auto (CUDA when present) or --device cpu"
        )
    if requested not in {"cpu", "cuda"}:
        raise ParameterError(f"device {requested!r} is unknown; use auto, cpu or cuda")
    return torch.device(requested)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bfloat16 on GPUs that have it, float16 (with gradient scaling) on older ones; None on CPU (full precision)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@torch.no_grad()
def _measure(model: nn.Module, split: Split, device: torch.device, batch_size: int) -> tuple[float, float]:
    model.eval()
    dtype = autocast_dtype(device)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    for images, labels in split.batches(evaluation_batch_size(split.image_shape, at_least=batch_size)):
        inputs = torch.from_numpy(normalize(images)).to(device, non_blocking=True)
        targets = torch.from_numpy(labels).to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(inputs)
        loss_sum += functional.cross_entropy(logits.float(), targets, reduction="sum")
        correct += (logits.argmax(dim=1) == targets).sum()
    return loss_sum.item() / len(split), correct.item() / len(split)


def _rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "sampler": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _restore_rng(state: dict[str, Any], generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["sampler"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def train_model(
    data: PreparedData,
    model: nn.Module,
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    device: str = "auto",
    augment: Sequence[str] = ("crop",),
    patience: int = 0,
    workers: int | None = None,
    checkpoints: CheckpointStore | None = None,
    resume: Checkpoint | None = None,
    parameters: dict[str, Any] | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> TrainingResult:
    """Train ``model`` (built by flows/model_build.py) with Adam; deterministic for a seed on CPU
    (for a given ``workers``).

    Args:
        augment: names from :data:`flows.data.AUGMENTATIONS`, applied to training images only.
        patience: stop after this many epochs without a lower validation loss; 0: never stop early.
        workers: DataLoader worker processes; None: :func:`flows.data.default_workers`.
        checkpoints: where each epoch's checkpoint goes; None: no checkpoints.
        resume: a checkpoint of this run to continue from (its next epoch is the first trained).
        parameters: stored in each checkpoint, to check a resume against.
        on_epoch: called after each epoch's checkpoint is written.
    """
    target = resolve_device(device)
    cuda = target.type == "cuda"
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = model.to(target)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    dtype = autocast_dtype(target)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    result = TrainingResult(model=model, device=str(target))
    best_val_loss, best_state = math.inf, None
    if resume is not None and checkpoints is not None:
        model.load_state_dict(resume.model)
        optimizer.load_state_dict(resume.optimizer)
        if resume.scaler is not None and scaler.is_enabled():
            scaler.load_state_dict(resume.scaler)
        result.history = [EpochStats(**stats) for stats in resume.history]
        result.best_epoch, best_val_loss = resume.best_epoch, resume.best_val_loss
        best_state = checkpoints.load_best() if resume.best_epoch else None  # none when every loss was NaN
        _restore_rng(resume.rng, generator, target)
        result.resumed_after = resume.epoch
    dataset = SplitImages(data.images, data.train.indexes, build_augmentation(augment, data.dataset.image_shape))
    loader = training_loader(
        dataset,
        batch_size=batch_size,
        workers=default_workers(data.images) if workers is None else workers,
        generator=generator,
        cuda=cuda,
    )
    started = time.perf_counter()
    trained_images = 0
    for epoch in range(result.resumed_after + 1, epochs + 1):
        if patience and result.history and result.history[-1].epoch - result.best_epoch >= patience:
            break
        model.train()
        loss_sum = torch.zeros((), device=target)
        correct = torch.zeros((), device=target, dtype=torch.int64)
        for images, labels in loader:
            images = images.to(target, non_blocking=True)
            labels = labels.to(target, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(target.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                logits = model(images)
                loss = functional.cross_entropy(logits, labels)
            torch.autograd.backward(scaler.scale(loss))  # typed, unlike Tensor.backward
            scaler.step(optimizer)
            scaler.update()
            # Summed on the device: a .item() per step would wait for the GPU each time.
            loss_sum += loss.detach().float() * len(labels)
            correct += (logits.argmax(dim=1) == labels).sum()
        trained_images += len(dataset)
        val_loss, val_accuracy = _measure(model, data.validation, target, batch_size)
        stats = EpochStats(
            epoch=epoch,
            train_loss=loss_sum.item() / len(dataset),
            train_accuracy=correct.item() / len(dataset),
            val_loss=val_loss,
            val_accuracy=val_accuracy,
        )
        result.history.append(stats)
        improved = val_loss < best_val_loss
        if improved:
            best_val_loss, result.best_epoch = val_loss, epoch
            best_state = {name: value.detach().cpu().clone() for name, value in model.state_dict().items()}
        if checkpoints is not None:
            checkpoint = Checkpoint(
                epoch=epoch,
                model={name: value.detach().cpu() for name, value in model.state_dict().items()},
                optimizer=optimizer.state_dict(),
                scaler=scaler.state_dict() if scaler.is_enabled() else None,
                history=[asdict(s) for s in result.history],
                best_epoch=result.best_epoch,
                best_val_loss=best_val_loss,
                rng=_rng_state(generator, target),
                parameters=parameters or {},
            )
            checkpoints.save(checkpoint, best_model=best_state if improved else None)
        if on_epoch is not None:
            on_epoch(stats)
    result.seconds = time.perf_counter() - started
    result.train_images_per_second = trained_images / result.seconds if trained_images else 0.0
    result.stopped_epoch = result.history[-1].epoch if result.history else 0
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return result


def release_gpu_memory() -> None:
    """Hand cached CUDA memory back, so serving or the next training run can use it."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@torch.no_grad()
def predict_probabilities(model: nn.Module, images: np.ndarray, *, batch_size: int | None = None) -> np.ndarray:
    """Softmax probabilities (N, classes) for uint8 images, on the model's device.

    Args:
        batch_size: images per forward pass; None: :func:`flows.prepare.evaluation_batch_size`.
    """
    model.eval()
    device = next(model.parameters()).device
    step = batch_size or evaluation_batch_size(images.shape[1:])
    outputs = []
    for start in range(0, len(images), step):
        batch = torch.from_numpy(normalize(images[start : start + step])).to(device)
        outputs.append(functional.softmax(model(batch).float(), dim=1).cpu().numpy())
    return np.concatenate(outputs)


def predict_split(model: nn.Module, split: Split, *, batch_size: int | None = None) -> np.ndarray:
    """Probabilities (N, classes) for a split, read batch by batch (never the whole split at once).

    Args:
        batch_size: images read and predicted at a time; None: :func:`flows.prepare.evaluation_batch_size`.
    """
    step = batch_size or evaluation_batch_size(split.image_shape)
    return np.concatenate([predict_probabilities(model, images, batch_size=step) for images, _ in split.batches(step)])
