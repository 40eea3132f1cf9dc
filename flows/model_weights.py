"""Initial weights from a local file: fine-tuning from weights already on the server.

Nothing is downloaded. The file is a state dict saved with ``torch.save`` (or a checkpoint dict
holding one); it must fit the architecture key for key, except the classifier head when the class
count differs: those keys keep their fresh random values, and the run reports them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from flows.model_code import find_file
from flows.torchvision_models import ImageNetInput
from storage.errors import ModelError

# Where checkpoints keep the model's state dict: torchvision's references, Lightning, ours.
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model_state", "model")
SHOWN_KEYS = 4


def resolve_weights_file(path_text: str, *, roots: tuple[Path, ...]) -> Path:
    """An existing weights file: absolute, or relative to each of ``roots`` in turn.

    Raises:
        ModelError: no such file.
    """
    return find_file(path_text, roots=roots, what="weights file", advice="keep weights under ONEBOX_HOME")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a state dict file, without running any pickled code (``weights_only``).

    Raises:
        ModelError: the file is not a torch file of tensors.
    """
    try:
        loaded: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"weights file {path} is not a torch state dict: {first}") from error
    if isinstance(loaded, dict):
        for key in CHECKPOINT_KEYS:
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ModelError(
            f"weights file {path} holds no state dict (a dict of tensors, as torch.save(model.state_dict()))"
        )
    # Saved from DataParallel or DistributedDataParallel: the same keys under "module.".
    if loaded and all(key.startswith("module.") for key in loaded):
        loaded = {key.removeprefix("module."): value for key, value in loaded.items()}
    return dict(loaded)


def _listed(keys: list[str]) -> str:
    more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
    return ", ".join(keys[:SHOWN_KEYS]) + more


def load_initial_weights(model: nn.Module, path: Path, *, num_classes: int, spec: str) -> list[str]:
    """Load ``path`` into ``model``; returns the head keys left re-initialised for a new class count.

    A torchvision network takes plain torchvision keys (``conv1.weight``) or onebox's own
    (``network.conv1.weight``, from a run's logged weights).

    Raises:
        ModelError: keys missing, unexpected or of another shape, outside the classifier head.
    """
    given = read_state_dict(path)
    target = model
    if isinstance(model, ImageNetInput) and not any(key.startswith("network.") for key in given):
        target = model.network
    own = target.state_dict()
    missing = [key for key in own if key not in given]
    unexpected = [key for key in given if key not in own]
    mismatched = [key for key in own if key in given and given[key].shape != own[key].shape]
    # The classifier head: one row per class, where the file has another class count.
    head = [
        key
        for key in mismatched
        if own[key].ndim >= 1 and own[key].shape[0] == num_classes and given[key].shape[1:] == own[key].shape[1:]
    ]
    problems = []
    if missing:
        problems.append(f"missing {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected {_listed(unexpected)}")
    wrong = [f"{key} {tuple(given[key].shape)} vs {tuple(own[key].shape)}" for key in mismatched if key not in head]
    if wrong:
        problems.append(f"other shape {_listed(wrong)}")
    if problems:
        raise ModelError(f"weights file {path} does not fit {spec}: {'; '.join(problems)}")
    target.load_state_dict({key: value for key, value in given.items() if key not in head}, strict=False)
    return head
