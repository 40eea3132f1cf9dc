"""The CNN onebox trains by default, sized from the dataset's image shape and class count."""

from __future__ import annotations

import torch
from torch import nn


def pooling_stages(height: int, width: int) -> int:
    """How many 2x poolings bring the smaller side down to 4-7 pixels (one for tiny images)."""
    side, stages = min(height, width), 0
    while side >= 8 or (stages == 0 and side >= 2):
        side //= 2
        stages += 1
    return stages


class ConvClassifier(nn.Module):
    """Conv blocks (conv-BN-ReLU, conv-BN-ReLU, 2x pool), then a small dense head emitting logits."""

    def __init__(self, *, channels: int, height: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.input_shape = (channels, height, width)
        self.num_classes = num_classes
        stages = pooling_stages(height, width)
        blocks: list[nn.Module] = []
        in_channels, out_channels = channels, 32
        for _ in range(stages):
            blocks += [
                nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
                nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            in_channels, out_channels = out_channels, min(out_channels * 2, 256)
        self.features = nn.Sequential(*blocks)
        flat = in_channels * (height >> stages) * (width >> stages)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(flat, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(0.25),
            nn.Linear(128, num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.features(images))
        return logits


def build(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """The built-in model as a factory of the model-code contract (it has no hyperparameters)."""
    channels, height, width = input_shape
    return ConvClassifier(channels=channels, height=height, width=width, num_classes=num_classes)
