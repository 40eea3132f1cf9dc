"""Build the run's model and prove it fits the data before anything is stored.

The pipeline calls :func:`build_model` before its MLflow run starts: a factory that does not
exist, raises, emits the wrong shape, takes hyperparameters out of bounds or gets weights that do
not fit fails here with one line, and nothing is tracked or registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flows.model_code import ModelCode, load_model_code, one_line, validate_hyperparameters
from flows.model_weights import load_initial_weights, resolve_weights_file
from flows.parameters import TrainingParameters
from serving.checkout import SOURCE_ROOT
from storage.errors import ModelError
from storage.settings import Settings

PROBE_BATCH = 2  # BatchNorm in training mode needs more than one value per channel
# Sides tried when the dataset's images are too small for an architecture, to name its minimum.
PROBE_SIDES = (16, 32, 48, 64, 96, 128, 224, 299)


@dataclass(frozen=True)
class BuiltModel:
    """The model to train, and what it was built from: the run logs all of it."""

    module: nn.Module
    code: ModelCode
    hyperparameters: dict[str, Any]  # validated, defaults filled in
    num_classes: int
    input_shape: tuple[int, int, int]
    init_weights: Path | None = None
    reinitialised: tuple[str, ...] = ()  # head keys not taken from init_weights


def _forward(module: nn.Module, shape: tuple[int, ...], *, training: bool) -> object:
    batch = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    module.train(training)
    with torch.no_grad():
        return module(batch)


def _failing_layer(module: nn.Module, shape: tuple[int, ...], *, training: bool) -> str:
    """The innermost submodule running when the forward pass failed, as ``name (Type)``."""
    running: list[str] = []
    handles = []
    for name, layer in module.named_modules():
        if not name:
            continue
        handles.append(layer.register_forward_pre_hook(lambda _m, _a, name=name: running.append(name)))
        handles.append(layer.register_forward_hook(lambda _m, _a, _o: running.pop()))
    try:
        _forward(module, shape, training=training)
    except Exception:
        return f" in layer {running[-1]!r} ({type(module.get_submodule(running[-1])).__name__})" if running else ""
    finally:
        for handle in handles:
            handle.remove()
    return ""


def _minimum_side(module: nn.Module, input_shape: tuple[int, int, int]) -> int | None:
    """The smallest of PROBE_SIDES (a square image) at which the forward pass works, if any."""
    channels, height, width = input_shape
    for side in PROBE_SIDES:
        if side <= min(height, width):
            continue
        try:
            _forward(module, (PROBE_BATCH, channels, side, side), training=False)
        except Exception:
            continue
        return side
    return None


def check_forward(
    module: nn.Module, *, spec: str, num_classes: int, input_shape: tuple[int, int, int], source: Path | None = None
) -> None:
    """One forward pass in training and in evaluation mode on a batch of the dataset's shape.

    Training mode runs too because some networks (Inception's auxiliary head) answer differently
    there; the BatchNorm statistics it moves are put back, so the model trains from its fresh state.

    Raises:
        ModelError: the pass fails, or does not return (batch, num_classes) float logits.
    """
    shape = (PROBE_BATCH, *input_shape)
    buffers = {name: buffer.clone() for name, buffer in module.named_buffers()}
    shown = "x".join(map(str, input_shape))
    for training in (True, False):
        mode = "training" if training else "evaluation"
        try:
            output = _forward(module, shape, training=training)
        except Exception as error:
            layer = _failing_layer(module, shape, training=training)
            side = _minimum_side(module, input_shape)
            hint = f"; it needs images of at least about {side}x{side} pixels" if side else ""
            raise ModelError(
                f"{spec} fails{layer} on a {shown} image batch ({mode} mode): {one_line(error, source=source)}{hint}"
            ) from error
        finally:
            with torch.no_grad():
                for name, buffer in module.named_buffers():
                    if name in buffers:
                        buffer.copy_(buffers[name])
        if not isinstance(output, torch.Tensor):
            raise ModelError(
                f"{spec} returns {type(output).__name__} in {mode} mode, not a logits tensor"
                + (" (torchvision: try --hp aux_logits=false)" if spec.startswith("torchvision:") else "")
            )
        expected = (PROBE_BATCH, num_classes)
        if tuple(output.shape) != expected or not output.is_floating_point():
            raise ModelError(
                f"{spec} returns {output.dtype} of shape {tuple(output.shape)} for a batch of shape {shape}; "
                f"expected float logits of shape {expected}, one per class"
            )
    module.eval()


def build_model(
    model_code: str,
    *,
    hyperparameters: dict[str, Any],
    num_classes: int,
    input_shape: tuple[int, int, int],
    seed: int,
    init_weights: Path | None = None,
) -> BuiltModel:
    """Load the factory, validate its hyperparameters, build on CPU, load weights, check one forward.

    Raises:
        ModelError: the code or weights are unusable (one line naming what and where).
        ParameterError: a hyperparameter is unknown or out of bounds.
    """
    code = load_model_code(model_code)
    values = validate_hyperparameters(code, hyperparameters)
    torch.manual_seed(seed)  # the initial weights depend on the run's seed alone
    try:
        module = code.factory(num_classes=num_classes, input_shape=input_shape, **values)
    except ModelError:
        raise
    except Exception as error:
        raise ModelError(
            f"{model_code} raised while building the model: {one_line(error, source=code.path)}"
        ) from error
    if not isinstance(module, nn.Module):
        raise ModelError(f"{model_code} returned {type(module).__name__}, not a torch nn.Module")
    module = module.to("cpu")
    reinitialised: list[str] = []
    if init_weights is not None:
        reinitialised = load_initial_weights(module, init_weights, num_classes=num_classes, spec=model_code)
    check_forward(module, spec=model_code, num_classes=num_classes, input_shape=input_shape, source=code.path)
    return BuiltModel(
        module=module,
        code=code,
        hyperparameters=values,
        num_classes=num_classes,
        input_shape=input_shape,
        init_weights=init_weights,
        reinitialised=tuple(reinitialised),
    )


def build_run_model(
    parameters: TrainingParameters, settings: Settings, *, num_classes: int, input_shape: tuple[int, int, int]
) -> BuiltModel:
    """:func:`build_model` for a run's parameters: the flow's first step, and ``onebox train``'s check.

    A relative weights file is looked for in the current folder, then under ONEBOX_HOME (mounted
    at the same path in the worker container), then in the checkout.
    """
    weights = None
    if parameters.init_weights:
        weights = resolve_weights_file(parameters.init_weights, roots=(Path.cwd(), settings.home, SOURCE_ROOT))
    return build_model(
        parameters.model_code,
        hyperparameters=dict(parameters.model_hyperparameters),
        num_classes=num_classes,
        input_shape=input_shape,
        seed=parameters.seed,
        init_weights=weights,
    )
