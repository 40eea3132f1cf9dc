"""An example model file for onebox: `onebox train --model-code models/tinynet.py:build --hp width=16`.

The contract: `build(num_classes, input_shape, **hyperparameters) -> nn.Module`, a module that
emits logits for a float (N, C, H, W) batch in [0, 1]; `Hyperparameters` (optional) lists the
model's own hyperparameters with their types, defaults, bounds and descriptions.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from torch import nn


class Hyperparameters(BaseModel):
    width: int = Field(16, ge=4, le=256, description="Channels of the first convolution.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout before the classifier.")


def build(num_classes: int, input_shape: tuple[int, int, int], width: int = 16, dropout: float = 0.1) -> nn.Module:
    channels, _, _ = input_shape
    return nn.Sequential(
        nn.Conv2d(channels, width, kernel_size=3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, kernel_size=3, padding=1, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),  # any image size
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(2 * width, num_classes),
    )
