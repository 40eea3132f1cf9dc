"""Which model a run trains: onebox's CNN, a torchvision architecture by name, or the researcher's file.

The contract for a model file is small on purpose, so the code stays the researcher's::

    build(num_classes: int, input_shape: tuple[int, int, int], **hyperparameters) -> nn.Module

returning a module that emits logits for a float ``(N, C, H, W)`` batch in [0, 1]; optionally the
same file defines a pydantic ``BaseModel`` named ``Hyperparameters`` whose fields are the model's
own hyperparameters (validated before training, passed to ``build``, logged as MLflow params).

The file is read once and executed from that text, so what is logged with the run is exactly what
built the model, even when the file changes while the run trains.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from serving.checkout import SOURCE_ROOT
from storage.errors import ModelError, ParameterError

BUILTIN = "builtin"
TORCHVISION = "torchvision"
DEFAULT_FUNCTION = "build"
HYPERPARAMETERS_CLASS = "Hyperparameters"
# What the factory receives from onebox itself; every other keyword is a hyperparameter.
FACTORY_ARGUMENTS = ("num_classes", "input_shape")

Kind = Literal["builtin", "torchvision", "file"]


@dataclass(frozen=True)
class ModelCode:
    """A loaded model factory and where it came from."""

    spec: str  # as asked: "builtin", "torchvision:resnet18", "models/mynet.py:build"
    kind: Kind
    factory: Callable[..., Any]
    hyperparameters_class: type[BaseModel] | None = None
    path: Path | None = None  # the model file, resolved (kind "file")
    function: str = DEFAULT_FUNCTION
    source: str | None = None  # the file's text, exactly as executed

    @property
    def sha256(self) -> str | None:
        return hashlib.sha256(self.source.encode()).hexdigest() if self.source is not None else None


def resolve_model_file(path_text: str, *, roots: tuple[Path, ...] | None = None) -> Path:
    """An existing model file: absolute, or relative to the current folder, then to the checkout.

    The checkout comes second because the worker (host or container) runs with the checkout as
    its folder and mounts it at the same path: a file kept there is found wherever the run is.

    Raises:
        ModelError: no such file under any of those folders.
    """
    return find_file(
        path_text,
        roots=roots or (Path.cwd(), SOURCE_ROOT),
        what="model file",
        advice="keep model files in the checkout",
    )


def find_file(path_text: str, *, roots: tuple[Path, ...], what: str, advice: str) -> Path:
    """A file a researcher named: ``path_text`` itself when absolute, else the first of
    ``roots / path_text`` that exists.

    Raises:
        ModelError: none exists; the message lists where it looked, and ``advice``.
    """
    path = Path(path_text).expanduser()
    candidates = [path] if path.is_absolute() else [root / path for root in roots]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    candidates = list(dict.fromkeys(candidates))  # the current folder may be the checkout
    looked = ", ".join(str(c) for c in candidates)
    raise ModelError(f"{what} {path_text!r} not found (looked at {looked}); {advice}")


def _execute(path: Path, source: str) -> types.ModuleType:
    digest = hashlib.sha256(f"{path}\0{source}".encode()).hexdigest()[:12]
    name = f"onebox_model_code_{path.stem}_{digest}"
    if name in sys.modules:
        # The same text was run already (`onebox train` checks, then its flow builds): running it
        # again would register its torch ops or classes twice.
        return sys.modules[name]
    # A module in sys.modules of its own: pydantic and dataclasses resolve annotations through it.
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[module.__name__] = module
    try:
        exec(compile(source, str(path), "exec"), module.__dict__)
    except Exception as error:
        del sys.modules[module.__name__]
        raise ModelError(f"model file {path} could not be loaded: {one_line(error)}") from error
    return module


def load_model_file(path: Path, function: str = DEFAULT_FUNCTION, *, spec: str | None = None) -> ModelCode:
    """Execute a model file and pick its factory and its optional ``Hyperparameters`` class.

    Raises:
        ModelError: the file does not run, lacks the function, or its ``Hyperparameters`` is not a
            pydantic model.
    """
    source = path.read_text()
    module = _execute(path, source)
    factory = getattr(module, function, None)
    if not callable(factory):
        defined = sorted(name for name, value in vars(module).items() if inspect.isfunction(value))
        close = difflib.get_close_matches(function, defined, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f" (functions there: {', '.join(defined) or 'none'})"
        raise ModelError(f"model file {path} has no function {function!r}{hint}")
    hyperparameters = getattr(module, HYPERPARAMETERS_CLASS, None)
    if hyperparameters is not None and not (
        isinstance(hyperparameters, type) and issubclass(hyperparameters, BaseModel)
    ):
        raise ModelError(f"{HYPERPARAMETERS_CLASS} in {path} must be a pydantic BaseModel subclass")
    return ModelCode(
        spec=spec or f"{path}:{function}",
        kind="file",
        factory=factory,
        hyperparameters_class=hyperparameters,
        path=path,
        function=function,
        source=source,
    )


def load_model_code(spec: str) -> ModelCode:
    """The factory ``spec`` names: ``builtin``, ``torchvision:NAME`` or ``PATH.py[:FUNCTION]``.

    Raises:
        ModelError: the architecture, the file or the function does not exist.
    """
    if spec == BUILTIN:
        from flows import model

        return ModelCode(spec=spec, kind="builtin", factory=model.build)
    if spec.startswith(TORCHVISION + ":"):
        from flows import torchvision_models

        name = spec.split(":", 1)[1]
        return ModelCode(spec=spec, kind="torchvision", factory=torchvision_models.factory(name), function=name)
    path_text, colon, function = spec.rpartition(":")
    if not colon or not function.isidentifier():  # "models/mynet.py": the contract's function name
        path_text, function = spec, DEFAULT_FUNCTION
    if not path_text.endswith(".py"):
        raise ModelError(
            f"model code {spec!r} is not 'builtin', 'torchvision:NAME' or 'PATH.py:FUNCTION' "
            "(e.g. models/mynet.py:build)"
        )
    return load_model_file(resolve_model_file(path_text), function, spec=spec)


def one_line(error: BaseException, *, source: Path | None = None) -> str:
    """``Type: first line of the message``, with the line of the model file ``source`` it came from."""
    import traceback

    text = str(error).strip().splitlines()
    message = f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
    if isinstance(error, SyntaxError) and error.lineno:
        return f"{message} (line {error.lineno})"
    if source is not None:
        lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__) if frame.filename == str(source)]
        if lines:
            return f"{message} ({source.name} line {lines[-1]})"
    return message


def _condensed(error: ValidationError) -> str:
    problems = []
    for problem in error.errors():
        where = ".".join(map(str, problem["loc"])) or "hyperparameters"
        problems.append(f"{where}={problem.get('input')!r}: {problem['msg']}")
    return "; ".join(problems)


def validate_hyperparameters(code: ModelCode, values: dict[str, Any]) -> dict[str, Any]:
    """The model's hyperparameters, checked and completed with their defaults.

    With a ``Hyperparameters`` class its fields are the only names allowed; without one, the
    factory's own keyword parameters are (anything when it takes ``**kwargs``).

    Raises:
        ParameterError: an unknown name, or a value of the wrong type or out of bounds.
    """
    schema = code.hyperparameters_class
    if schema is not None:
        unknown = sorted(set(values) - set(schema.model_fields))
        if unknown:
            known = ", ".join(schema.model_fields) or "none"
            raise ParameterError(f"{code.spec} has no hyperparameter {', '.join(unknown)} (it has: {known})")
        try:
            return schema.model_validate(values).model_dump()
        except ValidationError as error:
            raise ParameterError(f"{code.spec} hyperparameters: {_condensed(error)}") from error
    signature = inspect.signature(code.factory)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return dict(values)
    accepted = [name for name in signature.parameters if name not in FACTORY_ARGUMENTS]
    unknown = sorted(set(values) - set(accepted))
    if unknown:
        raise ParameterError(
            f"{code.spec} has no hyperparameter {', '.join(unknown)} (it takes: {', '.join(accepted) or 'none'})"
        )
    return dict(values)
