"""The report's pictures, drawn with matplotlib and returned as PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on a server; set before pyplot is imported

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 110
CHALLENGER_COLOR = "#1f6feb"
PRODUCTION_COLOR = "#8c959f"


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def training_curves(history: dict[str, list[float]]) -> bytes:
    """Loss and accuracy per epoch, train and validation."""
    figure, (loss, accuracy) = plt.subplots(1, 2, figsize=(9, 3.2))
    epochs = range(1, len(history["train_loss"]) + 1)
    for axis, metric, title in ((loss, "loss", "Loss"), (accuracy, "accuracy", "Accuracy")):
        axis.plot(epochs, history[f"train_{metric}"], marker="o", markersize=3, label="train", color=CHALLENGER_COLOR)
        axis.plot(epochs, history[f"val_{metric}"], marker="o", markersize=3, label="validation", color="#d1242f")
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend()
    return _png(figure)


def confusion_matrices(matrices: Sequence[tuple[str, list[list[int]]]], classes: Sequence[str]) -> bytes:
    """One heat map per (title, matrix), side by side, counts written in the cells."""
    figure, axes = plt.subplots(1, len(matrices), figsize=(4.4 * len(matrices), 4.0), squeeze=False)
    for axis, (title, matrix) in zip(axes[0], matrices, strict=True):
        values = np.asarray(matrix)
        axis.imshow(values, cmap="Blues")
        axis.set_title(title)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_xticks(range(len(classes)), classes, rotation=90 if len(classes) > 12 else 0)
        axis.set_yticks(range(len(classes)), classes)
        threshold = values.max() / 2 if values.size else 0
        if len(classes) <= 20:
            for (row, column), count in np.ndenumerate(values):
                if count:
                    color = "white" if count > threshold else "black"
                    axis.text(column, row, str(count), ha="center", va="center", fontsize=7, color=color)
    figure.tight_layout()
    return _png(figure)


def misclassified_grid(images: np.ndarray, captions: Sequence[str], *, columns: int = 8) -> bytes:
    """Images (N, C, H, W) uint8 in a grid, each with its caption."""
    rows = max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.3, rows * 1.5), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= len(images):
            continue
        image = images[index]
        if image.shape[0] == 1:
            axis.imshow(image[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            axis.imshow(image.transpose(1, 2, 0), interpolation="nearest")
        axis.set_title(captions[index], fontsize=7)
    figure.tight_layout()
    return _png(figure)


def latency_bars(torch_ms: dict[int, float], onnx_ms: dict[int, float]) -> bytes:
    """Median latency per batch size, torch eager vs ONNX Runtime, one panel per batch size."""
    batches = sorted(torch_ms)
    figure, axes = plt.subplots(1, len(batches), figsize=(3.2 * len(batches), 2.6), squeeze=False)
    for axis, batch in zip(axes[0], batches, strict=True):
        values = [torch_ms[batch], onnx_ms[batch]]
        bars = axis.bar(["torch", "ONNX Runtime"], values, color=[PRODUCTION_COLOR, CHALLENGER_COLOR])
        axis.bar_label(bars, labels=[f"{v:.3f} ms" for v in values], fontsize=8)
        axis.set_title(f"batch {batch}")
        axis.set_ylabel("median ms per batch")
        axis.set_ylim(0, max(values) * 1.3)
    figure.tight_layout()
    return _png(figure)
