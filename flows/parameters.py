"""The training run's parameters, defined once.

:class:`TrainingParameters` is the single definition: the flow's signature (and so Prefect's run
form and its server-side validation), the options of ``onebox train``, the MLflow params and the
report's hyperparameter table are all generated from its fields. Adding a parameter means adding
one field here.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_args, get_origin

import annotated_types
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.fields import FieldInfo

from storage.names import name_problem

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")

Device = Literal["auto", "cpu", "cuda"]
# The augmentations a run may choose (flows/data.py says what each does).
AUGMENTATIONS = ("flip", "crop", "rotate", "color")


def augment_names(value: str) -> tuple[str, ...]:
    """``"flip, crop"`` to ``("flip", "crop")``; empty or ``"none"``: no augmentation.

    Raises:
        ValueError: a name outside ``AUGMENTATIONS`` (pydantic turns it into the field's error).
    """
    names = [name.strip().lower() for name in value.split(",") if name.strip()]
    if names == ["none"]:
        return ()
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown:
        raise ValueError(
            f"augmentation {unknown[0]!r} is unknown; choose from {', '.join(AUGMENTATIONS)} (comma-separated), or none"
        )
    return tuple(dict.fromkeys(names))  # each once, in the order given


def _canonical_augment(value: str) -> str:
    return ",".join(augment_names(value)) or "none"


def check_model_name(name: str | None) -> str | None:
    if name is not None and (problem := name_problem("model", name)):
        raise ValueError(problem)
    return name


def parse_assignment(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` from the command line: the value read as JSON when it is JSON, else as text.

    ``width=64`` gives 64, ``dropout=0.2`` 0.2, ``act=relu`` "relu", ``sizes=[1,2]`` a list.

    Raises:
        ValueError: no ``=``, or no name before it.
    """
    name, equals, value = text.partition("=")
    if not equals or not name.strip().isidentifier():
        raise ValueError(f"{text!r} is not NAME=VALUE (e.g. width=64)")
    try:
        return name.strip(), json.loads(value)
    except ValueError:
        return name.strip(), value


def _assignments_to_dict(value: object) -> object:
    # The CLI's repeated --hp NAME=VALUE arrive as a list; the run form and the API send an object.
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return dict(parse_assignment(item) for item in value)
    return value


ModelHyperparameters = Annotated[dict[str, Any], BeforeValidator(_assignments_to_dict)]


class TrainingParameters(BaseModel):
    """What a researcher chooses for one training run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: Annotated[
        str, Field(title="Dataset", description="Dataset name (see `onebox data list`).", min_length=1)
    ] = "digits"
    dataset_version: Annotated[str | None, Field(title="Dataset version", description="Empty: the newest version.")] = (
        None
    )
    model: Annotated[
        str | None,
        AfterValidator(check_model_name),
        Field(
            title="Model name",
            description="The registered model this run trains a version of; empty: the dataset's name. "
            "A new name is a new model with its own endpoint; lowercase letters, digits, '.', '_', '-'.",
        ),
    ] = None
    epochs: Annotated[int, Field(title="Epochs", description="Passes over the training split.", ge=1, le=1000)] = 15
    learning_rate: Annotated[float, Field(title="Learning rate", description="Adam step size.", gt=0, le=1)] = 1e-3
    batch_size: Annotated[int, Field(title="Batch size", description="Images per training step.", ge=1, le=4096)] = 64
    seed: Annotated[
        int, Field(title="Seed", description="Fixes the split and the initial weights.", ge=0, le=2**31 - 1)
    ] = 0
    device: Annotated[Device, Field(title="Device", description="Where to train; auto: CUDA when present.")] = "auto"
    augment: Annotated[
        str,
        AfterValidator(_canonical_augment),
        Field(
            title="Augmentations",
            description="Comma-separated, applied to training images: flip, crop (a small random shift), "
            "rotate (up to 10 degrees), color (brightness/contrast jitter); none for no augmentation.",
        ),
    ] = "crop"
    patience: Annotated[
        int,
        Field(
            title="Early-stopping patience",
            description="Stop after this many epochs without a lower validation loss; 0: never stop early.",
            ge=0,
            le=1000,
        ),
    ] = 0
    workers: Annotated[
        int | None,
        Field(
            title="Loader workers",
            description="DataLoader worker processes; empty: 0 for small datasets, else min(4, CPUs - 1).",
            ge=0,
            le=64,
        ),
    ] = None
    resume: Annotated[
        str | None,
        Field(
            title="Resume run",
            description="MLflow run id of a stopped or crashed run to continue from its last checkpoint, "
            "with the same parameters (epochs may grow).",
        ),
    ] = None
    deploy: Annotated[
        bool,
        Field(
            title="Deploy when the gate passes",
            description="Off: train only (train, evaluate, register and report; production is not touched).",
        ),
    ] = True
    min_improvement: Annotated[
        float,
        Field(
            title="Minimum improvement",
            description="Accuracy gain over production needed to promote; negative forces promotion.",
            ge=-1,
            le=1,
        ),
    ] = 0.0

    model_code: Annotated[
        str,
        Field(
            title="Model code",
            description=(
                "builtin (onebox's CNN), torchvision:NAME (e.g. torchvision:resnet18) or PATH.py:FUNCTION, "
                "a model file in the checkout."
            ),
            min_length=1,
        ),
    ] = "builtin"
    model_hyperparameters: Annotated[
        ModelHyperparameters,
        Field(
            title="Model hyperparameters",
            description=(
                "The model's own values by name, e.g. {\"width\": 64}; a model file's Hyperparameters checks them."
            ),
        ),
    ] = {}
    init_weights: Annotated[
        str | None,
        Field(
            title="Initial weights",
            description="A state dict file under ONEBOX_HOME to fine-tune from (nothing is downloaded); empty: random.",
        ),
    ] = None

    # The dataset is tracked as the version the run resolved (dataset_name, dataset_version), not
    # as asked: "newest" means something else tomorrow.
    # The model's name is not a hyperparameter either: the registry records it.
    DATASET_FIELDS: ClassVar[tuple[str, ...]] = ("dataset", "dataset_version", "model")
    # How the run was started, not what it trained with: a resumed run keeps its logged params.
    RUN_FIELDS: ClassVar[tuple[str, ...]] = ("resume",)

    @classmethod
    def hyperparameter_names(cls) -> tuple[str, ...]:
        """The fields logged as MLflow params under their own names and shown in the report."""
        return tuple(name for name in cls.model_fields if name not in (*cls.DATASET_FIELDS, *cls.RUN_FIELDS))

    @property
    def model_name(self) -> str:
        """The registered model this run trains: ``model``, or the dataset's name."""
        return self.model or self.dataset

    def hyperparameters(self) -> dict[str, Any]:
        """This run's values of :meth:`hyperparameter_names`, for MLflow."""
        return {name: getattr(self, name) for name in self.hyperparameter_names()}


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def bounds(field: FieldInfo) -> str:
    """The field's limits in words: "1 to 1000", "above 0, at most 1", "auto, cpu or cuda"."""
    if get_origin(field.annotation) is Literal:
        *first, last = map(str, get_args(field.annotation))
        return f"{', '.join(first)} or {last}" if first else last
    low: tuple[object, bool] | None = None  # (limit, inclusive)
    high: tuple[object, bool] | None = None
    for limit in field.metadata:
        if isinstance(limit, annotated_types.Ge):
            low = (limit.ge, True)
        elif isinstance(limit, annotated_types.Gt):
            low = (limit.gt, False)
        elif isinstance(limit, annotated_types.Le):
            high = (limit.le, True)
        elif isinstance(limit, annotated_types.Lt):
            high = (limit.lt, False)
    if low and high and low[1] and high[1]:
        return f"{_number(low[0])} to {_number(high[0])}"
    words = []
    if low:
        words.append(f"{'at least' if low[1] else 'above'} {_number(low[0])}")
    if high:
        words.append(f"{'at most' if high[1] else 'below'} {_number(high[0])}")
    return ", ".join(words)


def describe(field: FieldInfo) -> str:
    """The field's description with its limits, as the run form and ``--help`` show it."""
    limits = bounds(field)
    description = field.description or ""
    return f"{description.rstrip('.')} ({limits})." if limits else description


def annotated(field: FieldInfo, *extras: object, annotation: Any = None) -> Any:
    """``Annotated[type, *limits, Field(title, description), *extras]``: the field as a parameter.

    The default stays out of the ``Field`` (pydantic refuses one inside ``Annotated``); it is the
    parameter's default instead. ``annotation`` replaces the field's type (the model still
    validates the value).
    """
    label = Field(title=field.title, description=describe(field))
    return Annotated[(annotation or field.annotation, *field.metadata, label, *extras)]


def flat_parameters(
    model: type[M],
    *,
    extras: Callable[[str, FieldInfo], tuple[object, ...]] = lambda name, field: (),
    types: Mapping[str, tuple[Any, Any]] | None = None,
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Give ``function(parameters: model, **own)`` a flat keyword signature: one parameter per field.

    Prefect builds a flow's run form and validation from its signature, typer a command's
    options; both then see every field under its own name, with its type, limits, title and
    description (``{"epochs": 2}`` starts a run), while the function receives one validated
    ``model``. The function's own keyword parameters follow the fields unchanged.

    Args:
        extras: more ``Annotated`` metadata per field (a typer ``Option``, say).
        types: a parameter ``(type, default)`` per field name, in place of the field's (the CLI
            takes the model's hyperparameters as repeated ``NAME=VALUE`` strings, the form as one
            object); the model must accept that type too.
    """
    types = types or {}

    def decorate(function: Callable[..., R]) -> Callable[..., R]:
        wrapped = inspect.signature(function, eval_str=True)
        # The function's own parameters come after the fields, so keyword-only like them.
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in list(wrapped.parameters.values())[1:]]
        clash = {p.name for p in own} & set(model.model_fields)
        if clash:
            raise TypeError(f"{function.__name__} has parameters named like {model.__name__}'s fields: {clash}")
        fields = [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=types[name][1] if name in types else field.default,
                annotation=annotated(field, *extras(name, field), annotation=types[name][0] if name in types else None),
            )
            for name, field in model.model_fields.items()
        ]

        @functools.wraps(function)
        def flat(**values: Any) -> R:
            rest = {parameter.name: values.pop(parameter.name) for parameter in own if parameter.name in values}
            return function(model(**values), **rest)

        signature = inspect.Signature([*fields, *own], return_annotation=wrapped.return_annotation)
        flat.__signature__ = signature  # type: ignore[attr-defined]
        flat.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
        flat.__annotations__["return"] = wrapped.return_annotation
        del flat.__wrapped__  # the flat signature is the interface
        return flat

    return decorate
