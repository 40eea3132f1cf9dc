"""The code that trained a model version, logged with its run, and the model rebuilt from it.

Each run logs under ``model_code/``: the model file exactly as executed (for a model file),
``build.json`` (what to call with which arguments) and ``state_dict.pt`` (the trained weights),
plus tags naming the code, its SHA-256 and, when the file is in a git checkout, its commit.
:func:`rebuild_from_run` turns those back into the trained torch module.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flows.model_build import BuiltModel
from flows.model_code import ModelCode, load_model_code, load_model_file, validate_hyperparameters
from storage.errors import ModelError
from storage.settings import Settings

CODE_ARTIFACTS = "model_code"
BUILD_FILE = "build.json"
WEIGHTS_FILE = "state_dict.pt"
HYPERPARAMETER_PREFIX = "hp."  # each model hyperparameter's MLflow param: hp.width


def _git(folder: Path, *args: str) -> str:
    command = ["git", "-C", str(folder), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=5, check=True).stdout.strip()


def git_tags(path: Path) -> dict[str, str]:
    """The model file's place in its git checkout: commit, path there, and whether it differs.

    "dirty" is about this file alone: changed since the commit, or not committed at all. Empty
    when the file is not in a checkout (or git is missing, as in a slim worker image).
    """
    try:
        root = Path(_git(path.parent, "rev-parse", "--show-toplevel"))
        commit = _git(path.parent, "rev-parse", "HEAD")
        changed = _git(path.parent, "status", "--porcelain", "--", str(path))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {
        "onebox.model_code_commit": commit,
        "onebox.model_code_path": str(path.relative_to(root)) if path.is_relative_to(root) else str(path),
        "onebox.model_code_dirty": "true" if changed else "false",
    }


def params(built: BuiltModel) -> dict[str, str]:
    """The model's validated hyperparameters as MLflow params: all as JSON, and one ``hp.NAME`` each."""
    values = {
        f"{HYPERPARAMETER_PREFIX}{name}": value if isinstance(value, str) else json.dumps(value, default=str)
        for name, value in built.hyperparameters.items()
    }
    return {"model_hyperparameters": json.dumps(built.hyperparameters, sort_keys=True, default=str), **values}


def tags(built: BuiltModel) -> dict[str, str]:
    code = built.code
    found = {"onebox.model_code": code.spec}
    if code.sha256 is not None and code.path is not None:
        found["onebox.model_code_sha256"] = code.sha256
        found.update(git_tags(code.path))
    if code.kind == "torchvision":
        import torchvision

        found["onebox.torchvision"] = torchvision.__version__
    if built.init_weights is not None:
        found["onebox.init_weights"] = str(built.init_weights)
        found["onebox.init_weights_sha256"] = hashlib.sha256(built.init_weights.read_bytes()).hexdigest()
        found["onebox.init_weights_reinitialised"] = ", ".join(built.reinitialised) or "none"
    return found


def log_model_code(settings: Settings, run_id: str, built: BuiltModel, trained: nn.Module) -> None:
    """Log the code, its build arguments and the trained weights under ``model_code/``, and the tags."""
    from mlflow import MlflowClient

    client = MlflowClient(settings.mlflow_tracking_uri)
    code = built.code
    build = {
        "spec": code.spec,
        "kind": code.kind,
        "function": code.function,
        "file": code.path.name if code.path is not None else None,
        "hyperparameters": built.hyperparameters,
        "num_classes": built.num_classes,
        "input_shape": list(built.input_shape),
    }
    with tempfile.TemporaryDirectory() as folder:
        staged = Path(folder) / CODE_ARTIFACTS
        staged.mkdir()
        (staged / BUILD_FILE).write_text(json.dumps(build, indent=2, default=str))
        if code.path is not None and code.source is not None:
            (staged / code.path.name).write_text(code.source)  # what ran, not what the file holds now
        torch.save(trained.to("cpu").state_dict(), staged / WEIGHTS_FILE)
        client.log_artifacts(run_id, str(staged), artifact_path=CODE_ARTIFACTS)
    for key, value in tags(built).items():
        client.set_tag(run_id, key, value)


def rebuild_from_run(settings: Settings, run_id: str) -> nn.Module:
    """The trained module of a run, rebuilt from its logged code, hyperparameters and weights.

    Raises:
        ModelError: the run has no logged model code.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(settings.mlflow_tracking_uri)
    with tempfile.TemporaryDirectory() as folder:
        try:
            local = Path(client.download_artifacts(run_id, CODE_ARTIFACTS, folder))
        except (MlflowException, OSError) as error:
            raise ModelError(f"run {run_id} logged no model code ({CODE_ARTIFACTS}/); it cannot be rebuilt") from error
        build: dict[str, Any] = json.loads((local / BUILD_FILE).read_text())
        code: ModelCode
        if build["kind"] == "file":
            code = load_model_file(local / build["file"], build["function"], spec=build["spec"])
        else:
            code = load_model_code(build["spec"])
        values = validate_hyperparameters(code, build["hyperparameters"])
        module: nn.Module = code.factory(
            num_classes=build["num_classes"], input_shape=tuple(build["input_shape"]), **values
        )
        state = torch.load(local / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    module.load_state_dict(state)
    return module.eval()
