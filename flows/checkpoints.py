"""Checkpoints: what a training run needs to continue after a crash, a kill or a stop.

Each epoch writes ``$ONEBOX_HOME/checkpoints/RUN_ID/last.pt`` (model, optimizer and gradient
scaler state, the epoch, its history, the best epoch so far, RNG states and the run's parameters)
and, when validation loss improved, ``best.pt`` (that epoch's weights). Both are written to a
temporary file and renamed, so a kill leaves the previous checkpoint whole. The folder is removed
once the run's model is logged to MLflow: a finished run needs none, and a 224x224 model's
checkpoints would otherwise pile up on the data volume.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from storage.errors import ModelError, ParameterError
from storage.settings import Settings

LAST, BEST = "last.pt", "best.pt"
# Parameters a resumed run must share with the run it continues (the checkpoint holds this model,
# trained on these batches); epochs may grow, and the rest (device, patience, workers, deploy,
# gate) only change how it goes on.
MUST_MATCH = (
    "dataset",
    "model",
    "model_code",
    "model_hyperparameters",
    "init_weights",
    "learning_rate",
    "batch_size",
    "seed",
    "augment",
)


def checkpoint_dir(settings: Settings, run_id: str) -> Path:
    return settings.home / "checkpoints" / run_id


@dataclass
class Checkpoint:
    """The state at the end of ``epoch``; ``history`` holds one dict of EpochStats fields per epoch."""

    epoch: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scaler: dict[str, Any] | None
    history: list[dict[str, Any]]
    best_epoch: int
    best_val_loss: float
    rng: dict[str, Any]
    parameters: dict[str, Any]  # the run's TrainingParameters, plus the resolved dataset_version


def _atomic_save(payload: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class CheckpointStore:
    """The checkpoint folder of one run."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def last_path(self) -> Path:
        return self.folder / LAST

    def save(self, checkpoint: Checkpoint, *, best_model: dict[str, torch.Tensor] | None) -> None:
        """Write ``last.pt`` and, when given, the new best weights (``best.pt`` first: last.pt points at it)."""
        if best_model is not None:
            _atomic_save({"epoch": checkpoint.best_epoch, "model": best_model}, self.folder / BEST)
        _atomic_save(checkpoint.__dict__, self.last_path)

    def load(self) -> Checkpoint | None:
        if not self.last_path.is_file():
            return None
        state = torch.load(self.last_path, map_location="cpu", weights_only=True)
        return Checkpoint(**state)

    def load_best(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = torch.load(self.folder / BEST, map_location="cpu", weights_only=True)["model"]
        return state

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def check_resumable(checkpoint: Checkpoint | None, *, run_id: str, parameters: dict[str, Any]) -> Checkpoint:
    """The checkpoint, if ``parameters`` may continue it.

    Raises:
        ModelError: the run has no checkpoint.
        ParameterError: a parameter in ``MUST_MATCH`` or the dataset version differs, or fewer
            epochs are asked for than the run already trained.
    """
    if checkpoint is None:
        raise ModelError(
            f"run {run_id} has no checkpoint to resume from (it stopped before its first epoch "
            "ended, or it finished); start a new run instead"
        )
    saved = checkpoint.parameters
    for name in (*MUST_MATCH, "dataset_version"):
        if parameters.get(name) is not None and parameters.get(name) != saved.get(name):
            raise ParameterError(
                f"{name} {parameters[name]!r} differs from {saved.get(name)!r}, which run {run_id} trained "
                f"with; resume with {name} {saved.get(name)!r} or start a new run"
            )
    if parameters["epochs"] < checkpoint.epoch:
        raise ParameterError(
            f"epochs {parameters['epochs']} is fewer than the {checkpoint.epoch} run {run_id} already "
            f"trained; resume with epochs {checkpoint.epoch} or more"
        )
    return checkpoint
