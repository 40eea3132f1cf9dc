"""Train: fit the run's model on the training split, watching the validation split each epoch."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from flows.prepare import PreparedData, Split
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
    model: nn.Module
    device: str
    history: list[EpochStats] = field(default_factory=list)
    seconds: float = 0.0


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


def _to_tensors(split: Split, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.from_numpy(normalize(split.images)).to(device)
    return images, torch.from_numpy(split.labels).to(device)


def shift_randomly(images: torch.Tensor, generator: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Move each image by up to ``max_shift`` pixels (zero fill), so the model learns position-free features."""
    padded = functional.pad(images, (max_shift,) * 4)
    height, width = images.shape[-2:]
    span = 2 * max_shift + 1
    offsets = torch.randint(0, span * span, (len(images),), generator=generator).to(images.device)
    shifted = torch.empty_like(images)
    for offset in range(span * span):
        chosen = offsets == offset
        dy, dx = divmod(offset, span)
        shifted[chosen] = padded[chosen, :, dy : dy + height, dx : dx + width]
    return shifted


@torch.no_grad()
def _measure(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    model.eval()
    logits = model(images)
    loss = functional.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(dim=1) == labels).float().mean().item()
    return loss, accuracy


def train_model(
    data: PreparedData,
    model: nn.Module,
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    device: str = "auto",
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> TrainingResult:
    """Train ``model`` (built by flows/model_build.py) with Adam; deterministic for a given seed on CPU."""
    target = resolve_device(device)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = model.to(target)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    train_images, train_labels = _to_tensors(data.train, target)
    val_images, val_labels = _to_tensors(data.validation, target)
    result = TrainingResult(model=model, device=str(target))
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(train_labels), generator=generator).to(target)
        seen, loss_sum, correct = 0, 0.0, 0
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            images = shift_randomly(train_images[batch], generator)
            labels = train_labels[batch]
            optimizer.zero_grad(set_to_none=True)
            logits = model(images)
            loss = functional.cross_entropy(logits, labels)
            torch.autograd.backward(loss)  # typed, unlike Tensor.backward
            optimizer.step()
            seen += len(batch)
            loss_sum += loss.item() * len(batch)
            correct += int((logits.argmax(dim=1) == labels).sum().item())
        val_loss, val_accuracy = _measure(model, val_images, val_labels)
        stats = EpochStats(
            epoch=epoch,
            train_loss=loss_sum / seen,
            train_accuracy=correct / seen,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
        )
        result.history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    result.seconds = time.perf_counter() - started
    model.eval()
    return result


def release_gpu_memory() -> None:
    """Hand cached CUDA memory back, so serving or the next training run can use it."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@torch.no_grad()
def predict_probabilities(model: nn.Module, images: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
    """Softmax probabilities (N, classes) for uint8 images, on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(normalize(images[start : start + batch_size])).to(device)
        outputs.append(functional.softmax(model(batch), dim=1).cpu().numpy())
    return np.concatenate(outputs)
