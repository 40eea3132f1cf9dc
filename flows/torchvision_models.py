"""torchvision's classification architectures by name, fitted to onebox's input.

onebox feeds float images in [0, 1] with one or three channels; torchvision's networks (and any
ImageNet weights a researcher fine-tunes from) expect three channels normalised with ImageNet's
mean and standard deviation. :class:`ImageNetInput` does both inside the module, so the exported
ONNX graph carries them and serving needs nothing extra. A gray image is repeated to three
channels rather than the first convolution being replaced: pretrained first layers stay usable.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from storage.errors import ModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNetInput(nn.Module):
    """Gray to RGB and ImageNet normalisation in front of a torchvision network.

    The network is the ``network`` attribute, so its weights are ``network.*`` in this module's
    state dict and plain torchvision keys in ``network.state_dict()``.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, network: nn.Module, *, channels: int) -> None:
        super().__init__()
        self.network = network
        self.channels = channels
        # Not persistent: constants of the architecture, not weights a checkpoint should carry.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels == 1:
            images = images.repeat(1, 3, 1, 1)
        logits: torch.Tensor = self.network((images - self.mean) / self.std)
        return logits


def architectures() -> list[str]:
    """The classification architectures torchvision builds by name."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def build(name: str, num_classes: int, input_shape: tuple[int, int, int], **hyperparameters: object) -> nn.Module:
    """A randomly initialised torchvision ``name`` for ``num_classes``; hyperparameters go to its builder.

    Raises:
        ModelError: the images have neither one nor three channels.
    """
    import torchvision

    channels = input_shape[0]
    if channels not in (1, 3):
        raise ModelError(f"torchvision:{name} takes gray or RGB images; this dataset's have {channels} channels")
    # weights=None: nothing is downloaded; --init-weights loads a local file instead.
    network = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **hyperparameters)
    return ImageNetInput(network, channels=channels)


def factory(name: str) -> Callable[..., nn.Module]:
    """``build`` for one architecture, in the model-code contract's shape.

    Raises:
        ModelError: torchvision has no classification architecture of that name.
    """
    known = architectures()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known[:8])}, ..."
        raise ModelError(f"torchvision has no classification architecture {name!r}; {hint}")
    return partial(build, name)
